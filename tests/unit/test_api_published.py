"""The API's read side answers from what the latest cycle published: the cycle's own
shares and explanations, never a cycle of the engine per request."""

from __future__ import annotations

from dataclasses import replace

from pytest import MonkeyPatch

from policies.model import Policy
from proto.fairpool.v1.share_pb2 import GetEntitlementsResponse
from scheduler.api import share_service
from scheduler.api.share_service import PublishedShares
from scheduler.engine import compute_shares
from scheduler.engine.decisions import MemberShare
from scheduler.engine.snapshot import PendingJob, Snapshot
from scheduler.k8s.published import NOTHING_PUBLISHED
from tests.unit.test_api_explain import H100, reclaim_view


class CountingShares:
    """The engine's compute_shares, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, snapshot: Snapshot, policy: Policy) -> tuple[MemberShare, ...]:
        self.calls += 1
        return compute_shares(snapshot, policy)


def test_reads_use_the_cycles_shares_and_index_each_publication_once() -> None:
    view = reclaim_view()
    compute = CountingShares()
    book = PublishedShares(view, compute)
    first = book.current()
    assert first.shares == view.last_decisions().shares and first.shares
    assert compute.calls == 0, "the cycle's shares are served as they are"
    assert book.current() is first and book.builds == 1
    assert book.indexed() is first
    assert set(first.index.jobs) == {j.job_id for j in view.snapshot().pending}
    assert first.explanations is view.last_decisions().explanations
    published = view.publish(replace(view.snapshot(), now=view.snapshot().now + 1))
    second = book.current()
    assert second.published is published and book.builds == 2 and compute.calls == 0


def test_a_policy_applied_since_the_last_cycle_has_its_shares_computed_once() -> None:
    view = reclaim_view()
    compute = CountingShares()
    book = PublishedShares(view, compute)
    before = book.indexed()
    policy = view.policy()
    # physics buys 8 H100s: carved out of the H100 owners' entitlements
    heavier = policy.model_copy(
        update={
            "spec": policy.spec.model_copy(
                update={
                    "members": [
                        m.model_copy(update={"purchased": {H100: 8}}) if m.name == "physics" else m
                        for m in policy.members
                    ]
                }
            )
        }
    )
    view._policy = heavier  # applied; the cycle that decides with it has not run yet
    after = book.indexed()
    assert compute.calls == 1 and book.current() is after
    assert after.policy is heavier and after.published is before.published
    assert after.index is before.index, "the same publication is not indexed again"
    assert after.shares == compute_shares(view.snapshot(), heavier) != before.shares


def test_nothing_published_yet_answers_empty() -> None:
    assert NOTHING_PUBLISHED.version == 0 and not NOTHING_PUBLISHED.snapshot.pending
    assert (
        NOTHING_PUBLISHED.next(
            NOTHING_PUBLISHED.snapshot, None, NOTHING_PUBLISHED.decisions
        ).version
        == 1
    )  # type: ignore[arg-type]


def test_entitlements_never_wait_for_the_queue_to_be_indexed(monkeypatch: MonkeyPatch) -> None:
    indexed: list[int] = []
    original = share_service.QueueIndex.of

    def counting(pending: tuple[PendingJob, ...]) -> share_service.QueueIndex:
        indexed.append(len(pending))
        return original(pending)

    monkeypatch.setattr(share_service.QueueIndex, "of", counting)
    view = reclaim_view()
    book = PublishedShares(view, CountingShares())
    answer = book.current().entitlements(None, "", lambda: 0)
    assert indexed == [], "GetEntitlements sorted the pending queue"
    assert GetEntitlementsResponse.FromString(answer).shares
    book.indexed()
    book.indexed()
    assert indexed == [len(view.snapshot().pending)], "indexed once per publication"


def test_each_scope_is_serialized_once_per_publication() -> None:
    view = reclaim_view()
    book = PublishedShares(view, CountingShares())
    first = book.current()
    everyone = first.entitlements(None, "", lambda: 0)
    assert first.entitlements(None, "", lambda: 0) is everyone, "serialized again"
    mine = first.entitlements("uni-north", H100, lambda: 0)
    assert first.entitlements("uni-north", H100, lambda: 0) is mine
    decoded = GetEntitlementsResponse.FromString(mine)
    assert {(s.member, s.gpu_model) for s in decoded.shares} == {("uni-north", H100)}
    assert decoded == share_service.entitlements_response(
        first.shares, "uni-north", H100, first.policy.version, first.snapshot.now, first.capacity
    )
    # Scopes that name nothing are answered but not kept.
    for member, model in (("made-up", ""), (None, "made-up-gpu")):
        answer = first.entitlements(member, model, lambda: 0)
        assert not GetEntitlementsResponse.FromString(answer).shares
        assert (member, model) not in first._answers
    view.publish(replace(view.snapshot(), now=view.snapshot().now + 1))
    assert book.current().entitlements(None, "", lambda: 0) is not everyone


def test_readers_answer_from_the_last_indexed_book_while_one_indexes() -> None:
    view = reclaim_view()
    book = PublishedShares(view, CountingShares())
    first = book.indexed()
    view.publish(replace(view.snapshot(), now=view.snapshot().now + 1))
    fresh = book.current()
    with fresh.indexing:  # another reader is indexing the new publication
        assert book.indexed() is first
    assert book.indexed() is fresh and fresh.index is not first.index


def test_the_pools_gpus_count_unowned_nodes() -> None:
    # Summed from the members' contributions, a pool with an unowned node (no owner
    # label, or one naming no member) showed fewer GPUs than it has, and more
    # allocated than its GPUs.
    view = reclaim_view()
    owned = GetEntitlementsResponse.FromString(
        PublishedShares(view, CountingShares()).current().entitlements(None, "", lambda: 0)
    )
    before = {p.gpu_model: p.capacity for p in owned.pool}
    assert before[H100] == sum(
        n.gpus for n in view.snapshot().nodes if n.gpu_model == H100 and n.ready
    )
    model = next(n for n in view.snapshot().nodes if n.gpu_model == H100)
    nodes = (
        *view.snapshot().nodes,
        replace(model, name="shared-0", owner=None),
        replace(model, name="gone-0", owner="a-member-no-more"),
        replace(model, name="down-0", owner=None, ready=False),
    )
    view.publish(replace(view.snapshot(), nodes=nodes))
    book = PublishedShares(view, CountingShares()).current()
    pool = {
        p.gpu_model: p
        for p in GetEntitlementsResponse.FromString(book.entitlements(None, "", lambda: 0)).pool
    }
    assert pool[H100].capacity == before[H100] + 2 * model.gpus  # not the node that is down
    contributed = sum(s.contribution for s in book.shares if s.gpu_model == H100)
    assert contributed == before[H100], "the unowned nodes are nobody's contribution"
