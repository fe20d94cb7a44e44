"""Malformed and hostile requests never crash the server: random bytes to every method,
random field values in every request, oversized messages; health and reflection work
without a token."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import yaml
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.loader import DEFAULT_POLICY
from proto.fairpool.v1 import policy_pb2, share_pb2, usage_pb2
from tests.examples import examples
from tests.fuzzing import WATCH_SECONDS, message_strategy
from tests.unit.test_api_support import MEMBER_A, Running, metadata, running_server

METHODS: list[MethodDescriptor] = [
    m
    for file in (policy_pb2.DESCRIPTOR, share_pb2.DESCRIPTOR, usage_pb2.DESCRIPTOR)
    for service in file.services_by_name.values()
    for m in service.methods
]
# A handler that raised an unexpected exception answers UNKNOWN: that is the crash we
# look for. Everything else is a deliberate answer.
CRASH = grpc.StatusCode.UNKNOWN
CALLERS = ("admin", f"member:{MEMBER_A}")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with running_server(tmp_path_factory.mktemp("robust"), max_receive_bytes=64 * 1024) as r:
        yield r


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def _call_raw(api: Running, method: MethodDescriptor, payload: bytes, role: str) -> grpc.StatusCode:
    """The call's status; UNKNOWN (`CRASH`) also for an INTERNAL without an incident id:
    gRPC's own failure to parse the request, which our code never saw."""
    identity = {"request_serializer": None, "response_deserializer": None}
    try:
        if method.server_streaming:
            stream = api.channel.unary_stream(_path(method), **identity)
            for _ in stream(payload, metadata=metadata(role), timeout=WATCH_SECONDS):
                pass
        else:
            api.channel.unary_unary(_path(method), **identity)(
                payload, metadata=metadata(role), timeout=10
            )
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.INTERNAL and "incident" not in (exc.details() or ""):
            return CRASH
        return exc.code()
    return grpc.StatusCode.OK


def _assert_still_serving(api: Running) -> None:
    health = health_pb2_grpc.HealthStub(api.channel)
    # A deadline for a stuck server: a report still being built for an earlier call
    # (whose caller gave up) can hold the interpreter for seconds on a busy machine.
    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@settings(
    max_examples=examples(25),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(payload=st.binary(max_size=512), role=st.sampled_from(CALLERS))
def test_random_bytes_never_crash(
    api: Running, method: MethodDescriptor, payload: bytes, role: str
) -> None:
    code = _call_raw(api, method, payload, role)
    assert code != CRASH, f"{method.name} crashed on {payload!r}"
    _assert_still_serving(api)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), role=st.sampled_from(CALLERS))
def test_random_field_values_never_crash(
    api: Running, method: MethodDescriptor, data: st.DataObject, role: str
) -> None:
    request = data.draw(message_strategy(method.input_type))
    code = _call_raw(api, method, request.SerializeToString(), role)
    assert code != CRASH, f"{method.name} crashed on {request}"
    _assert_still_serving(api)


@pytest.mark.parametrize(
    "method",
    [m for m in METHODS if any(f.type == f.TYPE_STRING for f in m.input_type.fields)],
    ids=lambda m: m.name,
)
def test_a_string_field_that_is_not_utf8_is_invalid_argument_naming_it(
    api: Running, method: MethodDescriptor
) -> None:
    # gRPC failed to parse it before our code ran: INTERNAL "Exception deserializing
    # request!", no incident id, a traceback in the log.
    field = next(f for f in method.input_type.fields if f.type == f.TYPE_STRING)
    payload = bytes([field.number << 3 | 2, 2]) + b"\xff\xfe"
    identity = {"request_serializer": None, "response_deserializer": None}
    call = (
        api.channel.unary_stream(_path(method), **identity)
        if method.server_streaming
        else api.channel.unary_unary(_path(method), **identity)
    )
    with pytest.raises(grpc.RpcError) as info:
        answer = call(payload, metadata=metadata("admin"), timeout=10)
        if method.server_streaming:
            list(answer)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == f"{field.name}: not UTF-8 text (a string field must be)"
    _assert_still_serving(api)


def test_oversized_requests_are_refused(api: Running) -> None:
    huge = policy_pb2.ValidatePolicyRequest(yaml="# " + "x" * (128 * 1024))
    with pytest.raises(grpc.RpcError) as info:
        api.policy.ValidatePolicy(huge, metadata=metadata("admin"), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _assert_still_serving(api)


def test_health_and_reflection_need_no_token(api: Running) -> None:
    health = health_pb2_grpc.HealthStub(api.channel)
    for service in ("", "fairpool.v1.PolicyService", "fairpool.v1.ShareService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(api.channel)
    replies = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert {
        "fairpool.v1.PolicyService",
        "fairpool.v1.ShareService",
        "fairpool.v1.UsageService",
        "grpc.health.v1.Health",
    } <= names


def test_unknown_methods_are_unimplemented(api: Running) -> None:
    call = api.channel.unary_unary("/fairpool.v1.PolicyService/DropTables")
    with pytest.raises(grpc.RpcError) as info:
        call(b"", metadata=metadata("admin"), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_simulate_ledger_without_recent_usage_is_a_failed_precondition(api: Running) -> None:
    request = share_pb2.SimulateRequest(
        draft_policy_yaml=DEFAULT_POLICY.read_text(),
        source=share_pb2.SIMULATION_SOURCE_LEDGER,
        ledger_days=7,
    )
    with pytest.raises(grpc.RpcError) as info:
        api.shares.Simulate(request, metadata=metadata("admin"), timeout=5)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    request.ledger_days = 0
    with pytest.raises(grpc.RpcError) as info:
        api.shares.Simulate(request, metadata=metadata("admin"), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    weight=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 10**12),
    purchased=st.integers(-3, 10**6),
    max_gpus=st.none() | st.integers(-1, 10**6),
    lending_limit=st.none() | st.integers(-1, 10**6),
    half_life=st.none() | st.floats(allow_nan=False, allow_infinity=True),
)
def test_dry_runs_of_odd_but_parseable_policies_never_crash(
    api: Running,
    weight: float,
    purchased: int,
    max_gpus: int | None,
    lending_limit: int | None,
    half_life: float | None,
) -> None:
    data = yaml.safe_load(DEFAULT_POLICY.read_text())
    member = data["spec"]["members"][0]
    member.update(
        weight=weight,
        purchased={"NVIDIA-A100-SXM4-80GB": purchased},
        maxGpus=max_gpus,
        lendingLimit=lending_limit,
    )
    data["spec"]["sharing"]["usageHalfLifeHours"] = half_life
    request = policy_pb2.ApplyPolicyRequest(yaml=yaml.safe_dump(data), dry_run=True)
    try:
        reply = api.policy.ApplyPolicy(request, metadata=metadata("admin"), timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
        assert "spec." in exc.details()
    else:
        assert reply.dry_run and reply.changes
