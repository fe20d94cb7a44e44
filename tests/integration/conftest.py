"""Fixtures for integration tests against real components.

Control plane (tests/controlplane):
- `control_plane` (session): a running etcd + kube-apiserver + kwok, started on first use
  only, so a run of unit tests starts nothing. It is a `tests.controlplane.ControlPlane`:
  `.server` (URL), `.kubeconfig(identity)` (path; identities "admin", "scheduler",
  "kube-scheduler", "kwok"), `.admin` and `.scheduler` (`kubernetes.client.ApiClient`;
  wrap them as `CoreV1Api(control_plane.admin)`), `.start_kube_scheduler()`.
- `namespace` (function): a fresh namespace for one test. After the test every namespace
  labelled as a test namespace is removed (pods at once; see
  tests/controlplane/namespaces.py), and so are fake nodes
  the test created with the `fairpool.io/test-node` label.
- `policy_crd` (session): the Policy CustomResourceDefinition
  (deploy/helm/fairpool/crds/policies.fairpool.io.yaml) created and Established.

Other components add their fixtures below, one section each.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.controlplane import ControlPlane, start, stop
from tests.controlplane.namespaces import remove_labelled_namespaces

TEST_NAMESPACE_LABEL = "fairpool.io/test-namespace"
TEST_NODE_LABEL = "fairpool.io/test-node"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    directory: Path = tmp_path_factory.mktemp("controlplane")
    plane = start(directory, die_with_parent=True)
    try:
        yield plane
    finally:
        stop(directory)


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    core = k8s.CoreV1Api(control_plane.admin)
    name = f"test-{uuid.uuid4().hex[:10]}"
    core.create_namespace(
        {"metadata": {"name": name, "labels": {TEST_NAMESPACE_LABEL: "true"}}}  # type: ignore[arg-type]
    )
    try:
        yield name
    finally:
        remove_labelled_namespaces(core, TEST_NAMESPACE_LABEL)
        core.delete_collection_node(label_selector=TEST_NODE_LABEL)


# --- the Policy CustomResourceDefinition -------------------------------------------------

POLICY_CRD = (
    Path(__file__).resolve().parents[2] / "deploy/helm/fairpool/crds/policies.fairpool.io.yaml"
)


@pytest.fixture(scope="session")
def policy_crd(control_plane: ControlPlane) -> str:
    """The CRD as checked in, created (or replaced) and Established; its name."""
    body = yaml.safe_load(POLICY_CRD.read_text(encoding="utf-8"))
    name: str = body["metadata"]["name"]
    extensions = k8s.ApiextensionsV1Api(control_plane.admin)
    try:
        extensions.create_custom_resource_definition(body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        current = extensions.read_custom_resource_definition(name)
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        extensions.replace_custom_resource_definition(name, body)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        crd = extensions.read_custom_resource_definition(name)
        conditions = {c.type: c.status for c in (crd.status.conditions or [])}
        if conditions.get("Established") == "True":
            return name
        time.sleep(0.2)
    raise AssertionError(f"CRD {name} not Established: {conditions}")
