"""Every RPC × every role: the status code, and that nobody sees another member's data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pandas as pd
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from policies.loader import DEFAULT_POLICY
from proto.fairpool.v1 import policy_pb2, share_pb2, usage_pb2
from scheduler.api.auth import METHOD_ROLES
from scheduler.api.usage_service import usage_rows
from scheduler.engine.mentions import plain
from tests.unit.test_api_support import (
    MEMBER_A,
    MEMBER_B,
    REPORT_MONTH,
    ROLES,
    TOKENS,
    USAGE_HOUR,
    Running,
    metadata,
    running_server,
)

OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
A, B = f"member:{MEMBER_A}", f"member:{MEMBER_B}"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with running_server(tmp_path_factory.mktemp("roles")) as running:
        yield running


def _a_pending_job_of(api: Running, member: str) -> str:
    return next(j.job_id for j in api.view.snapshot().pending if j.member == member)


def _usage_request(member: str = "") -> usage_pb2.GetUsageRequest:
    start, end = Timestamp(), Timestamp()
    start.FromSeconds(int(USAGE_HOUR.timestamp()) - 3600)
    end.FromSeconds(int(USAGE_HOUR.timestamp()) + 7200)
    return usage_pb2.GetUsageRequest(member=member, start=start, end=end)


def _watch(stub: Any, request: Any, **kwargs: Any) -> Any:
    stream = stub.WatchPolicy(request, **kwargs)
    try:
        return next(stream)
    finally:
        stream.cancel()


# (case, method, call(api) -> (callable, request), expected code per role)
Call = Callable[[Running], tuple[Callable[..., Any], Any]]
CASES: list[tuple[str, str, Call, dict[str | None, grpc.StatusCode]]] = []


def case(name: str, method: str, call: Call, **codes: grpc.StatusCode) -> None:
    expected: dict[str | None, grpc.StatusCode] = {role: OK for role in TOKENS}
    for key, code in codes.items():
        expected[{"a": A, "b": B}.get(key, key)] = code
    expected[None] = UNAUTH
    CASES.append((name, method, call, expected))


POLICY_TEXT = DEFAULT_POLICY.read_text()
case(
    "get-policy",
    "PolicyService/GetPolicy",
    lambda a: (a.policy.GetPolicy, policy_pb2.GetPolicyRequest()),
)
case(
    "validate-policy",
    "PolicyService/ValidatePolicy",
    lambda a: (a.policy.ValidatePolicy, policy_pb2.ValidatePolicyRequest(yaml=POLICY_TEXT)),
)
case(
    "apply-policy-dry-run",
    "PolicyService/ApplyPolicy",
    lambda a: (a.policy.ApplyPolicy, policy_pb2.ApplyPolicyRequest(yaml=POLICY_TEXT, dry_run=True)),
    a=DENIED,
    b=DENIED,
    viewer=DENIED,
)
case(
    "list-policy-versions",
    "PolicyService/ListPolicyVersions",
    lambda a: (a.policy.ListPolicyVersions, policy_pb2.ListPolicyVersionsRequest()),
)
case(
    "watch-policy",
    "PolicyService/WatchPolicy",
    lambda a: (lambda req, **kw: _watch(a.policy, req, **kw), policy_pb2.WatchPolicyRequest()),
)
case(
    "entitlements",
    "ShareService/GetEntitlements",
    lambda a: (a.shares.GetEntitlements, share_pb2.GetEntitlementsRequest()),
)
case(
    "entitlements-of-b",
    "ShareService/GetEntitlements",
    lambda a: (a.shares.GetEntitlements, share_pb2.GetEntitlementsRequest(member=MEMBER_B)),
    a=DENIED,
)
case(
    "list-pending",
    "ShareService/ListPending",
    lambda a: (a.shares.ListPending, share_pb2.ListPendingRequest()),
    viewer=DENIED,
)
case(
    "list-pending-of-a",
    "ShareService/ListPending",
    lambda a: (a.shares.ListPending, share_pb2.ListPendingRequest(member=MEMBER_A)),
    b=DENIED,
    viewer=DENIED,
)
case(
    "explain-job-of-a",
    "ShareService/ExplainPending",
    lambda a: (
        a.shares.ExplainPending,
        share_pb2.ExplainPendingRequest(name=_a_pending_job_of(a, MEMBER_A)),
    ),
    # Another member's job is answered like a job that does not exist.
    b=grpc.StatusCode.NOT_FOUND,
    viewer=DENIED,
)
case(
    "simulate-without-trace",
    "ShareService/Simulate",
    lambda a: (a.shares.Simulate, share_pb2.SimulateRequest(draft_policy_yaml=POLICY_TEXT)),
    admin=grpc.StatusCode.INVALID_ARGUMENT,
    viewer=grpc.StatusCode.INVALID_ARGUMENT,
    a=DENIED,
    b=DENIED,
)
case(
    "usage", "UsageService/GetUsage", lambda a: (a.usage.GetUsage, _usage_request()), viewer=DENIED
)
case(
    "usage-of-a",
    "UsageService/GetUsage",
    lambda a: (a.usage.GetUsage, _usage_request(MEMBER_A)),
    b=DENIED,
    viewer=DENIED,
)
case(
    "report",
    "UsageService/GetReport",
    lambda a: (a.usage.GetReport, usage_pb2.GetReportRequest(month=REPORT_MONTH)),
)


def _code(api: Running, call: Call, role: str | None) -> tuple[grpc.StatusCode, Any]:
    method, request = call(api)
    try:
        # A deadline for a stuck server, not a speed target: a report takes seconds on a
        # machine shared by many test workers.
        return OK, method(request, metadata=metadata(role), timeout=60)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r or "no-token")
@pytest.mark.parametrize(("name", "method", "call", "expected"), CASES, ids=[c[0] for c in CASES])
def test_status_code_per_role(
    api: Running,
    role: str | None,
    name: str,
    method: str,
    call: Call,
    expected: dict[str | None, grpc.StatusCode],
) -> None:
    code, reply = _code(api, call, role)
    assert code == expected[role], f"{name} as {role}: {code} {reply}"


def test_the_table_covers_every_rpc() -> None:
    rpcs = {
        f"/{service.full_name}/{m.name}"
        for file in (policy_pb2.DESCRIPTOR, share_pb2.DESCRIPTOR, usage_pb2.DESCRIPTOR)
        for service in file.services_by_name.values()
        for m in service.methods
    }
    assert rpcs == set(METHOD_ROLES)
    assert {f"/fairpool.v1.{c[1]}" for c in CASES} == rpcs


def test_an_unknown_token_is_unauthenticated(api: Running) -> None:
    with pytest.raises(grpc.RpcError) as info:
        api.policy.GetPolicy(
            policy_pb2.GetPolicyRequest(), metadata=(("authorization", "Bearer nope"),), timeout=5
        )
    assert info.value.code() == UNAUTH
    with pytest.raises(grpc.RpcError) as info:
        api.policy.GetPolicy(
            policy_pb2.GetPolicyRequest(), metadata=(("authorization", TOKENS["admin"]),), timeout=5
        )
    assert info.value.code() == UNAUTH, "a token without the Bearer scheme is not accepted"


def test_a_member_sees_only_its_own_rows_and_the_pool(api: Running) -> None:
    everyone = api.shares.GetEntitlements(
        share_pb2.GetEntitlementsRequest(), metadata=metadata("admin")
    )
    mine = api.shares.GetEntitlements(share_pb2.GetEntitlementsRequest(), metadata=metadata(B))
    assert {s.member for s in everyone.shares} == {MEMBER_A, MEMBER_B, "lab-bio", "ai-startup"}
    assert {s.member for s in mine.shares} == {MEMBER_B}
    assert list(mine.pool) == list(everyone.pool)
    assert MEMBER_A not in str(mine)

    pending = api.shares.ListPending(share_pb2.ListPendingRequest(), metadata=metadata(B))
    assert pending.jobs and {j.member for j in pending.jobs} == {MEMBER_B}
    assert pending.total == sum(1 for j in api.view.snapshot().pending if j.member == MEMBER_B)
    with pytest.raises(grpc.RpcError) as typo:
        api.shares.ListPending(
            share_pb2.ListPendingRequest(member="uni_north"), metadata=metadata("admin")
        )
    assert typo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "member: 'uni_north' is not a member" in (typo.value.details() or "")

    usage = api.usage.GetUsage(_usage_request(), metadata=metadata(B))
    assert {r.member for r in usage.rows} == {MEMBER_B}
    lent = {r.gpu_model: r for r in usage.rows}["NVIDIA-A100-SXM4-80GB"]
    assert (lent.gpu_hours_used, lent.gpu_hours_lent) == (0.5, 1.0)
    assert MEMBER_A not in str(usage), "who used physics's hardware stays out"
    usage_a = api.usage.GetUsage(_usage_request(), metadata=metadata(A))
    by_model = {r.gpu_model: r for r in usage_a.rows}
    assert by_model["NVIDIA-A100-SXM4-80GB"].gpu_hours_used_on_others_hardware == 1.0
    assert by_model["NVIDIA-H100-80GB-HBM3"].gpu_hours_used == 2.0
    # A misspelt member read as "no metered usage"; a member without usage is no error.
    with pytest.raises(grpc.RpcError) as typo:
        api.usage.GetUsage(_usage_request("physiks"), metadata=metadata("admin"))
    assert typo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "member: 'physiks' is not a member of the policy" in (typo.value.details() or "")
    idle = api.usage.GetUsage(_usage_request("lab-bio"), metadata=metadata("admin"))
    assert not idle.rows
    far = _usage_request()
    far.end.FromSeconds(int(datetime(9999, 12, 31, tzinfo=UTC).timestamp()))
    far.start.FromSeconds(int(datetime(9999, 12, 1, tzinfo=UTC).timestamp()))
    with pytest.raises(grpc.RpcError) as beyond:
        api.usage.GetUsage(far, metadata=metadata("admin"))
    assert beyond.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (beyond.value.details() or "").startswith("start: not in the years 1970 to 2200")
    # Each bound is named alone: a bad `end` was "start/end: ...", whichever was at fault.
    late = _usage_request()
    late.end.FromSeconds(int(datetime(2201, 1, 1, tzinfo=UTC).timestamp()))
    late.start.FromSeconds(int(datetime(2200, 12, 1, tzinfo=UTC).timestamp()))
    broken = _usage_request()
    broken.end.nanos = -1
    for request, field in ((late, "end: not in"), (broken, "end: Timestamp is not valid")):
        with pytest.raises(grpc.RpcError) as bad:
            api.usage.GetUsage(request, metadata=metadata("admin"))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (bad.value.details() or "").startswith(field), bad.value.details()


def test_report_files_are_scoped(api: Running) -> None:
    def files(role: str) -> dict[str, bytes]:
        reply = api.usage.GetReport(
            usage_pb2.GetReportRequest(month=REPORT_MONTH), metadata=metadata(role)
        )
        return {f.name: f.content for f in reply.files}

    everything = files("admin")
    assert {f"invoice-{MEMBER_A}.csv", f"invoice-{MEMBER_B}.csv", "report.html"} <= set(everything)
    mine = files(B)
    assert f"invoice-{MEMBER_B}.csv" in mine and f"report-{MEMBER_B}.html" in mine
    assert not any(MEMBER_A in name for name in mine)
    assert (
        mine != everything
        and mine[f"invoice-{MEMBER_B}.csv"] == everything[f"invoice-{MEMBER_B}.csv"]
    )
    assert set(files("viewer")) == {"summary.csv", "summary.parquet", "settlement.csv"}
    with pytest.raises(grpc.RpcError) as info:
        api.usage.GetReport(usage_pb2.GetReportRequest(month="2025-01"), metadata=metadata(A))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_explain_gives_the_engines_sentence(api: Running) -> None:
    job = _a_pending_job_of(api, MEMBER_A)
    reply = api.shares.ExplainPending(
        share_pb2.ExplainPendingRequest(name=job), metadata=metadata(A)
    )
    assert reply.job.job_id == job and reply.job.member == MEMBER_A
    assert reply.explanation == plain(api.view.last_decisions().explanations[job])
    pod = api.view.snapshot().pending[0].pods[0]
    by_pod = api.shares.ExplainPending(
        share_pb2.ExplainPendingRequest(name=pod.name, namespace=pod.namespace),
        metadata=metadata("admin"),
    )
    assert pod.name in by_pod.job.pod_names


def test_ledger_and_audit_share_the_database(api: Running) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(api.ledger_url)
    tables = set(sqlalchemy.inspect(engine).get_table_names())
    engine.dispose()
    assert {"usage", "policy_versions"} <= tables
    assert Path(api.ledger_url.removeprefix("sqlite:///")).exists()


def test_usage_rows_tell_use_of_others_hardware_and_lent_not_borrowing() -> None:
    # a runs 2 GPU-h on b's node and 1 on an unowned node (neither used on others'
    # hardware nor lent), b runs 3 GPU-h on its own node and 1 on a's.
    frame = pd.DataFrame(
        {
            "member": ["a", "a", "b", "b"],
            "owner": ["b", "unassigned", "b", "a"],
            "gpu_model": ["G"] * 4,
            "gpu_seconds": [2 * 3600.0, 3600.0, 3 * 3600.0, 3600.0],
        }
    )
    table = usage_rows(frame, ["a", "b"]).set_index("member")
    assert table.loc["a", ["used", "used_on_others_hardware", "lent"]].tolist() == [3, 2, 1]
    assert table.loc["b", ["used", "used_on_others_hardware", "lent"]].tolist() == [4, 1, 2]
    assert table["used_on_others_hardware"].sum() == table["lent"].sum()
