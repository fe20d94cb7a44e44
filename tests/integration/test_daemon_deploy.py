"""deploy/ renders with kustomize and is accepted by a real kube-apiserver (server-side
dry run), and its RBAC is enough for the daemon and no more than a secondary scheduler
needs."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.controlplane import ControlPlane
from tests.controlplane.build import binary_path
from tests.integration.conftest import TEST_NAMESPACE_LABEL

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

# Just enough of the Prometheus Operator's CRD for the API server to accept a PodMonitor.
PODMONITOR_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "podmonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "plural": "podmonitors",
            "singular": "podmonitor",
            "kind": "PodMonitor",
            "listKind": "PodMonitorList",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def _kubectl(plane: ControlPlane, *args: str) -> str:
    command = [
        str(binary_path("kubectl", Path(plane.state.cache))),
        f"--kubeconfig={plane.kubeconfig('admin')}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _rendered(plane: ControlPlane, folder: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(_kubectl(plane, "kustomize", str(folder))) if d]


@pytest.fixture
def prepared(control_plane: ControlPlane, namespace: str) -> Iterator[ControlPlane]:
    """The namespaces the manifests go into exist (a dry run creates nothing, so objects
    in a namespace that does not exist yet would be refused) and the PodMonitor CRD is
    served. Everything is removed afterwards (test namespaces by `namespace`)."""
    core = k8s.CoreV1Api(control_plane.admin)
    for name in ("fairpool-system", "uni-north", "physics"):
        try:
            core.create_namespace(
                {"metadata": {"name": name, "labels": {TEST_NAMESPACE_LABEL: "true"}}}  # type: ignore[arg-type]
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
    extensions = k8s.ApiextensionsV1Api(control_plane.admin)
    extensions.create_custom_resource_definition(PODMONITOR_CRD)  # type: ignore[arg-type]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        crd = extensions.read_custom_resource_definition(PODMONITOR_CRD["metadata"]["name"])
        conditions = (crd.status.conditions if crd.status else None) or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            break
        time.sleep(0.2)
    try:
        yield control_plane
    finally:
        extensions.delete_custom_resource_definition(PODMONITOR_CRD["metadata"]["name"])


def test_deploy_renders_what_the_issue_asks(control_plane: ControlPlane) -> None:
    docs = _rendered(control_plane, DEPLOY)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for expected in [
        ("Namespace", "fairpool-system"),
        ("ServiceAccount", "fairpool"),
        ("ClusterRole", "fairpool-scheduler"),
        ("ClusterRoleBinding", "fairpool-scheduler"),
        ("Role", "fairpool-scheduler"),
        ("RoleBinding", "fairpool-scheduler"),
        ("Deployment", "fairpool-scheduler"),
        ("Service", "fairpool"),
        ("ConfigMap", "fairpool-policy"),
        ("PodMonitor", "fairpool-scheduler"),
    ]:
        assert expected in kinds
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--leader-elect" in args
    assert "--policy-configmap=fairpool-system/fairpool-policy" in args
    service = next(d for d in docs if d["kind"] == "Service")
    assert {p["name"] for p in service["spec"]["ports"]} == {"grpc", "metrics"}
    policy = next(d for d in docs if d["kind"] == "ConfigMap")
    from policies.loader import parse_policy

    assert parse_policy(policy["data"]["policy.yaml"]).members
    for role in (d for d in docs if d["kind"] in ("ClusterRole", "Role")):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            # Evictions go through the Eviction API; the only delete is of the bound pods
            # of a gang not bound whole (a pod cannot be unbound).
            if "delete" in rule["verbs"]:
                assert rule["resources"] == ["pods"] and rule["apiGroups"] == [""], rule
            assert "deletecollection" not in rule["verbs"], rule
    # The leader keeps the usage history in its own ConfigMap next to the Lease.
    role = next(d for d in docs if d["kind"] == "Role")
    history = [r for r in role["rules"] if "fairpool-usage-history" in r.get("resourceNames", [])]
    assert history and {"get", "update", "patch"} <= set(history[0]["verbs"])
    assert any(r["resources"] == ["configmaps"] and r["verbs"] == ["create"] for r in role["rules"])
    examples = _rendered(control_plane, DEPLOY / "examples")
    for job in (d for d in examples if d["kind"] == "Job"):
        assert job["spec"]["template"]["spec"]["schedulerName"] == "fairpool"
    gang = next(d for d in examples if d["metadata"]["name"] == "ddp-train")
    template = gang["spec"]["template"]["metadata"]
    assert template["labels"]["fairpool.io/gang"] == "ddp-train"
    assert template["annotations"]["fairpool.io/gang-size"] == str(gang["spec"]["parallelism"])


def test_deploy_is_accepted_by_the_api_server_in_a_dry_run(prepared: ControlPlane) -> None:
    # The control plane already holds the fairpool-scheduler ClusterRole(Binding) of
    # tests/controlplane/rbac.yaml under another field manager: deploy/ takes them over.
    out = _kubectl(
        prepared,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "-k",
        str(DEPLOY),
    )
    assert "deployment.apps/fairpool-scheduler serverside-applied (server dry run)" in out
    assert "podmonitor.monitoring.coreos.com/fairpool-scheduler" in out
    out = _kubectl(
        prepared, "apply", "--server-side", "--dry-run=server", "-k", str(DEPLOY / "examples")
    )
    assert "job.batch/ddp-train" in out and "job.batch/finetune" in out
