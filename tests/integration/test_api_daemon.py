"""The gRPC API hosted on the real daemon, on the local control plane: the policy lives in
a ConfigMap; applying a policy through the API changes entitlements and fair shares and
the scheduler acts on it; two API replicas racing on one version: one wins, one ABORTED."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from kubernetes import client as k8s

from proto.fairpool.v1 import policy_pb2, policy_pb2_grpc, share_pb2, share_pb2_grpc
from scheduler.api.hosting import serve_daemon_api
from scheduler.api.server import ApiServer
from scheduler.k8s.daemon import POLICY_KEY, Daemon, PolicyConfigMap
from tests.controlplane import ControlPlane
from tests.integration.test_daemon import H100, Pool, wait_until
from tests.unit.test_api_support import TOKEN_FILE, metadata

pytestmark = pytest.mark.integration
ADMIN = metadata("admin")
CONFIG_MAP = "fairpool-policy"


@pytest.fixture
def pool(control_plane: ControlPlane, namespace: str) -> Iterator[Pool]:
    """As in test_daemon: `namespace` is requested for its clean-up."""
    result = Pool(control_plane, f"fpapi{uuid.uuid4().hex[:5]}", k8s.CoreV1Api(control_plane.admin))
    try:
        yield result
    finally:
        for daemon in result.daemons:
            with contextlib.suppress(Exception):
                daemon.stop()


class Api:
    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        self.policy = policy_pb2_grpc.PolicyServiceStub(self.channel)
        self.shares = share_pb2_grpc.ShareServiceStub(self.channel)

    def entitlements(self) -> dict[str, share_pb2.MemberShare]:
        reply = self.shares.GetEntitlements(share_pb2.GetEntitlementsRequest(), metadata=ADMIN)
        return {s.member: s for s in reply.shares if s.gpu_model == H100}

    def close(self) -> None:
        self.channel.close()
        self.server.stop(grace=0.5)


@contextlib.contextmanager
def api_on(pool: Pool, daemon: Daemon, folder: Path, count: int = 1) -> Iterator[list[Api]]:
    tokens = folder / "tokens.yaml"
    tokens.write_text(TOKEN_FILE)
    # The scheduler identity may only read ConfigMaps; the API writes the policy, so it
    # gets an identity that may update it (here the admin).
    apis = [
        Api(
            serve_daemon_api(
                daemon,
                pool.plane.admin,
                tokens=tokens,
                ledger_url=f"sqlite:///{folder / 'ledger.db'}",
                listen="127.0.0.1:0",
                max_workers=4,
            )
        )
        for _ in range(count)
    ]
    try:
        yield apis
    finally:
        for api in apis:
            api.close()


def start(pool: Pool, **sharing: object) -> Daemon:
    for m in ("a", "b", "c"):
        pool.add_member(m)
    pool.add_nodes("c", count=1, gpus=8)  # only c owns GPUs
    pool.core.create_namespaced_config_map(
        pool.ns("c"),
        {"metadata": {"name": CONFIG_MAP}, "data": {POLICY_KEY: pool.policy_text(**sharing)}},  # type: ignore[arg-type]
    )
    return pool.daemon(configmap=PolicyConfigMap(pool.ns("c"), CONFIG_MAP))


def edited(api: Api, **changes: dict[str, object]) -> tuple[str, int]:
    """The current policy with per-member changes, and its version."""
    reply = api.policy.GetPolicy(policy_pb2.GetPolicyRequest(), metadata=ADMIN)
    data = yaml.safe_load(reply.policy.yaml)
    for entry in data["spec"]["members"]:
        entry.update(changes.get(entry["name"], {}))
    if "sharing" in changes:
        data["spec"]["sharing"].update(changes["sharing"])
    return yaml.safe_dump(data), reply.policy.version


def test_applied_policy_changes_entitlements_and_the_scheduler_acts(
    pool: Pool, tmp_path: Path
) -> None:
    daemon = start(pool, borrowing=False)
    with api_on(pool, daemon, tmp_path) as (api,):
        for m in ("a", "b"):
            for i in range(2):
                pool.pod(m, f"{m}{i}", gpus=4)
        # Entitled to nothing with borrowing off, a and b can never run their pods: each
        # is explained, and none is in its member's demand (no row: nothing to show).
        wait_until(
            lambda: (
                sum(
                    "borrowing is off" in text
                    for text in daemon.last_decisions().explanations.values()
                )
                == 4
            ),
            what="the four pods explained",
        )
        assert "a" not in api.entitlements() and "b" not in api.entitlements()
        assert pool.bound("a") == {} and pool.bound("b") == {}, "no entitlement, no borrowing"

        text, version = edited(api, a={"purchased": {H100: 4}})
        reply = api.policy.ApplyPolicy(
            policy_pb2.ApplyPolicyRequest(yaml=text, expected_version=version, comment="buy 4"),
            metadata=ADMIN,
        )
        assert reply.applied.version == version + 1
        change = {c.member: c for c in reply.changes}["a"]
        assert (change.entitlement_before, change.entitlement_after) == (0, 4)
        wait_until(lambda: api.entitlements()["a"].entitlement == 4, what="entitlement 4")
        wait_until(lambda: len(pool.bound("a")) == 1, what="a's pod bound on its entitlement")
        # Its other pod can run once the first ends: it is a's demand now.
        wait_until(lambda: api.entitlements()["a"].pending == 4, what="a's other pod pending")
        assert pool.bound("b") == {}
        stored = pool.core.read_namespaced_config_map(CONFIG_MAP, pool.ns("c"))
        assert yaml.safe_load((stored.data or {})[POLICY_KEY])["metadata"]["version"] == version + 1
        wait_until(lambda: daemon.policy().version == version + 1, what="daemon reloaded")

        # Weights 3:1 and borrowing on: the surplus is split 3:1 and the idle GPUs fill up.
        text, version = edited(api, a={"weight": 3}, b={"weight": 1}, sharing={"borrowing": True})
        api.policy.ApplyPolicy(
            policy_pb2.ApplyPolicyRequest(yaml=text, expected_version=version), metadata=ADMIN
        )
        wait_until(lambda: len(pool.bound("a")) + len(pool.bound("b")) == 2, what="borrowing")
        shares = api.entitlements()
        surplus_a = shares["a"].fair_share - shares["a"].entitlement
        surplus_b = shares["b"].fair_share - shares["b"].entitlement
        assert surplus_a == pytest.approx(3 * surplus_b)
        history = api.policy.ListPolicyVersions(
            policy_pb2.ListPolicyVersionsRequest(), metadata=ADMIN
        ).versions
        assert [v.version for v in history] == [version + 1, version, version - 1]
        assert history[1].comment == "buy 4" and history[1].author == "admin-person"


def test_two_api_replicas_racing_on_one_version(pool: Pool, tmp_path: Path) -> None:
    daemon = start(pool)
    with api_on(pool, daemon, tmp_path, count=2) as apis:
        texts = []
        for weight, api in zip((2, 5), apis, strict=True):
            text, version = edited(api, a={"weight": weight})
            texts.append((api, text, version))
        assert texts[0][2] == texts[1][2]
        barrier = threading.Barrier(2)
        codes: list[grpc.StatusCode] = []

        def apply(api: Api, text: str, version: int) -> None:
            barrier.wait()
            try:
                api.policy.ApplyPolicy(
                    policy_pb2.ApplyPolicyRequest(yaml=text, expected_version=version),
                    metadata=ADMIN,
                )
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())

        threads = [threading.Thread(target=apply, args=t) for t in texts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(c.name for c in codes) == ["ABORTED", "OK"]
        stored = pool.core.read_namespaced_config_map(CONFIG_MAP, pool.ns("c"))
        document = yaml.safe_load((stored.data or {})[POLICY_KEY])
        assert document["metadata"]["version"] == texts[0][2] + 1
        # Whichever replica lost, the winner's version is recorded in the winner's name,
        # even when the loser read the ConfigMap and recorded it before the winner did.
        for api in apis:
            newest = api.policy.ListPolicyVersions(
                policy_pb2.ListPolicyVersionsRequest(page_size=1), metadata=ADMIN
            ).versions[0]
            assert (newest.version, newest.author) == (texts[0][2] + 1, "admin-person")
            assert newest.origin == policy_pb2.POLICY_ORIGIN_API


def test_a_policy_larger_than_a_config_map_holds_is_refused_naming_why(
    pool: Pool, tmp_path: Path
) -> None:
    """A valid policy of 1.4 MB (a policy may have 2 MiB) cannot be kept in a ConfigMap
    (1 MiB): the API server's refusal was answered INTERNAL."""
    daemon = start(pool)
    with api_on(pool, daemon, tmp_path) as (api,):
        current = api.policy.GetPolicy(policy_pb2.GetPolicyRequest(), metadata=ADMIN).policy
        data = yaml.safe_load(current.yaml)
        for i in range(15_000):
            namespace = f"x{i:05d}-" + "n" * 50
            data["spec"]["members"].append({"name": f"x{i:05d}", "namespaces": [namespace]})
        text = yaml.safe_dump(data)
        assert 1 << 20 < len(text) < 2 << 20
        with pytest.raises(grpc.RpcError) as refused:
            api.policy.ApplyPolicy(
                policy_pb2.ApplyPolicyRequest(yaml=text), metadata=ADMIN, timeout=300
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        details = refused.value.details() or ""
        assert "may not be more than 1048576 bytes" in details, details
        assert details.endswith("nothing was changed"), details
        after = api.policy.GetPolicy(policy_pb2.GetPolicyRequest(), metadata=ADMIN).policy
        assert after.version == current.version == daemon.policy().version


def test_a_pod_fairpool_cannot_read_is_explained_with_its_event_s_reason(
    pool: Pool, tmp_path: Path
) -> None:
    """A pod fairpool cannot hand to the engine (here its annotation is unreadable) waits
    with a FailedScheduling event saying why; `fairpool explain` gives the same reason (it
    answered NOT_FOUND, "no pending pod or gang named 'odd'")."""
    daemon = start(pool)
    pool.pod("a", "odd", annotations={"fairpool.io/checkpointable": "perhaps"})
    events = wait_until(lambda: pool.events("a", "FailedScheduling"), what="its event")
    with api_on(pool, daemon, tmp_path) as (api,):
        answer = api.shares.ExplainPending(
            share_pb2.ExplainPendingRequest(name="odd"), metadata=ADMIN
        )
    assert answer.explanation == events[0].message
    assert answer.job.pod_names == ["odd"] and answer.job.member == "a"
    assert answer.job.namespace == pool.ns("a")
