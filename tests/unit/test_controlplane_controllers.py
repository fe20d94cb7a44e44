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


def test_the_training_operators_certificate_passes_its_rotators_checks() -> None:
    """Its rotator keeps a pair only if the server certificate is for the in-cluster name,
    the CA for its own name, both beyond its 90-day horizon, the CA key in PKCS#1; the
    API server calls it at 127.0.0.1."""
    import datetime as dt
    import ipaddress

    from cryptography import x509

    from tests.controlplane.pki import webhook_certificate

    pem = webhook_certificate("op.ns.svc", ca_name="op-ca", validity=dt.timedelta(days=730))
    assert pem["ca.key"].startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    ca = x509.load_pem_x509_certificate(pem["ca.crt"])
    cert = x509.load_pem_x509_certificate(pem["tls.crt"])
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["op.ns.svc"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    ca_names = ca.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ca_names.get_values_for_type(x509.DNSName) == ["op-ca"]
    horizon = dt.datetime.now(dt.UTC) + dt.timedelta(days=90)
    assert cert.not_valid_after_utc > horizon and ca.not_valid_after_utc > horizon
