"""Backfill does not cost a blocked job its place within the entitlement: the member's
pods on others' nodes that started after the job was submitted do not count against it
(`ordering.LateBorrowing`), within the minimum runtime plus the grace period after the
submission."""

from __future__ import annotations

from bisect import bisect_right

from scheduler.engine import schedule
from scheduler.engine.allocation import classify
from scheduler.engine.decisions import Decisions
from scheduler.engine.ordering import LateBorrowing, _after
from tests.unit.engine_strategies import job, node, policy, running, snapshot

POL = policy(["lab-a", "lab-b"], min_runtime_seconds=600, reclaim_grace_period_seconds=30)


def _case(borrowed_start: float) -> Decisions:
    """lab-a borrows lab-b's only node with an 8-GPU job; lab-b's 8-GPU job, submitted at
    100, waits; meanwhile lab-b runs 4 GPUs on lab-a's node, started at
    `borrowed_start`."""
    nodes = [node("a1", "lab-a", gpus=8), node("b1", "lab-b", gpus=8)]
    run = [
        running("a-big", "lab-a", "b1", gpus=8, started_at=0),
        running("a-own", "lab-a", "a1", gpus=4, started_at=0),
        running("b-extra", "lab-b", "a1", gpus=4, started_at=borrowed_start),
    ]
    pending = [job("b-gang", "lab-b", gpus=8, submitted_at=100)]
    return schedule(snapshot(nodes, pending, run), POL)


def test_work_that_overtook_the_job_elsewhere_does_not_count_against_it() -> None:
    # b-extra started after b-gang was submitted: standalone, b-gang would have run
    # first on b1, so it is still within lab-b's entitlement and gets b1 back.
    d = _case(borrowed_start=500)
    assert [p.pod_uid for p in d.preemptions] == ["a-big"]
    assert [(n.job_id, n.nodes) for n in d.nominations] == [("b-gang", {"b-gang-0": "b1"})]


def test_work_started_long_after_the_job_was_submitted_counts() -> None:
    # Beyond the minimum runtime plus the grace period (630 s) after the submission the
    # wait was no longer for a borrower's pod to become reclaimable: it counts again.
    d = _case(borrowed_start=100 + 631)
    assert d.preemptions == ()


def test_work_started_before_the_job_was_submitted_counts() -> None:
    # b-extra was running before b-gang arrived: lab-b would hold 12 of its 8 with it,
    # and lab-a is no further above its fair share than lab-b would be.
    d = _case(borrowed_start=50)
    assert d.preemptions == ()
    assert "b-gang" in d.explanations


def test_late_borrowing_counts_only_others_nodes_after_the_instant() -> None:
    run = [
        running("own", "m", "m-node", gpus=2, started_at=300),
        running("early", "m", "x-node", gpus=1, started_at=10),
        running("late", "m", "x-node", gpus=4, started_at=300),
        running("later", "m", "y-node", gpus=8, started_at=900),
        running("gone", "m", "x-node", gpus=16, started_at=900, terminating=True),
    ]
    node_of = {"m-node": ("H", "m"), "x-node": ("H", "x"), "y-node": ("H", None)}
    late = LateBorrowing(classify(tuple(run), node_of, {}).late)
    assert late.after(("m", "H"), 0, 10_000) == 13
    assert late.after(("m", "H"), 10, 10_000) == 12
    assert late.after(("m", "H"), 300, 10_000) == 8
    assert late.after(("m", "H"), 900, 10_000) == 0
    assert late.after(("m", "A"), 0, 10_000) == 0
    # Only within the window after the submission.
    assert late.after(("m", "H"), 0, 300) == 5
    assert late.after(("m", "H"), 0, 299) == 1


def test_at_least_answers_as_after_does() -> None:
    # The shortcut (fewer GPUs on others' nodes in all than asked) must not change an
    # answer, at the total's edge included.
    run = [
        running("early", "m", "x-node", gpus=1, started_at=10),
        running("late", "m", "x-node", gpus=4, started_at=300),
        running("later", "m", "y-node", gpus=8, started_at=900),
    ]
    node_of = {"x-node": ("H", "x"), "y-node": ("H", None)}
    late = LateBorrowing(classify(tuple(run), node_of, {}).late)
    for key in (("m", "H"), ("m", "A"), ("z", "H")):
        for submitted in (0, 10, 300, 899, 900):
            for window in (0, 299, 300, 10_000):
                for gpus in range(0, 15):
                    expected = late.after(key, submitted, window) >= gpus
                    assert late.at_least(key, submitted, window, gpus) is expected


def test_after_counts_as_bisect_does() -> None:
    # `ordering._after` is `bisect_right` written as a loop (for the compiled engine):
    # equal times, the ends and an empty list included.
    cases = [[], [5.0], [1.0, 1.0, 1.0], [0.0, 2.5, 2.5, 7.0, 9.0, 9.0, 12.0]]
    for times in cases:
        for t in (-1.0, 0.0, 1.0, 2.5, 3.0, 9.0, 12.0, 13.0):
            assert _after(times, t) == bisect_right(times, t), (times, t)
