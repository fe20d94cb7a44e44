"""The API's read side answers from what the latest cycle published: the cycle's own
shares and explanations, never a cycle of the engine per request."""

from __future__ import annotations

from dataclasses import replace

from policies.model import Policy
from scheduler.api.share_service import PublishedShares
from scheduler.engine import compute_shares
from scheduler.engine.decisions import MemberShare
from scheduler.engine.snapshot import Snapshot
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
    assert set(first.index.jobs) == {j.job_id for j in view.snapshot().pending}
    assert first.explanations is view.last_decisions().explanations
    published = view.publish(replace(view.snapshot(), now=view.snapshot().now + 1))
    second = book.current()
    assert second.published is published and book.builds == 2 and compute.calls == 0


def test_a_policy_applied_since_the_last_cycle_has_its_shares_computed_once() -> None:
    view = reclaim_view()
    compute = CountingShares()
    book = PublishedShares(view, compute)
    before = book.current()
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
    after = book.current()
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
