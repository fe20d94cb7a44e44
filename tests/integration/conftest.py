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

PostgreSQL (tests/pgtest):
- `postgres` (session): a private PostgreSQL server on loopback (`tests.pgtest.PostgresServer`),
  started on first use.
- `postgres_url` (function): a fresh, empty database on it, as a SQLAlchemy URL; dropped
  after the test.
- `ledger_url` (function): the same, under the name the unit tests' ledger fixture has
  (tests/unit/conftest.py), so a unit test module imported here runs on PostgreSQL.

Other components add their fixtures below, one section each.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.controlplane import ControlPlane, start, stop
from tests.controlplane.namespaces import remove_labelled_namespaces
from tests.pgtest import PostgresServer

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


# ---- PostgreSQL ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(name)
    try:
        yield url
    finally:
        postgres.drop_database(name)


@pytest.fixture
def ledger_url(postgres_url: str) -> str:
    return postgres_url
