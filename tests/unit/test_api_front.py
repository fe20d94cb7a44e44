"""The read front: GetEntitlements answered by a process of its own that follows every
publication; every other call forwarded to the daemon's process with the same roles,
statuses and streams; an applied policy read at once through the front."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from policies.loader import DEFAULT_POLICY
from proto.fairpool.v1 import policy_pb2, share_pb2, usage_pb2
from scheduler.engine.mentions import plain
from tests.unit.test_api_support import (
    MEMBER_A,
    MEMBER_B,
    REPORT_MONTH,
    Running,
    metadata,
    running_server,
)

ADMIN = metadata("admin")
LATER = 1_800_000_000.0


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with running_server(tmp_path_factory.mktemp("front"), read_front=True) as running:
        yield running


def entitlements(
    api: Running, role: str = "admin", member: str = ""
) -> share_pb2.GetEntitlementsResponse:
    return api.shares.GetEntitlements(  # type: ignore[no-any-return]
        share_pb2.GetEntitlementsRequest(member=member), metadata=metadata(role), timeout=10
    )


def until(check: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not seen in time"
        time.sleep(0.05)


def code_of(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.mark.parametrize("read_front", [False, True], ids=["daemon", "front"])
def test_entitlements_of_a_member_the_policy_lacks_are_invalid_argument(
    tmp_path: Path, read_front: bool
) -> None:
    # A misspelt member read as one with no entitlement, where ListPending and GetUsage
    # refuse it.
    with running_server(tmp_path, read_front=read_front) as running:
        with pytest.raises(grpc.RpcError) as info:
            entitlements(running, member=MEMBER_A + "x")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith(f"member: {MEMBER_A + 'x'!r} is not a member")
        assert {s.member for s in entitlements(running, member=MEMBER_A).shares} == {MEMBER_A}


@pytest.mark.parametrize("read_front", [False, True], ids=["daemon", "front"])
def test_a_token_of_a_member_the_policy_lacks_is_permission_denied(
    tmp_path: Path, read_front: bool
) -> None:
    # A member removed from the policy (or misspelt in the token file) asked for nothing
    # by name, yet was answered INVALID_ARGUMENT "member: 'physics' is not a member",
    # and `fairpool shares` exited 2 as for a typo of its own; GetReport said
    # PERMISSION_DENIED for the same token.
    with running_server(tmp_path, read_front=read_front) as running:
        data = yaml.safe_load(DEFAULT_POLICY.read_text())
        data["spec"]["members"] = [m for m in data["spec"]["members"] if m["name"] != MEMBER_B]
        running.policy.ApplyPolicy(
            policy_pb2.ApplyPolicyRequest(yaml=yaml.safe_dump(data, sort_keys=False)),
            metadata=ADMIN,
            timeout=30,
        )
        role = f"member:{MEMBER_B}"
        calls = {
            "GetEntitlements": lambda: entitlements(running, role),
            "GetUsage": lambda: running.usage.GetUsage(
                usage_pb2.GetUsageRequest(), metadata=metadata(role), timeout=10
            ),
            "GetReport": lambda: running.usage.GetReport(
                usage_pb2.GetReportRequest(month=REPORT_MONTH), metadata=metadata(role), timeout=30
            ),
        }
        for method, call in calls.items():
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, method
            assert info.value.details().startswith(
                f"role {role}: policy version 2 has no member {MEMBER_B!r}"
            ), (method, info.value.details())
        # Named by an admin, it is still the request's field at fault.
        assert code_of(lambda: entitlements(running, member=MEMBER_B)) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )


@pytest.mark.parametrize("read_front", [False, True], ids=["daemon", "front"])
def test_entitlements_of_a_gpu_model_nobody_has_are_invalid_argument(
    tmp_path: Path, read_front: bool
) -> None:
    # A misspelt model read as an empty table with status OK.
    with running_server(tmp_path, read_front=read_front) as running:
        models = {s.gpu_model for s in entitlements(running).shares}
        model = sorted(models)[0]
        with pytest.raises(grpc.RpcError) as info:
            running.shares.GetEntitlements(
                share_pb2.GetEntitlementsRequest(gpu_model=model + "x"),
                metadata=metadata("admin"),
                timeout=10,
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith(f"gpu_model: {model + 'x'!r} is neither")
        known = running.shares.GetEntitlements(
            share_pb2.GetEntitlementsRequest(gpu_model=model),
            metadata=metadata("admin"),
            timeout=10,
        )
        assert known.shares and {s.gpu_model for s in known.shares} == {model}


def test_the_front_is_another_process_with_the_roles_of_the_daemon(api: Running) -> None:
    front = api.server.front
    assert front is not None and front.pid not in (None, os.getpid())
    everyone = entitlements(api)
    assert {s.member for s in everyone.shares} >= {MEMBER_A, MEMBER_B}
    # The pool's GPUs reach the front too: the model's Ready GPUs.
    ready: dict[str, int] = {}
    for node in api.view.snapshot().nodes:
        if node.ready and node.gpu_model:
            ready[node.gpu_model] = ready.get(node.gpu_model, 0) + node.gpus
    assert {p.gpu_model: p.capacity for p in everyone.pool} == ready
    own = entitlements(api, f"member:{MEMBER_A}")
    assert own.shares and {s.member for s in own.shares} == {MEMBER_A}
    assert {s.member for s in entitlements(api, "viewer").shares} == {
        s.member for s in everyone.shares
    }
    assert code_of(lambda: entitlements(api, f"member:{MEMBER_A}", MEMBER_B)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert code_of(
        lambda: api.shares.GetEntitlements(share_pb2.GetEntitlementsRequest(), timeout=10)
    ) == (grpc.StatusCode.UNAUTHENTICATED)
    # Answered in the front from its copy of the queue, with the same role matrix and
    # statuses as in the daemon's process.
    assert code_of(
        lambda: api.shares.ListPending(
            share_pb2.ListPendingRequest(), metadata=metadata("viewer"), timeout=10
        )
    ) == (grpc.StatusCode.PERMISSION_DENIED)
    assert code_of(
        lambda: api.shares.ListPending(share_pb2.ListPendingRequest(limit=-1), metadata=ADMIN)
    ) == (grpc.StatusCode.INVALID_ARGUMENT)
    # Forwarded: the daemon's process decides, with its own role matrix and statuses.
    assert code_of(
        lambda: api.usage.GetUsage(usage_pb2.GetUsageRequest(), metadata=metadata("viewer"))
    ) == (grpc.StatusCode.PERMISSION_DENIED)
    health = health_pb2_grpc.HealthStub(api.channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == (
        health_pb2.HealthCheckResponse.SERVING
    )


def test_a_stream_is_forwarded_whole(api: Running) -> None:
    watch = api.policy.WatchPolicy(policy_pb2.WatchPolicyRequest(), metadata=ADMIN, timeout=1.5)
    first = next(iter(watch))
    assert first.version >= 1
    assert code_of(lambda: list(watch)) == grpc.StatusCode.DEADLINE_EXCEEDED


def test_an_applied_policy_is_read_at_once_through_the_front(api: Running) -> None:
    data = yaml.safe_load(DEFAULT_POLICY.read_text())
    for entry in data["spec"]["members"]:
        if entry["name"] == MEMBER_A:
            entry["weight"] = 7
    applied = api.policy.ApplyPolicy(
        policy_pb2.ApplyPolicyRequest(yaml=yaml.safe_dump(data, sort_keys=False)),
        metadata=ADMIN,
        timeout=30,
    ).applied.version
    assert applied >= 2
    assert entitlements(api).policy_version == applied


def test_the_front_answers_alone_from_the_latest_publication(tmp_path: Path) -> None:
    with running_server(tmp_path, read_front=True) as api:
        front = api.server.front
        assert front is not None
        before = entitlements(api)
        assert not before.HasField("snapshot_time")
        api.view.publish(replace(api.view.snapshot(), now=LATER))
        until(lambda: entitlements(api).snapshot_time.seconds == int(LATER))
        # With the daemon's own server gone, only the front can answer: GetEntitlements
        # still does, forwarded calls cannot.
        api.server._server.stop(0).wait()
        assert entitlements(api).snapshot_time.seconds == int(LATER)
        # ValidatePolicy needs nothing of the daemon's: answered in the front, with the
        # same roles and the same message naming the field.
        validated = api.policy.ValidatePolicy(
            policy_pb2.ValidatePolicyRequest(yaml=DEFAULT_POLICY.read_text()),
            metadata=ADMIN,
            timeout=10,
        )
        assert MEMBER_A in validated.members
        broken = DEFAULT_POLICY.read_text().replace("weight: ", "weight: -", 1)
        with pytest.raises(grpc.RpcError) as refused:
            api.policy.ValidatePolicy(
                policy_pb2.ValidatePolicyRequest(yaml=broken), metadata=ADMIN, timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "weight" in (refused.value.details() or "")
        assert code_of(
            lambda: api.policy.ValidatePolicy(
                policy_pb2.ValidatePolicyRequest(yaml=DEFAULT_POLICY.read_text()), timeout=10
            )
        ) == (grpc.StatusCode.UNAUTHENTICATED)
        # The queue is the front's own copy: ListPending and ExplainPending answer, with
        # the engine's sentence of the latest cycle (they were forwarded, and waited for
        # the scheduling loop's hold on the daemon's interpreter).
        pending = api.shares.ListPending(share_pb2.ListPendingRequest(), metadata=ADMIN)
        assert pending.total == len(api.view.snapshot().pending) > 0
        assert pending.jobs[0].waiting_seconds > 0
        waiting = pending.jobs[0]
        explained = api.shares.ExplainPending(
            share_pb2.ExplainPendingRequest(name=waiting.job_id), metadata=ADMIN, timeout=10
        )
        assert explained.explanation == plain(
            api.view.last_decisions().explanations[waiting.job_id]
        )
        assert code_of(
            lambda: api.shares.ExplainPending(
                share_pb2.ExplainPendingRequest(name=waiting.job_id),
                metadata=metadata("viewer"),
                timeout=10,
            )
        ) == (grpc.StatusCode.PERMISSION_DENIED)
        # A standby works out its sentences only when asked: ExplainPending goes to the
        # daemon's process (gone here), the queue is still the front's.
        api.view._published = replace(
            api.view.published(),
            version=api.view.published().version + 1,
            sentences_on_request=True,
        )
        until(
            lambda: (
                code_of(
                    lambda: api.shares.ExplainPending(
                        share_pb2.ExplainPendingRequest(name=waiting.job_id),
                        metadata=ADMIN,
                        timeout=10,
                    )
                )
                == grpc.StatusCode.UNAVAILABLE
            )
        )
        assert api.shares.ListPending(share_pb2.ListPendingRequest(), metadata=ADMIN).total
        assert code_of(
            lambda: api.usage.GetUsage(usage_pb2.GetUsageRequest(), metadata=ADMIN, timeout=10)
        ) == (grpc.StatusCode.UNAVAILABLE)
    # Stopping the server stops its front: no process is left holding the address.
    assert front.pid is not None and not front.alive


def test_a_front_that_ends_is_started_again_on_the_same_port(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    with running_server(tmp_path, read_front=True, registry=registry) as api:
        front = api.server.front
        assert front is not None and front.pid is not None
        first_pid, port = front.pid, api.server.port
        assert entitlements(api).shares
        assert registry.get_sample_value("fairpool_api_front_restarts_total") == 0.0
        os.kill(first_pid, signal.SIGKILL)
        until(lambda: front.restarts == 1, seconds=60)
        assert front.pid not in (None, first_pid) and front.alive
        # The same address answers again, with the roles of the daemon.
        until(lambda: code_of(lambda: entitlements(api)) == grpc.StatusCode.OK, seconds=30)
        assert {s.member for s in entitlements(api, f"member:{MEMBER_A}").shares} == {MEMBER_A}
        assert api.server.port == port
        assert registry.get_sample_value("fairpool_api_front_restarts_total") == 1.0
    assert not front.alive
