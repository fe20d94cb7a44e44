"""The share book moves the last cycle's pending demand by the jobs added and removed
(`shares._moved_demand`) when it can; it must give exactly what working the demand out
afresh gives, and the cycle must see the same jobs that can never run."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.model import Policy
from scheduler.engine import shares
from scheduler.engine.jobinfo import QueueChange
from scheduler.engine.placement import ClusterState
from scheduler.engine.runnable import NeverRuns
from scheduler.engine.shares import ShareBook, _pending_demand, build
from scheduler.engine.snapshot import PendingJob, Snapshot
from tests.examples import examples
from tests.unit.engine_strategies import A100, H100, job, node, policy, scenarios, snapshot


def _afresh(snap: Snapshot, pol: Policy, book: ShareBook) -> tuple[object, ...]:
    """The demand worked out from nothing for the book's queue."""
    static = shares._static(snap.nodes, pol)
    never = NeverRuns(ClusterState(snap), pol, static.entitlement, static.models)
    in_order = sorted(book.infos, key=lambda i: i.queue_key)
    repeated = len(book.info) != len(book.infos)
    pending, job_model, _, never_jobs = _pending_demand(
        in_order, static, book.allocation, repeated, never
    )
    return sorted(pending.items()), sorted(job_model.items()), never_jobs > 0


def _kept(book: ShareBook) -> tuple[object, ...]:
    return sorted(book.pending.items()), sorted(book.job_model.items()), book.never_runs.found


@st.composite
def _next_pending(
    draw: st.DrawFn, pending: list[PendingJob], members: list[str], k: int
) -> list[PendingJob]:
    """The queue a cycle later: some jobs gone (started or deleted), new ones anywhere
    in the snapshot's order, some naming a model, asking no GPU, or more than any node
    has (they can never run)."""
    out = [j for j in pending if draw(st.integers(0, 4))]
    for n in range(draw(st.integers(0, 3))):
        extra = {}
        if draw(st.booleans()):
            extra["gpu_model"] = draw(st.sampled_from([H100, A100]))
        added = job(
            f"c{k}-{n}",
            draw(st.sampled_from(members)),
            gpus=draw(st.sampled_from([0, 1, 2, 8, 64])),
            submitted_at=float(draw(st.integers(0, 30))),
            **extra,
        )
        out.insert(draw(st.integers(0, len(out))), added)
    return out


@settings(max_examples=examples(200), deadline=None)
@given(st.data())
def test_moving_the_last_demand_gives_what_working_it_out_afresh_gives(
    data: st.DataObject,
) -> None:
    pol, snap = data.draw(scenarios())
    members = pol.member_names()
    shares._LAST_DEMAND.clear()
    pending = list(snap.pending)
    running = list(snap.running)
    for k in range(6):
        snap = dataclasses.replace(snap, pending=tuple(pending), running=tuple(running))
        book = build(snap, pol)
        assert _kept(book) == _afresh(snap, pol, book)
        assert book.queued == sorted(book.queued, key=lambda i: i.queue_key)
        pending = data.draw(_next_pending(pending, members, k))
        if running and data.draw(st.booleans()):
            running.pop(data.draw(st.integers(0, len(running) - 1)))


def test_a_few_jobs_added_and_removed_move_the_last_demand() -> None:
    """Two models, every job naming its own: the second cycle's demand is moved, and a
    job that can never run (more GPUs than a node has) is still known to the cycle."""
    pol = policy()
    nodes = [node("a1", "lab-a", model=H100), node("b1", "lab-b", model=A100)]
    first = [
        job("j1", "lab-a", gpus=2, gpu_model=H100),
        job("j2", "lab-b", gpus=4, gpu_model=A100),
        job("j3", "lab-a", gpus=1, gpu_model=A100),
        job("j4", "lab-b", gpus=1, gpu_model=H100),
    ]
    shares._LAST_DEMAND.clear()
    snap = snapshot(nodes, first)
    before = build(snap, pol)
    assert not before.never_runs.found
    second = [*first[1:], job("j5", "lab-a", gpus=64, gpu_model=H100)]
    snap = dataclasses.replace(snap, pending=tuple(second))  # the same nodes
    after = build(snap, pol)
    demand = shares._LAST_DEMAND[0]
    assert demand.moved
    assert after.never_runs is not before.never_runs  # `found` is each cycle's own
    assert after.never_runs.never is before.never_runs.never  # the answers are shared
    assert after.never_runs.found and not before.never_runs.found
    assert sorted(after.pending.items()) == [
        (("lab-a", A100), 1),
        (("lab-b", A100), 4),
        (("lab-b", H100), 1),
    ]
    assert _kept(after) == _afresh(snap, pol, after)


def test_a_job_naming_no_model_among_several_is_worked_out_afresh() -> None:
    """Its model is the one with the most GPUs free after the jobs before it: moved
    sums cannot know that."""
    pol = policy()
    nodes = [node("a1", "lab-a", model=H100), node("b1", "lab-b", model=A100)]
    first = [job("j1", "lab-a", gpus=2, gpu_model=H100), job("j2", "lab-b", gpus=1)]
    shares._LAST_DEMAND.clear()
    snap = snapshot(nodes, first)
    build(snap, pol)
    snap = dataclasses.replace(snap, pending=(*first, job("j3", "lab-a", gpus=1, gpu_model=A100)))
    book = build(snap, pol)
    assert not shares._LAST_DEMAND[0].moved
    assert _kept(book) == _afresh(snap, pol, book)


def test_queue_change_names_the_jobs_added_and_removed() -> None:
    pol = policy()
    nodes = [node("a1", "lab-a", model=H100)]
    first = [job("j1", "lab-a"), job("j2", "lab-b"), job("j3", "lab-a")]
    shares._LAST_DEMAND.clear()
    snap = snapshot(nodes, first)
    before = build(snap, pol)
    book = build(dataclasses.replace(snap, pending=(first[0], first[2], job("j4", "lab-b"))), pol)
    change = shares._LAST_DEMAND[0].queue.change
    assert isinstance(change, QueueChange)
    assert change.base is before.queued
    assert [i.job.job_id for i in change.removed] == ["j2"]
    assert [i.job.job_id for i in change.added] == ["j4"]
    assert [i.job.job_id for i in book.queued] == ["j1", "j3", "j4"]
