"""The policy store takes a source's text handed in by a watch (the Policy object's path):
a new version when it changed, nothing when it did not, nothing at all when it is bad."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from policies.errors import PolicyError
from policies.loader import DEFAULT_POLICY, parse_policy
from scheduler.api.policy_audit import AuditLog
from scheduler.api.policy_store import (
    CLAIM_WINDOW,
    AppliedNotRecorded,
    AuditUnavailable,
    FileSource,
    Origin,
    PolicyStore,
    VersionConflict,
    _named,
    object_document,
)
from scheduler.engine.decisions import MemberShare
from scheduler.k8s.policy_object import member_statuses
from tests.unit.failing_audit import FailingAudit


def _store(tmp_path: Path) -> PolicyStore:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(DEFAULT_POLICY.read_text())
    return PolicyStore(FileSource(policy_file), AuditLog(f"sqlite:///{tmp_path / 'ledger.db'}"))


def _with_weight(weight: int) -> str:
    data = yaml.safe_load(DEFAULT_POLICY.read_text())
    data["spec"]["members"][0]["weight"] = weight
    return yaml.safe_dump(data)


def test_take_records_a_changed_text_once_and_ignores_a_seen_revision(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.current()[0].version == 1
    assert store.take(_with_weight(3), "rev-2") is True
    entry, policy = store.current()
    assert (entry.version, entry.origin, policy.members[0].weight) == (2, Origin.EXTERNAL, 3)
    assert store.take(_with_weight(4), "rev-2") is False, "same revision: not read again"
    assert store.take(_with_weight(3), "rev-3") is False, "same policy at a new revision"
    assert [v.version for v in store.audit.list()] == [2, 1]


def test_take_of_a_bad_text_raises_and_keeps_the_version_in_force(tmp_path: Path) -> None:
    store = _store(tmp_path)
    bad = _with_weight(3).replace("NVIDIA-A100-SXM4-80GB: 4", "TPU-v9: 4")
    with pytest.raises(PolicyError, match="unknown GPU model 'TPU-v9'"):
        store.take(bad, "rev-2")
    assert store.current()[0].version == 1
    assert store.take(_with_weight(3), "rev-2") is True, "the bad revision was not remembered"


def test_a_second_store_on_the_same_audit_history_matches_the_version_recorded(
    tmp_path: Path,
) -> None:
    # Two replicas watching one Policy object: the first records the change, the second
    # finds it recorded and takes the same number instead of a second one.
    first = _store(tmp_path)
    second = PolicyStore(first.source, AuditLog(first.audit.url))
    assert first.take(_with_weight(3), "rev-2") is True
    second.take(_with_weight(3), "rev-2")
    assert second.current()[0].version == first.current()[0].version == 2
    assert [v.version for v in first.audit.list()] == [2, 1]


def test_object_document_is_the_policy_named_after_the_object() -> None:
    spec = yaml.safe_load(DEFAULT_POLICY.read_text())["spec"]
    obj = {
        "apiVersion": "fairpool.io/v1",
        "kind": "Policy",
        "metadata": {"name": "default", "resourceVersion": "42", "generation": 3},
        "spec": spec,
        "status": {"version": 7},
    }
    text, revision = object_document(obj)
    policy = parse_policy(text)
    assert revision == "42"
    assert policy.metadata.name == "default" and policy.version == 0
    assert policy.spec == parse_policy(DEFAULT_POLICY.read_text()).spec


def test_named_gives_the_object_name_to_a_document_named_otherwise() -> None:
    policy = parse_policy(DEFAULT_POLICY.read_text())
    assert _named(policy, None) is policy
    renamed = _named(policy, "default")
    assert renamed.metadata.name == "default" and renamed.spec == policy.spec
    assert _named(renamed, "default") is renamed


def test_member_statuses_follow_policy_order_with_shares_per_model() -> None:
    policy = parse_policy(DEFAULT_POLICY.read_text())
    share = MemberShare(
        member="lab-bio",
        gpu_model="NVIDIA-A100-SXM4-80GB",
        contribution=8,
        entitlement=12,
        fair_share=13.33333,
        allocated=5,
        borrowed=0,
        reclaimable=0,
        lent=0,
        pending=0,
        demand=5,
    )
    stranger = MemberShare("nobody", "X", 0, 0, 0.0, 0, 0, 0, 0, 0, 0)
    statuses = member_statuses(policy, (share, stranger))
    assert [s.name for s in statuses] == policy.member_names()
    (model,) = statuses[1].gpu_models
    assert (model.name, model.entitlement, model.fair_share, model.allocated) == (
        "NVIDIA-A100-SXM4-80GB",
        12,
        13.333,
        5,
    )
    assert statuses[0].gpu_models == []


class _SeenByAnotherReplica:
    """A file source whose write is read by `other` (another API replica) before the
    writer gets to record it: the interleaving of two replicas racing on one version."""

    def __init__(self, source: FileSource) -> None:
        self.inner = source
        self.other: PolicyStore | None = None

    @property
    def name(self) -> str:
        return self.inner.name

    def read(self) -> tuple[str, str]:
        return self.inner.read()

    def write(self, text: str, revision: str) -> str:
        written = self.inner.write(text, revision)
        assert self.other is not None
        assert self.other.refresh() is True, "the other replica recorded the write"
        return written


def test_an_apply_recorded_first_by_another_replica_stays_the_appliers(tmp_path: Path) -> None:
    first = _store(tmp_path)
    source = _SeenByAnotherReplica(first.source)  # type: ignore[arg-type]
    writer = PolicyStore(source, AuditLog(first.audit.url))
    source.other = first
    entry = writer.apply(parse_policy(_with_weight(3)), 1, author="ana", comment="more")
    assert (entry.version, entry.origin, entry.author, entry.comment) == (
        2,
        Origin.API,
        "ana",
        "more",
    )
    recorded = first.audit.get(2)
    assert recorded is not None
    assert (recorded.origin, recorded.author, recorded.comment) == (Origin.API, "ana", "more")
    assert [v.version for v in first.audit.list()] == [2, 1]
    # The replica that recorded it as an outside change serves it in ana's name from its
    # next refresh on.
    # Named by the file's name alone: every role reads the author, and the API never
    # names the server's paths.
    assert first.current()[0].author == "source:file/policy.yaml"
    assert first.refresh() is False
    assert (first.current()[0].author, first.current()[0].comment) == ("ana", "more")
    with pytest.raises(VersionConflict, match="expected version 1, the current version is 2"):
        first.apply(parse_policy(_with_weight(5)), 1, author="bo")


def test_an_apply_overtaken_by_another_change_is_refused(tmp_path: Path) -> None:
    # The other replica recorded a different document as the version: the write lost.
    first = _store(tmp_path)
    source = _SeenByAnotherReplica(first.source)  # type: ignore[arg-type]
    writer = PolicyStore(source, AuditLog(first.audit.url))
    source.other = first

    def overtaken(text: str, revision: str) -> str:
        written = FileSource.write(first.source, text, revision)  # type: ignore[arg-type]
        first.take(_with_weight(7), "someone-else")
        return written

    source.write = overtaken  # type: ignore[method-assign]
    with pytest.raises(VersionConflict, match="version 2 is already recorded"):
        writer.apply(parse_policy(_with_weight(3)), 1, author="ana")
    recorded = first.audit.get(2)
    assert recorded is not None and recorded.origin == Origin.EXTERNAL


def _failing_store(tmp_path: Path) -> tuple[PolicyStore, FailingAudit, Path]:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(DEFAULT_POLICY.read_text())
    audit = FailingAudit(AuditLog(f"sqlite:///{tmp_path / 'ledger.db'}"))
    return PolicyStore(FileSource(policy_file), audit), audit, policy_file  # type: ignore[arg-type]


def test_an_apply_with_the_audit_history_down_changes_nothing(tmp_path: Path) -> None:
    store, audit, policy_file = _failing_store(tmp_path)
    before = policy_file.read_text()
    audit.down = {"latest", "append"}
    with pytest.raises(AuditUnavailable, match=r"OperationalError.*nothing was changed"):
        store.apply(parse_policy(_with_weight(3)), 1, author="ana")
    assert policy_file.read_text() == before, "the source was not written"
    assert store.current()[0].version == 1
    audit.down = set()
    assert store.apply(parse_policy(_with_weight(3)), 1, author="ana").version == 2


def test_an_apply_the_audit_history_fails_to_record_is_recorded_when_it_answers(
    tmp_path: Path,
) -> None:
    store, audit, policy_file = _failing_store(tmp_path)
    audit.down = {"append"}  # answers the check before the write, fails the insert
    with pytest.raises(AppliedNotRecorded, match=r"version 2 is in force.*do not apply it"):
        store.apply(parse_policy(_with_weight(3)), 1, author="ana", comment="more")
    entry, policy = store.current()
    assert (entry.version, entry.author, policy.members[0].weight) == (2, "ana", 3)
    assert "weight: 3" in policy_file.read_text(), "the change is in force"
    assert [v.version for v in audit.inner.list()] == [1]
    # Still down: a second change is refused before anything is written, and the version
    # stays unrecorded.
    with pytest.raises(AuditUnavailable, match="version 2 is not recorded yet"):
        store.apply(parse_policy(_with_weight(5)), 2, author="bo")
    assert "weight: 3" in policy_file.read_text()
    assert store.record_unrecorded() is False
    audit.down = set()
    assert store.refresh() is False, "the store's own write is no outside change"
    recorded = audit.inner.get(2)
    assert recorded is not None
    assert (recorded.origin, recorded.author, recorded.comment) == (Origin.API, "ana", "more")
    assert store.apply(parse_policy(_with_weight(5)), 2, author="bo").version == 3
    assert [v.version for v in audit.inner.list()] == [3, 2, 1]


def test_a_version_recorded_by_another_replica_meanwhile_is_claimed(tmp_path: Path) -> None:
    store, audit, _ = _failing_store(tmp_path)
    audit.down = {"append"}
    with pytest.raises(AppliedNotRecorded):
        store.apply(parse_policy(_with_weight(3)), 1, author="ana")
    # Another replica reads the source first and records it as an outside change.
    other = PolicyStore(store.source, AuditLog(audit.inner.url))
    assert other.current()[0].version == 2
    assert other.current()[0].origin == Origin.EXTERNAL
    audit.down = set()
    assert store.record_unrecorded() is True
    recorded = audit.inner.get(2)
    assert recorded is not None and (recorded.origin, recorded.author) == (Origin.API, "ana")
    assert [v.version for v in audit.inner.list()] == [2, 1]


def test_a_claim_is_looked_for_only_shortly_after_the_outside_change(tmp_path: Path) -> None:
    # A version set outside the API is looked up at each refresh only within
    # CLAIM_WINDOW of recording it: a claim comes within the applier's call, and a
    # GitOps version must not cost a query every few seconds for ever.
    now = [datetime(2026, 12, 1, tzinfo=UTC)]
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(DEFAULT_POLICY.read_text())
    audit = AuditLog(f"sqlite:///{tmp_path / 'ledger.db'}")
    first = PolicyStore(FileSource(policy_file), audit, clock=lambda: now[0])
    source = _SeenByAnotherReplica(first.source)  # type: ignore[arg-type]
    writer = PolicyStore(source, AuditLog(audit.url))
    source.other = first
    writer.apply(parse_policy(_with_weight(3)), 1, author="ana")
    now[0] += CLAIM_WINDOW + timedelta(seconds=1)
    assert first.refresh() is False
    assert first.current()[0].author.startswith("source:"), "not looked up any more"
