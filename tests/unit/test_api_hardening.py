"""The attacks from a test of `fairpool serve-api`: each now gets a clean status on a real
server on loopback (INVALID_ARGUMENT naming the field, FAILED_PRECONDITION with how to
repair, RESOURCE_EXHAUSTED for one identity's excess, INTERNAL with an incident id),
never UNKNOWN, never the server's file paths."""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from policies.loader import DEFAULT_POLICY
from proto.fairpool.v1 import policy_pb2, share_pb2, usage_pb2
from scheduler.api import policy_service
from scheduler.api.guard import CallLimits
from tests.unit.test_api_support import (
    MEMBER_A,
    MEMBER_B,
    REPORT_MONTH,
    Running,
    metadata,
    running_server,
)

ADMIN = metadata("admin")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Running]:
    with running_server(tmp_path) as running:
        yield running


def _status(call: Callable[..., Any], request: Any, role: str | None = "admin") -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = call(request, metadata=metadata(role), timeout=30)
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            list(result)
    return info.value


def _weighted(weight: object) -> str:
    data = yaml.safe_load(DEFAULT_POLICY.read_text())
    data["spec"]["members"][0]["weight"] = weight
    return yaml.safe_dump(data, sort_keys=False)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (DEFAULT_POLICY.read_text().replace("weight: 2", "weight: " + "[" * 500 + "]" * 500), ""),
        (DEFAULT_POLICY.read_text().replace("weight: 2", "weight: " + "7" * 5000), "weight"),
        (_weighted(float("inf")), "spec.members[0].weight"),
        (DEFAULT_POLICY.read_text().replace("weight: 2", "weight: 0000-01-01"), "weight"),
    ],
    ids=["deep", "long-integer", "infinite", "year-zero"],
)
def test_hostile_documents_are_invalid_argument(api: Running, text: str, field: str) -> None:
    for call, request in (
        (api.policy.ValidatePolicy, policy_pb2.ValidatePolicyRequest(yaml=text)),
        (api.policy.ApplyPolicy, policy_pb2.ApplyPolicyRequest(yaml=text, dry_run=True)),
    ):
        error = _status(call, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert field in (error.details() or "") and "line " in (error.details() or "")


@pytest.mark.parametrize(
    "month", ["0000-01", "9999-12", "1969-12", "2201-01", "٢٠٢٦-10", "2026-10\n"]
)
def test_report_months_out_of_range_are_invalid_argument(api: Running, month: str) -> None:
    error = _status(api.usage.GetReport, usage_pb2.GetReportRequest(month=month))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "month" in (error.details() or "")


def test_a_broken_stored_policy_is_a_failed_precondition_an_admin_can_repair(
    api: Running,
) -> None:
    api.policy_file.write_text(DEFAULT_POLICY.read_text().replace("weight: 2", "weight: -2"))
    before = api.policy.GetPolicy(policy_pb2.GetPolicyRequest(), metadata=ADMIN).policy.version
    good = DEFAULT_POLICY.read_text().replace("weight: 2", "weight: 3")
    error = _status(
        api.policy.ApplyPolicy,
        policy_pb2.ApplyPolicyRequest(yaml=good, expected_version=before),
    )
    details = error.details() or ""
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, details
    assert "weight" in details and "no expected version" in details
    assert str(api.folder) not in details and "policy.yaml" not in details
    reply = api.policy.ApplyPolicy(policy_pb2.ApplyPolicyRequest(yaml=good), metadata=ADMIN)
    assert reply.applied.version == before + 1
    assert "weight: 3" in api.policy_file.read_text()


def test_a_stored_policy_that_is_not_text_is_repaired_by_an_admin_apply(api: Running) -> None:
    # Bytes that are not UTF-8: the apply that repairs it used to fail with INTERNAL.
    api.policy_file.write_bytes(b"\xff\xfe not a policy")
    good = DEFAULT_POLICY.read_text().replace("weight: 2", "weight: 3")
    reply = api.policy.ApplyPolicy(policy_pb2.ApplyPolicyRequest(yaml=good), metadata=ADMIN)
    assert reply.applied.version >= 2
    assert "weight: 3" in api.policy_file.read_text()


def test_a_deleted_stored_policy_is_recreated_by_an_admin_apply(api: Running) -> None:
    api.policy_file.unlink()
    reply = api.policy.ApplyPolicy(
        policy_pb2.ApplyPolicyRequest(yaml=DEFAULT_POLICY.read_text()), metadata=ADMIN
    )
    assert reply.applied.version >= 2 and api.policy_file.exists()


def test_unexpected_exceptions_are_internal_with_an_incident_id_logged_once(
    api: Running, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise RuntimeError("the engine fell over")

    # The read path answers from what the cycle published: break that.
    monkeypatch.setattr(api.view, "published", broken)
    with caplog.at_level(logging.ERROR, logger="scheduler.api.guard"):
        error = _status(api.shares.GetEntitlements, share_pb2.GetEntitlementsRequest())
    details = error.details() or ""
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "incident" in details and "fell over" not in details
    incident = details.split("incident ")[1].split(")")[0]
    logged = [r for r in caplog.records if incident in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert api.server.guard.incidents == 1


def test_comments_are_capped_and_hidden_from_members(api: Running) -> None:
    text = DEFAULT_POLICY.read_text().replace("weight: 2", "weight: 3")
    error = _status(
        api.policy.ApplyPolicy, policy_pb2.ApplyPolicyRequest(yaml=text, comment="x" * 4097)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "comment" in (error.details() or "")
    # PostgreSQL stores no NUL: applied but never recorded, it blocked every later apply.
    error = _status(
        api.policy.ApplyPolicy, policy_pb2.ApplyPolicyRequest(yaml=text, comment="a\x00b")
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "comment: a NUL character (U+0000) at character 2" in (error.details() or "")
    note = f"{MEMBER_B} asked for this: their grant ran out"
    api.policy.ApplyPolicy(policy_pb2.ApplyPolicyRequest(yaml=text, comment=note), metadata=ADMIN)
    request = policy_pb2.ListPolicyVersionsRequest()
    admin = api.policy.ListPolicyVersions(request, metadata=ADMIN)
    assert admin.versions[0].comment == note
    for role in (f"member:{MEMBER_A}", f"member:{MEMBER_B}"):
        seen = api.policy.ListPolicyVersions(request, metadata=metadata(role))
        assert all(v.comment == "" for v in seen.versions)
        got = api.policy.GetPolicy(policy_pb2.GetPolicyRequest(), metadata=metadata(role))
        assert got.policy.comment == ""


def test_version_history_pages_stay_under_the_byte_budget(
    api: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    for weight in (3, 4, 5, 6):
        text = DEFAULT_POLICY.read_text().replace("weight: 2", f"weight: {weight}")
        api.policy.ApplyPolicy(
            policy_pb2.ApplyPolicyRequest(yaml=text, comment="c" * 4000), metadata=ADMIN
        )
    monkeypatch.setattr(policy_service, "PAGE_BYTES", 9000)
    request = policy_pb2.ListPolicyVersionsRequest(omit_yaml=True)
    seen: list[int] = []
    while True:
        page = api.policy.ListPolicyVersions(request, metadata=ADMIN).versions
        if not page:
            break
        assert len(page) <= 2
        seen += [v.version for v in page]
        request.before_version = page[-1].version
    assert seen == sorted(seen, reverse=True) and len(seen) == 5


def test_a_members_history_page_parses_a_bounded_text(
    api: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each version of a member's page is parsed to build its view, asked for its
    # document or not: 500 versions of a large policy held a worker for minutes (2,000
    # members, 21 versions: 8.9 s for a member, 0.02 s for an admin).
    for weight in (3, 4, 5, 6):
        text = DEFAULT_POLICY.read_text().replace("weight: 2", f"weight: {weight}")
        api.policy.ApplyPolicy(policy_pb2.ApplyPolicyRequest(yaml=text), metadata=ADMIN)
    length = max(len(api.server.store.audit.get(v).document) for v in range(1, 6))  # type: ignore[union-attr]
    monkeypatch.setattr(policy_service, "MEMBER_VIEW_CHARS", 2 * length)
    request = policy_pb2.ListPolicyVersionsRequest(page_size=500, omit_yaml=True)
    assert len(api.policy.ListPolicyVersions(request, metadata=ADMIN).versions) == 5
    seen: list[int] = []
    while True:
        page = api.policy.ListPolicyVersions(request, metadata=metadata(f"member:{MEMBER_A}"))
        if not page.versions:
            break
        assert 1 <= len(page.versions) <= 2
        seen += [v.version for v in page.versions]
        request.before_version = page.versions[-1].version
    assert seen == [5, 4, 3, 2, 1]


def test_applying_keeps_the_policy_file_mode(api: Running) -> None:
    os.chmod(api.policy_file, 0o644)
    text = DEFAULT_POLICY.read_text().replace("weight: 2", "weight: 3")
    api.policy.ApplyPolicy(policy_pb2.ApplyPolicyRequest(yaml=text), metadata=ADMIN)
    assert stat.S_IMODE(api.policy_file.stat().st_mode) == 0o644


def test_reports_parse_each_policy_version_once(
    api: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scheduler.api import policy_store

    parsed: list[str] = []
    original = policy_store.parse_policy

    def counting(text: str, source: str = "<policy>") -> Any:
        parsed.append(source)
        return original(text, source)

    monkeypatch.setattr(policy_store, "parse_policy", counting)
    request = usage_pb2.GetReportRequest(month=REPORT_MONTH)
    for _ in range(3):
        api.usage.GetReport(request, metadata=ADMIN, timeout=60)
    versions = [s for s in parsed if s.startswith("policy version")]
    assert len(versions) == len(set(versions)) <= 1


def _blocked_apply(api: Running, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """ApplyPolicy dry runs wait on the returned event (inside the call, holding its
    slot) until it is set."""
    release = threading.Event()
    snapshot = api.view.snapshot

    def slow() -> Any:
        release.wait(30)
        return snapshot()

    monkeypatch.setattr(api.view, "snapshot", slow)
    return release


def test_one_identity_cannot_take_every_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits = CallLimits(policy_per_identity=2, policy_total=3)
    with running_server(tmp_path, limits=limits) as api:
        release = _blocked_apply(api, monkeypatch)
        dry = policy_pb2.ApplyPolicyRequest(yaml=DEFAULT_POLICY.read_text(), dry_run=True)
        held = [api.policy.ApplyPolicy.future(dry, metadata=ADMIN, timeout=30) for _ in range(2)]
        try:
            # Wait until both calls hold their slots.
            for _ in range(200):
                if api.server.guard.slots["policy documents"].in_use == 2:
                    break
                threading.Event().wait(0.05)
            error = _status(api.policy.ValidatePolicy, policy_pb2.ValidatePolicyRequest(yaml="a"))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "at most 2" in (error.details() or "")
            # Another identity still gets a slot, and cheap calls are untouched.
            reply = api.policy.ValidatePolicy(
                policy_pb2.ValidatePolicyRequest(yaml=DEFAULT_POLICY.read_text()),
                metadata=metadata("viewer"),
                timeout=30,
            )
            assert MEMBER_A in reply.members
            api.policy.GetPolicy(policy_pb2.GetPolicyRequest(), metadata=ADMIN, timeout=30)
        finally:
            release.set()
        assert all(f.result().dry_run for f in held)
        assert api.server.guard.refused["ValidatePolicy"] == 1


def test_one_member_cannot_lock_every_watcher_out(tmp_path: Path) -> None:
    limits = CallLimits(watchers_per_identity=2, watchers_total=3)
    with running_server(tmp_path, limits=limits) as api:
        request = policy_pb2.WatchPolicyRequest()
        mine = [
            api.policy.WatchPolicy(request, metadata=metadata(f"member:{MEMBER_A}"), timeout=30)
            for _ in range(2)
        ]
        try:
            for stream in mine:
                next(stream)  # the current version: the watcher holds its slot now
            error = _status(api.policy.WatchPolicy, request, f"member:{MEMBER_A}")
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            other = api.policy.WatchPolicy(
                request, metadata=metadata(f"member:{MEMBER_B}"), timeout=30
            )
            assert next(other).version >= 1
            other.cancel()
        finally:
            for stream in mine:
                stream.cancel()


def test_one_member_cannot_build_reports_for_everyone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scheduler.api import usage_service

    limits = CallLimits(reports_per_identity=1, reports_total=2)
    release = threading.Event()
    original = usage_service.ledger_month_report

    def slow(*args: Any, **kwargs: Any) -> Any:
        release.wait(30)
        return original(*args, **kwargs)

    monkeypatch.setattr(usage_service, "ledger_month_report", slow)
    request = usage_pb2.GetReportRequest(month=REPORT_MONTH)
    member = f"member:{MEMBER_A}"
    with running_server(tmp_path, limits=limits) as api:
        held = api.usage.GetReport.future(request, metadata=metadata(member), timeout=60)
        try:
            for _ in range(200):  # until the first build holds its slot
                if api.server.guard.slots["report builds"].in_use == 1:
                    break
                threading.Event().wait(0.05)
            error = _status(api.usage.GetReport, request, member)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "report builds" in (error.details() or "")
            # Another identity still builds one.
            other = api.usage.GetReport.future(request, metadata=ADMIN, timeout=60)
        finally:
            release.set()
        assert held.result().files and other.result().files
        assert api.server.guard.refused["GetReport"] == 1
        assert api.server.guard.slots["report builds"].in_use == 0


@pytest.mark.parametrize("workers", [8, 16, 32, 64])
def test_default_limits_leave_threads_and_slots_for_others(workers: int) -> None:
    limits = CallLimits.for_workers(workers)
    for kind in ("policy documents", "simulations", "policy watchers", "report builds"):
        per_identity, total = limits.of(kind)
        assert per_identity < total or total == per_identity == 1
    held = (
        limits.policy_total
        + limits.simulations_total
        + limits.watchers_total
        + limits.reports_total
    )
    assert held <= workers * 7 // 8, "the cheap calls always keep threads"
