"""Fuzzing a real server on loopback with generated policies (valid and mutated), trace
CSVs and requests for every method from every role (tests/fuzzing.py): no answer is ever
UNKNOWN or INTERNAL, every INVALID_ARGUMENT names a field or a line, and the server keeps
serving. Bounded here; `python -m bench fuzz` runs the same generators for longer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import PolicyError
from policies.loader import parse_policy
from scheduler.traces.csv import read_trace
from scheduler.traces.errors import TraceError
from tests import fuzzing
from tests.examples import examples
from tests.unit.test_api_support import ROLES, Running, metadata, running_server

FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with running_server(tmp_path_factory.mktemp("fuzz")) as running:
        yield running


@settings(FUZZ, max_examples=examples(100))
@given(data=fuzzing.valid_policy_data())
def test_generated_valid_policies_are_valid(data: dict[str, object]) -> None:
    parse_policy(yaml.safe_dump(data), "generated")


@settings(FUZZ, max_examples=examples(100))
@given(text=fuzzing.mutated_policy_text())
def test_mutated_policies_are_a_policy_error_naming_the_field(text: str) -> None:
    try:
        parse_policy(text, "mutated")
    except PolicyError as exc:
        assert exc.issues and all(i.path or i.line for i in exc.issues), exc


@settings(FUZZ, max_examples=examples(100))
@given(text=fuzzing.trace_csv())
def test_generated_traces_are_read_or_refused_by_line(text: str) -> None:
    try:
        read_trace(text, members=set(fuzzing.MEMBER_NAMES))
    except TraceError as exc:
        assert exc.issues and all(i.line is not None or i.column for i in exc.issues), exc


@settings(FUZZ, max_examples=examples(300))
@given(request=fuzzing.requests(), role=st.sampled_from(ROLES))
def test_no_request_ever_gets_unknown_or_internal(
    api: Running, request: tuple[str, object], role: str | None
) -> None:
    path, message = request
    code, details = fuzzing.call(api.channel, path, message, metadata(role), timeout=3.0)  # type: ignore[arg-type]
    assert fuzzing.problem(path, code, details) is None


def test_the_server_still_serves_after_the_fuzzing(api: Running) -> None:
    health = health_pb2_grpc.HealthStub(api.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert api.server.guard.incidents == 0


def test_the_checks_would_catch_a_crash() -> None:
    import grpc

    assert fuzzing.problem("/x/Y", grpc.StatusCode.UNKNOWN, "boom")
    assert fuzzing.problem("/x/Y", grpc.StatusCode.INTERNAL, "incident 1")
    assert fuzzing.problem("/x/Y", grpc.StatusCode.INVALID_ARGUMENT, "bad")
    assert not fuzzing.problem("/x/Y", grpc.StatusCode.INVALID_ARGUMENT, "month: expected")
    assert not fuzzing.problem("/x/Y", grpc.StatusCode.NOT_FOUND, "no version 3")


def test_a_tally_counts_methods_and_statuses(tmp_path: Path) -> None:
    import grpc

    tally = fuzzing.Tally()
    tally.record("/fairpool.v1.PolicyService/GetPolicy", grpc.StatusCode.OK, "")
    tally.record("/fairpool.v1.PolicyService/GetPolicy", grpc.StatusCode.UNKNOWN, "x")
    assert tally.calls["GetPolicy"] == 2 and tally.statuses[("GetPolicy", "OK")] == 1
    assert len(tally.problems) == 1 and tally.status_names() == ["OK", "UNKNOWN"]
