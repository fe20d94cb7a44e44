"""PolicyService on a real server: optimistic concurrency, dry runs, the audit log,
errors that name the field and line, watching, and the scheduler picking a policy up."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
import sqlalchemy
import yaml

from policies.errors import PolicyError
from policies.loader import DEFAULT_POLICY, parse_policy
from policies.model import MAX_VERSION
from proto.fairpool.v1 import policy_pb2, share_pb2
from reports.ledger.schema import policy_versions
from scheduler.api.policy_audit import AuditLog
from scheduler.api.policy_store import (
    FileSource,
    Origin,
    PolicyStore,
    StoredVersion,
    canonical_document,
)
from tests.unit.failing_audit import FailingAudit
from tests.unit.test_api_support import MEMBER_A, Running, metadata, running_server

ADMIN = metadata("admin")
A100 = "NVIDIA-A100-SXM4-80GB"


@pytest.fixture
def api(tmp_path: Path, ledger_url: str) -> Iterator[Running]:
    with running_server(tmp_path, ledger_url=ledger_url) as running:
        yield running


def edited(change: dict[str, object], member: str = MEMBER_A) -> str:
    """The demo policy with `change` merged into one member."""
    data = yaml.safe_load(DEFAULT_POLICY.read_text())
    for entry in data["spec"]["members"]:
        if entry["name"] == member:
            entry.update(change)
    return yaml.safe_dump(data, sort_keys=False)


def current_version(api: Running) -> int:
    reply = api.policy.GetPolicy(policy_pb2.GetPolicyRequest(), metadata=ADMIN)
    return reply.policy.version


def test_two_concurrent_applies_on_one_version_one_wins(api: Running) -> None:
    base = current_version(api)
    drafts = [edited({"weight": 3}), edited({"weight": 4})]
    barrier = threading.Barrier(len(drafts))
    outcomes: list[grpc.StatusCode] = []

    def apply(text: str) -> None:
        barrier.wait()
        try:
            api.policy.ApplyPolicy(
                policy_pb2.ApplyPolicyRequest(yaml=text, expected_version=base), metadata=ADMIN
            )
            outcomes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            outcomes.append(exc.code())

    threads = [threading.Thread(target=apply, args=(d,)) for d in drafts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes, key=str) == sorted(
        [grpc.StatusCode.OK, grpc.StatusCode.ABORTED], key=str
    )
    assert current_version(api) == base + 1
    versions = api.policy.ListPolicyVersions(
        policy_pb2.ListPolicyVersionsRequest(), metadata=ADMIN
    ).versions
    assert [v.version for v in versions] == [base + 1, base]


def test_two_stores_on_one_file_and_database_never_share_a_version(
    tmp_path: Path, ledger_url: str
) -> None:
    # Two API replicas outside a cluster: the file lock and the audit log's key decide.
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(DEFAULT_POLICY.read_text())
    url = ledger_url
    first = PolicyStore(FileSource(policy_file), AuditLog(url))
    second = PolicyStore(FileSource(policy_file), AuditLog(url))
    draft = parse_policy(edited({"weight": 5}))
    first.apply(draft, expected_version=1, author="one")
    with pytest.raises(Exception, match="version"):
        second.apply(parse_policy(edited({"weight": 6})), expected_version=1, author="two")
    assert [v.version for v in second.audit.list()] == [2, 1]


def test_an_outside_change_from_a_file_with_a_long_name_is_recorded(
    tmp_path: Path, ledger_url: str
) -> None:
    # `source:file/NAME` was longer than the author column (253): PostgreSQL refused the
    # first version and the store never started.
    policy_file = tmp_path / ("p" * 245 + ".yaml")
    policy_file.write_text(DEFAULT_POLICY.read_text())
    store = PolicyStore(FileSource(policy_file), AuditLog(ledger_url))
    author = store.current()[0].author
    assert len(author) == 253 and author.startswith("source:file/ppp") and author[-1] == "…"
    assert AuditLog(ledger_url).list()[0].author == author


def test_a_recorded_version_this_fairpool_refuses_is_left_out_of_the_prices(
    tmp_path: Path, ledger_url: str
) -> None:
    # Recorded by an earlier fairpool that took a member named `pool`: the store could
    # not start on the fixed policy (the old version's error named the policy file), and
    # GetReport, which reads every version's prices, failed for every month.
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(DEFAULT_POLICY.read_text())
    audit = AuditLog(ledger_url)
    current = parse_policy(DEFAULT_POLICY.read_text())
    old = canonical_document(current, 1).replace("name: physics", "name: pool")
    audit.append(
        StoredVersion(1, "admin", datetime(2026, 1, 1, tzinfo=UTC), Origin.API, "", old, "")
    )
    store = PolicyStore(FileSource(policy_file), audit)
    entry = store.current()[0]
    assert (entry.version, entry.origin, entry.author) == (
        2,
        Origin.EXTERNAL,
        "source:file/policy.yaml",
    )
    assert list(store.policies()) == [2]


def test_a_policy_at_the_largest_version_refuses_a_change_and_writes_nothing(
    tmp_path: Path, ledger_url: str
) -> None:
    # A file may start at any version up to MAX_VERSION; the next one would be stored
    # but never load again (the source at the next start, the audit history), and every
    # later apply was refused as "already recorded".
    text = DEFAULT_POLICY.read_text().replace(
        "  name: demo-consortium", f"  name: demo-consortium\n  version: {MAX_VERSION}"
    )
    (tmp_path / "policy.yaml").write_text(text)
    with running_server(tmp_path, ledger_url=ledger_url) as api:
        assert current_version(api) == MAX_VERSION
        with pytest.raises(grpc.RpcError) as refused:
            api.policy.ApplyPolicy(
                policy_pb2.ApplyPolicyRequest(yaml=edited({"weight": 2})), metadata=ADMIN
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"largest a policy version can be ({MAX_VERSION})" in str(refused.value.details())
        assert api.policy_file.read_text() == text
        versions = api.policy.ListPolicyVersions(
            policy_pb2.ListPolicyVersionsRequest(omit_yaml=True), metadata=ADMIN
        ).versions
        assert [v.version for v in versions] == [MAX_VERSION]
        # An edit of the file outside the API is not recorded either: the version in
        # force stays, and the source is reported broken, naming the field (a store
        # starting on it refuses to start, as on any broken source).
        api.policy_file.write_text(edited({"weight": 3}))
        assert current_version(api) == MAX_VERSION
        with pytest.raises(PolicyError, match=r"metadata\.version: the policy is at version"):
            PolicyStore(FileSource(api.policy_file), AuditLog(ledger_url))
        assert [v.version for v in AuditLog(ledger_url).list()] == [MAX_VERSION]


def test_dry_run_changes_nothing_and_reports_the_share_change(api: Running) -> None:
    before_file = api.policy_file.read_bytes()
    before_versions = api.policy.ListPolicyVersions(
        policy_pb2.ListPolicyVersionsRequest(), metadata=ADMIN
    )
    before_shares = api.shares.GetEntitlements(share_pb2.GetEntitlementsRequest(), metadata=ADMIN)
    policy_before = api.view.policy()

    reply = api.policy.ApplyPolicy(
        policy_pb2.ApplyPolicyRequest(
            yaml=edited({"purchased": {A100: 4}}), dry_run=True, expected_version=1
        ),
        metadata=ADMIN,
    )
    assert reply.dry_run and not reply.HasField("applied")
    change = {(c.member, c.gpu_model): c for c in reply.changes}[(MEMBER_A, A100)]
    assert change.entitlement_after - change.entitlement_before == 4
    assert "+    purchased:" in reply.diff or "purchased" in reply.diff

    assert api.policy_file.read_bytes() == before_file
    assert (
        api.policy.ListPolicyVersions(policy_pb2.ListPolicyVersionsRequest(), metadata=ADMIN)
        == before_versions
    )
    assert api.view.policy() is policy_before
    after_shares = api.shares.GetEntitlements(share_pb2.GetEntitlementsRequest(), metadata=ADMIN)
    assert after_shares.shares == before_shares.shares


def test_apply_changes_entitlements_the_scheduler_uses(api: Running) -> None:
    reply = api.policy.ApplyPolicy(
        policy_pb2.ApplyPolicyRequest(yaml=edited({"purchased": {A100: 4}}), expected_version=1),
        metadata=ADMIN,
    )
    assert reply.applied.version == 2
    assert api.view.policy().version == 2
    assert api.view.policy().member(MEMBER_A).purchased == {A100: 4}
    shares = api.shares.GetEntitlements(
        share_pb2.GetEntitlementsRequest(member=MEMBER_A, gpu_model=A100), metadata=ADMIN
    )
    assert [s.entitlement for s in shares.shares] == [4]
    assert shares.policy_version == 2
    stored = parse_policy(api.policy_file.read_text())
    assert stored.version == 2 and stored.member(MEMBER_A).purchased == {A100: 4}


def test_stale_expected_version_is_aborted(api: Running) -> None:
    api.policy.ApplyPolicy(
        policy_pb2.ApplyPolicyRequest(yaml=edited({"weight": 2}), expected_version=1),
        metadata=ADMIN,
    )
    for dry_run in (False, True):
        with pytest.raises(grpc.RpcError) as info:
            api.policy.ApplyPolicy(
                policy_pb2.ApplyPolicyRequest(
                    yaml=edited({"weight": 3}), expected_version=1, dry_run=dry_run
                ),
                metadata=ADMIN,
            )
        assert info.value.code() == grpc.StatusCode.ABORTED
        assert "current version is 2" in info.value.details()


def test_a_bad_policy_names_the_field_path_and_line(api: Running) -> None:
    text = edited({"weight": -1, "colour": "red"})
    line = next(i for i, x in enumerate(text.splitlines(), 1) if "weight: -1" in x)
    for call in (api.policy.ValidatePolicy, api.policy.ApplyPolicy):
        request = (
            policy_pb2.ValidatePolicyRequest(yaml=text)
            if call is api.policy.ValidatePolicy
            else policy_pb2.ApplyPolicyRequest(yaml=text)
        )
        with pytest.raises(grpc.RpcError) as info:
            call(request, metadata=ADMIN)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = info.value.details()
        assert f"line {line}: spec.members[0].weight" in details
        assert "spec.members[0].colour: unknown field" in details
    with pytest.raises(grpc.RpcError) as info:
        api.policy.ValidatePolicy(policy_pb2.ValidatePolicyRequest(yaml="a: [1"), metadata=ADMIN)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert current_version(api) == 1


def test_a_policy_that_does_not_price_a_model_the_nodes_have_is_refused(api: Running) -> None:
    # Accepted, it broke the bill of every month with an hour under it ("has no price").
    data = yaml.safe_load(DEFAULT_POLICY.read_text())
    data["spec"]["gpuModels"] = [g for g in data["spec"]["gpuModels"] if g["name"] != A100]
    for member in data["spec"]["members"]:
        member.get("purchased", {}).pop(A100, None)
    text = yaml.safe_dump(data, sort_keys=False)
    parse_policy(text)  # valid on its own
    a100_nodes = sum(1 for n in api.view.snapshot().nodes if n.gpu_model == A100)
    for dry_run in (True, False):
        with pytest.raises(grpc.RpcError) as info:
            api.policy.ApplyPolicy(
                policy_pb2.ApplyPolicyRequest(yaml=text, dry_run=dry_run), metadata=ADMIN
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (
            f"spec.gpuModels: the cluster has nodes of '{A100}' ({a100_nodes} node(s)), which "
            "the policy must price"
        ) in (info.value.details() or "")
    assert current_version(api) == 1


def test_the_audit_log_keeps_every_version_with_author_and_diff(api: Running) -> None:
    authors = {"admin": "admin-person"}
    for weight in (2, 3, 4):
        api.policy.ApplyPolicy(
            policy_pb2.ApplyPolicyRequest(
                yaml=edited({"weight": weight}), comment=f"weight {weight}"
            ),
            metadata=ADMIN,
        )
    # An edit of the file outside the API is recorded too.
    text = api.policy_file.read_text().replace("weight: 4.0", "weight: 7.0")
    api.policy_file.write_text(text)
    assert api.server.store.refresh()

    versions = api.policy.ListPolicyVersions(
        policy_pb2.ListPolicyVersionsRequest(), metadata=ADMIN
    ).versions
    assert [v.version for v in versions] == [5, 4, 3, 2, 1]
    assert [v.author for v in versions[1:4]] == [authors["admin"]] * 3
    assert [v.comment for v in versions[1:4]] == ["weight 4", "weight 3", "weight 2"]
    assert versions[0].origin == policy_pb2.POLICY_ORIGIN_EXTERNAL
    assert versions[-1].origin == policy_pb2.POLICY_ORIGIN_BOOTSTRAP
    assert all(v.origin == policy_pb2.POLICY_ORIGIN_API for v in versions[1:4])
    assert "-    weight: 3.0\n+    weight: 4.0" in versions[1].diff
    assert "-    weight: 4.0\n+    weight: 7.0" in versions[0].diff
    old = api.policy.GetPolicy(policy_pb2.GetPolicyRequest(version=3), metadata=ADMIN)
    assert parse_policy(old.policy.yaml).member(MEMBER_A).weight == 3
    with pytest.raises(grpc.RpcError) as info:
        api.policy.GetPolicy(policy_pb2.GetPolicyRequest(version=99), metadata=ADMIN)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    # Straight from the table in the ledger database.
    engine = sqlalchemy.create_engine(api.ledger_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.select(policy_versions.c.version, policy_versions.c.author)
        ).all()
    engine.dispose()
    assert sorted(rows)[1:4] == [(2, "admin-person"), (3, "admin-person"), (4, "admin-person")]


def test_applying_the_policy_in_force_again_stores_nothing(api: Running) -> None:
    """As `kubectl apply` of an unchanged object: a GitOps loop re-applying its file made
    an empty version each time (a reload, and a version change in the month's report)."""
    text = edited({"weight": 2})
    first = api.policy.ApplyPolicy(policy_pb2.ApplyPolicyRequest(yaml=text), metadata=ADMIN)
    stored = api.policy_file.read_text()
    # The same document, written differently (key order, a comment): still the same policy.
    again = yaml.safe_dump(yaml.safe_load(text), sort_keys=True) + "# re-applied by CI\n"
    reply = api.policy.ApplyPolicy(
        policy_pb2.ApplyPolicyRequest(yaml=again, comment="nightly sync"), metadata=ADMIN
    )
    assert reply.applied.version == reply.base_version == first.applied.version
    assert reply.diff == "" and not reply.dry_run
    assert api.policy_file.read_text() == stored
    versions = api.policy.ListPolicyVersions(
        policy_pb2.ListPolicyVersionsRequest(), metadata=ADMIN
    ).versions
    assert [v.version for v in versions] == [first.applied.version, 1]
    # The same policy with a default written out and a price with fewer zeros: each such
    # apply recorded a new version whose share change was empty.
    data = yaml.safe_load(text)
    data["spec"]["gpuModels"][0]["hourlyCost"] = str(
        Decimal(data["spec"]["gpuModels"][0]["hourlyCost"]).normalize()
    )
    data["spec"]["members"][1].setdefault("weight", 1.0)
    data["spec"]["members"][1].setdefault("maxGpus", None)
    same = yaml.safe_dump(data, sort_keys=False)
    assert same != text
    reply = api.policy.ApplyPolicy(policy_pb2.ApplyPolicyRequest(yaml=same), metadata=ADMIN)
    assert reply.applied.version == first.applied.version and reply.diff == ""
    # An expected version that is no longer current is still refused, unchanged or not.
    with pytest.raises(grpc.RpcError) as stale:
        api.policy.ApplyPolicy(
            policy_pb2.ApplyPolicyRequest(yaml=again, expected_version=1), metadata=ADMIN
        )
    assert stale.value.code() == grpc.StatusCode.ABORTED


def test_an_apply_while_the_audit_history_is_down_says_whether_it_is_in_force(
    tmp_path: Path, ledger_url: str
) -> None:
    with running_server(tmp_path, ledger_url=ledger_url, refresh_seconds=0.2) as api:
        _apply_with_the_audit_history_down(api)


def _apply_with_the_audit_history_down(api: Running) -> None:
    store = api.server.store
    failing = FailingAudit(store.audit)
    store.audit = failing  # type: ignore[assignment]
    base = current_version(api)
    text = api.policy_file.read_text()

    failing.down = {"latest", "append"}
    with pytest.raises(grpc.RpcError) as info:
        api.policy.ApplyPolicy(
            policy_pb2.ApplyPolicyRequest(yaml=edited({"weight": 3}), expected_version=base),
            metadata=ADMIN,
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "nothing was changed" in (info.value.details() or "")
    assert api.policy_file.read_text() == text
    assert current_version(api) == base

    failing.down = {"append"}  # fails between the check and the insert
    with pytest.raises(grpc.RpcError) as info:
        api.policy.ApplyPolicy(
            policy_pb2.ApplyPolicyRequest(
                yaml=edited({"weight": 3}), expected_version=base, comment="w3"
            ),
            metadata=ADMIN,
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"version {base + 1} is in force" in (info.value.details() or "")
    reply = api.policy.GetPolicy(policy_pb2.GetPolicyRequest(), metadata=ADMIN)
    assert reply.policy.version == base + 1
    assert parse_policy(reply.policy.yaml).member(MEMBER_A).weight == 3

    failing.down = set()  # the database answers again: the refresh loop records it
    deadline = time.monotonic() + 30
    versions = []
    while time.monotonic() < deadline:
        versions = list(
            api.policy.ListPolicyVersions(
                policy_pb2.ListPolicyVersionsRequest(), metadata=ADMIN
            ).versions
        )
        if versions[0].version == base + 1:
            break
        time.sleep(0.2)
    assert (versions[0].version, versions[0].author, versions[0].comment) == (
        base + 1,
        "admin-person",
        "w3",
    )
    assert versions[0].origin == policy_pb2.POLICY_ORIGIN_API


def test_watch_streams_new_versions(api: Running) -> None:
    stream = api.policy.WatchPolicy(policy_pb2.WatchPolicyRequest(), metadata=ADMIN, timeout=20)
    seen: list[int] = []
    first = next(stream)
    seen.append(first.version)
    api.policy.ApplyPolicy(
        policy_pb2.ApplyPolicyRequest(yaml=edited({"weight": 2})), metadata=ADMIN
    )
    seen.append(next(stream).version)
    stream.cancel()
    assert seen == [1, 2]
    again = api.policy.WatchPolicy(
        policy_pb2.WatchPolicyRequest(since_version=1), metadata=ADMIN, timeout=5
    )
    assert next(again).version == 2
    again.cancel()


def test_a_watch_from_beyond_the_current_version_is_invalid_argument(api: Running) -> None:
    # It sent nothing until the deadline (or skipped every version up to it), status
    # DEADLINE_EXCEEDED or OK, whatever the caller meant.
    stream = api.policy.WatchPolicy(
        policy_pb2.WatchPolicyRequest(since_version=5), metadata=ADMIN, timeout=3.0
    )
    with pytest.raises(grpc.RpcError) as info:
        list(stream)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(
        "since_version: 5 is newer than the current version 1"
    )


def test_watch_ends_at_the_callers_deadline(api: Running) -> None:
    stream = api.policy.WatchPolicy(
        policy_pb2.WatchPolicyRequest(since_version=1), metadata=ADMIN, timeout=1.0
    )
    with pytest.raises(grpc.RpcError) as info:
        list(stream)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert current_version(api) == 1  # the server is still answering


def test_watchers_are_capped_so_other_calls_keep_a_thread(api: Running) -> None:
    # running_server uses 16 worker threads: at most 4 watchers, 2 per identity.
    watchers = []
    for who in (ADMIN, ADMIN, metadata("viewer"), metadata("viewer")):
        stream = api.policy.WatchPolicy(policy_pb2.WatchPolicyRequest(), metadata=who, timeout=30)
        assert next(stream).version == 1
        watchers.append(stream)
    with pytest.raises(grpc.RpcError) as info:
        next(
            api.policy.WatchPolicy(
                policy_pb2.WatchPolicyRequest(), metadata=metadata(f"member:{MEMBER_A}"), timeout=5
            )
        )
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert current_version(api) == 1
    watchers.pop().cancel()

    def watch_again() -> int:
        try:
            stream = api.policy.WatchPolicy(
                policy_pb2.WatchPolicyRequest(), metadata=metadata("viewer"), timeout=5
            )
            version = next(stream).version
            stream.cancel()
            return version
        except grpc.RpcError:
            return 0

    deadline = time.monotonic() + 10
    while (version := watch_again()) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert version == 1, "a cancelled watcher gives its place back"
    for stream in watchers:
        stream.cancel()


def test_a_member_reads_the_shared_rules_and_only_its_own_entry(api: Running) -> None:
    member_a = metadata(f"member:{MEMBER_A}")
    # A change to another member (physics) and one to uni-north itself.
    api.policy.ApplyPolicy(
        policy_pb2.ApplyPolicyRequest(yaml=edited({"weight": 9}, member="physics")),
        metadata=ADMIN,
    )
    api.policy.ApplyPolicy(
        policy_pb2.ApplyPolicyRequest(yaml=_both_changed()),
        metadata=ADMIN,
    )
    seen = api.policy.GetPolicy(policy_pb2.GetPolicyRequest(), metadata=member_a).policy
    policy = yaml.safe_load(seen.yaml)
    assert [m["name"] for m in policy["spec"]["members"]] == [MEMBER_A]
    assert policy["spec"]["gpuModels"] and policy["metadata"]["version"] == 3
    assert "physics" not in seen.yaml and "lab-bio" not in seen.yaml
    full = api.policy.GetPolicy(policy_pb2.GetPolicyRequest(), metadata=ADMIN).policy
    assert "physics" in full.yaml
    # Said, so that a client compares a file with it in the same view.
    assert (seen.member_view, full.member_view) == (MEMBER_A, "")

    history = api.policy.ListPolicyVersions(
        policy_pb2.ListPolicyVersionsRequest(), metadata=member_a
    ).versions
    by_version = {v.version: v for v in history}
    assert by_version[2].diff == "", "a change to another member is not shown"
    assert "+    weight: 5.0" in by_version[3].diff and "physics" not in by_version[3].diff
    assert all("physics" not in v.yaml and "ai-startup" not in v.yaml for v in history)
    assert {v.member_view for v in history} == {MEMBER_A}
    stream = api.policy.WatchPolicy(
        policy_pb2.WatchPolicyRequest(since_version=1), metadata=member_a, timeout=10
    )
    watched = [next(stream), next(stream)]
    stream.cancel()
    assert [w.version for w in watched] == [2, 3]
    assert all("physics" not in w.yaml for w in watched)


def _both_changed() -> str:
    data = yaml.safe_load(edited({"weight": 9}, member="physics"))
    data["spec"]["members"][0]["weight"] = 5
    return yaml.safe_dump(data, sort_keys=False)


def test_an_applied_policy_file_is_on_disk_before_it_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new file's content is flushed to disk before it replaces the old one, and the
    folder's entry after the rename: a power loss then leaves the old file or the new
    one, never an empty one, and never the old one once the audit row says otherwise."""
    import os

    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(DEFAULT_POLICY.read_text())
    source = FileSource(policy_file)
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        synced.append("folder" if Path(target) == tmp_path else Path(target).name)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    source.write(edited({"weight": 5}), source.read()[1])
    assert synced[-1] == "folder", synced
    assert any(name.startswith(".policy.yaml.") for name in synced[:-1]), synced


def test_the_second_of_two_concurrent_applies_is_answered_against_what_it_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another admin's apply lands between this call's read of the version in force and
    the store's lock (forced here by applying it first inside the store's apply)."""
    with running_server(tmp_path) as api:
        store = api.server.store
        real = store.apply
        first = [edited({"weight": 3})]

        def another_admin_first(*args: object, **kwargs: object) -> object:
            if first:
                real(parse_policy(first.pop()), 0, author="alice")
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(store, "apply", another_admin_first)
        base = current_version(api)
        # The same document as alice's: nothing stored, and not told "applied".
        same = api.policy.ApplyPolicy(
            policy_pb2.ApplyPolicyRequest(yaml=edited({"weight": 3})), metadata=ADMIN
        )
        assert same.applied.version == same.base_version == base + 1
        assert same.applied.author == "alice" and same.diff == "" and not same.changes
        # A different one: stored after alice's, and answered against alice's version.
        first.append(edited({"weight": 4}))
        other = api.policy.ApplyPolicy(
            policy_pb2.ApplyPolicyRequest(yaml=edited({"weight": 5})), metadata=ADMIN
        )
        assert (other.base_version, other.applied.version) == (base + 2, base + 3)
        assert "weight: 4" in other.diff and "weight: 5" in other.diff


def test_versions_beyond_any_stored_are_answered_as_absent(api: Running) -> None:
    # The version column is an INTEGER: a request's int64 beyond it must still be
    # answered as a version that does not exist, on every database.
    for version in (2**31, 2**62, 2**63 - 1):
        with pytest.raises(grpc.RpcError) as info:
            api.policy.GetPolicy(policy_pb2.GetPolicyRequest(version=version), metadata=ADMIN)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value.details()
        listed = api.policy.ListPolicyVersions(
            policy_pb2.ListPolicyVersionsRequest(before_version=version), metadata=ADMIN
        )
        assert [v.version for v in listed.versions] == [1]
        with pytest.raises(grpc.RpcError) as stale:
            api.policy.ApplyPolicy(
                policy_pb2.ApplyPolicyRequest(yaml=edited({"weight": 3}), expected_version=version),
                metadata=ADMIN,
            )
        assert stale.value.code() == grpc.StatusCode.ABORTED, stale.value.details()
