"""The head start (docs/glossary.md, `sharing.headStart`): a member's first job of one
multi-GPU pod that keeps it within its entitlement goes before the order, so the 1-GPU
jobs of members ordered first do not take the room it fits in. Each case also checks that
the reference engine decides the same (`tests/reference_engine`, the rule spelled out)."""

from __future__ import annotations

from scheduler.engine.decisions import Decisions
from scheduler.engine.snapshot import Snapshot
from tests.unit import engine_strategies as es
from tests.unit.engine_strategies import without_consolidation

H = "H"
MEMBERS = ["m-a", "m-b", "m-c"]


def _both(snap: Snapshot, **sharing: object) -> Decisions:
    """The engine's decisions, after checking the reference engine's are the same."""
    sharing = {"min_runtime_seconds": 0, "head_start": True, **sharing}
    pol = without_consolidation(es.policy(MEMBERS, models=(H,), **sharing))
    return es.decided_alike(snap, pol)


def _where(decisions: Decisions) -> dict[str, str]:
    return {b.job_id: b.node for b in decisions.binds}


def _owner_and_neighbour(b_job_gpus: int = 4, **b_job: object) -> Snapshot:
    """m-b's 4-GPU node is empty and m-b wants it (a job of `b_job_gpus` GPUs, submitted
    first). m-a's own node is held by m-c, a borrower; m-a's 1-GPU jobs come first in the
    order (both members at 0 GPUs, m-a by name) and, placement before reclaim, would land
    on m-b's free node."""
    nodes = [
        es.node("na", "m-a", gpus=2, model=H),
        es.node("nb", "m-b", gpus=4, model=H),
    ]
    run = [es.running(f"c{k}", "m-c", "na", started_at=0.0) for k in range(2)]
    pending = [es.job("b-big", "m-b", gpus=b_job_gpus, submitted_at=100.0, **b_job)]
    pending += [es.job(f"a-small-{k}", "m-a", submitted_at=200.0 + k) for k in range(2)]
    return es.snapshot(nodes, pending, run)


def test_an_owners_big_job_gets_its_node_before_anothers_small_jobs() -> None:
    got = _both(_owner_and_neighbour())
    # m-b's job has its node; m-a takes its own back from the borrower instead.
    assert _where(got)["b-big"] == "nb"
    assert {p.job_id for p in got.preemptions} == {"c0", "c1"}
    assert "a-small-0" not in _where(got)


def test_off_by_default_the_order_alone_decides() -> None:
    """Without `headStart` (the default) m-a's small jobs, first in the order, take m-b's
    free node and m-b's job waits (m-a's jobs are within its entitlement: no reclaim)."""
    got = _both(_owner_and_neighbour(), head_start=False)
    assert _where(got)["a-small-0"] == "nb"
    assert "b-big" not in _where(got)


def test_a_job_that_does_not_fit_keeps_its_turn_in_the_order() -> None:
    """Nothing is held for a job that does not fit now: the small jobs take the room, as
    before (a 6-GPU job on a 4-GPU node waits for reclaim or a move)."""
    got = _both(_owner_and_neighbour(b_job_gpus=6))
    assert "b-big" not in _where(got)
    assert _where(got)["a-small-0"] == "nb"


def test_no_head_start_beyond_the_entitlement() -> None:
    """m-c owns nothing: its 2-GPU job, submitted first and within its fair share (m-b's
    node is idle), borrows, so it has no head start: it is placed in its turn, after
    m-a's entitled 1-GPU jobs (binds come out in the order they are decided). Placed
    ahead of the order, borrowed work would only be reclaimed by those it went before."""
    nodes = [es.node("na", "m-a", gpus=2, model=H), es.node("nb", "m-b", gpus=4, model=H)]
    pending = [es.job("c-big", "m-c", gpus=2, submitted_at=100.0)]
    pending += [es.job(f"a-small-{k}", "m-a", submitted_at=200.0 + k) for k in range(2)]
    got = _both(es.snapshot(nodes, pending, []))
    share = next(s for s in got.shares if s.member == "m-c")
    assert share.entitlement == 0 and share.fair_share >= 2
    assert [b.job_id for b in got.binds] == ["a-small-0", "a-small-1", "c-big"]


def test_never_ahead_of_its_own_members_higher_priority_jobs() -> None:
    """m-b's 1-GPU job of a higher priority comes first in m-b's queue: the big job gets no
    head start over it, and after it no longer fits on m-b's node."""
    snap = _owner_and_neighbour()
    urgent = es.job("b-urgent", "m-b", submitted_at=300.0, priority=10)
    snap = es.snapshot(list(snap.nodes), [*snap.pending, urgent], list(snap.running))
    got = _both(snap)
    assert _where(got)["b-urgent"] == "nb"
    assert "b-big" not in _where(got)


def test_a_job_at_the_reclaim_limit_gets_none_nor_do_its_members_later_ones() -> None:
    snap = _owner_and_neighbour(reclaims=3)
    later = es.job("b-later", "m-b", gpus=2, submitted_at=150.0)
    snap = es.snapshot(list(snap.nodes), [*snap.pending, later], list(snap.running))
    got = _both(snap, max_reclaims_per_job=3)
    # m-a's jobs came first and took two of m-b's GPUs: neither of m-b's jobs was ahead.
    assert _where(got)["a-small-0"] == "nb"
