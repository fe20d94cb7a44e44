"""Workload controllers' webhook configurations, rewritten to be called on loopback."""

from __future__ import annotations

import base64
from typing import Any

from tests.controlplane.controllers import JOBSET, KUEUE, local_webhooks

POD_SELECTOR = {
    "matchExpressions": [{"key": "jobset.sigs.k8s.io/jobset-name", "operator": "Exists"}]
}


def hook(name: str, group: str, resource: str, path: str) -> dict[str, Any]:
    return {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "clientConfig": {
            "service": {"name": "webhook-service", "namespace": "system", "path": path}
        },
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "rules": [
            {
                "apiGroups": [group],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": [resource],
            }
        ],
    }


def manifest(kind: str, *hooks: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": "mutating-webhook-configuration"},
        "webhooks": list(hooks),
    }


def test_webhooks_call_loopback_with_the_ca_and_keep_their_paths() -> None:
    docs = [
        manifest(
            "MutatingWebhookConfiguration",
            hook("mjobset.kb.io", "jobset.x-k8s.io", "jobsets", "/mutate-jobset"),
            hook("mpod.kb.io", "", "pods", "/mutate--v1-pod"),
        )
    ]
    (out,) = local_webhooks(docs, "jobset", JOBSET.webhook_scope, 9443, b"CA PEM")
    assert out["metadata"]["name"] == "fairpool-test-jobset-mutating"
    jobsets, pods = out["webhooks"]
    assert jobsets["clientConfig"] == {
        "url": "https://127.0.0.1:9443/mutate-jobset",
        "caBundle": base64.b64encode(b"CA PEM").decode(),
    }
    assert "objectSelector" not in jobsets
    # A pod webhook that saw every pod would block other tests' pods while it is down.
    assert pods["objectSelector"] == POD_SELECTOR
    assert pods["clientConfig"]["url"] == "https://127.0.0.1:9443/mutate--v1-pod"


def test_webhooks_outside_the_controllers_scope_are_left_out() -> None:
    docs = [
        manifest(
            "ValidatingWebhookConfiguration",
            hook("vpod.kb.io", "", "pods", "/validate--v1-pod"),
            hook("vdeployment.kb.io", "apps", "deployments", "/validate-apps-v1-deployment"),
            hook("vworkload.kb.io", "kueue.x-k8s.io", "workloads/status", "/validate-wl"),
        ),
        manifest(
            "MutatingWebhookConfiguration",
            hook("mstatefulset.kb.io", "apps", "statefulsets", "/mutate-sts"),
        ),
    ]
    (out,) = local_webhooks(docs, "kueue", KUEUE.webhook_scope, 1234, b"x")
    assert out["kind"] == "ValidatingWebhookConfiguration"
    assert out["metadata"]["name"] == "fairpool-test-kueue-validating"
    assert [h["name"] for h in out["webhooks"]] == ["vworkload.kb.io"]


def test_kueue_job_webhooks_see_only_jobs_with_a_queue_name() -> None:
    docs = [manifest("MutatingWebhookConfiguration", hook("mjob.kb.io", "batch", "jobs", "/m"))]
    (out,) = local_webhooks(docs, "kueue", KUEUE.webhook_scope, 1, b"x")
    assert out["webhooks"][0]["objectSelector"] == {
        "matchExpressions": [{"key": "kueue.x-k8s.io/queue-name", "operator": "Exists"}]
    }
