"""The fairness-blind baseline (FIFO, greedy backfill, best fit, no preemption) on a
tiny cluster, worked out by hand: a and b each own one 4-GPU node of model G."""

from __future__ import annotations

from scheduler.sim.baseline import fifo_backfill, run_baseline
from scheduler.sim.simulator import Simulator
from tests.unit.test_sim_helpers import START, job, node, policy, trace

NODES = (node("a-0", "a", 4), node("b-0", "b", 4))


def test_fifo_backfill_best_fit_no_preemption() -> None:
    # t=0: j1 (3 GPUs) takes a-0 (both empty: name order), j2 (1 GPU) packs onto a-0,
    # the fullest node that fits. t=10: j3 (4 GPUs) takes b-0. t=20: the gang j4 (2 x 4)
    # cannot fit; t=30: j5 (1 GPU) cannot either; at t=110 j3 ends and j5 backfills
    # b-0 ahead of j4, which waits for both nodes: t=1000.
    result = Simulator(
        NODES,
        policy(),
        trace(
            job("j1", "a", 0, 1000, 3),
            job("j2", "b", 0, 1000, 1),
            job("j3", "a", 10, 100, 4),
            job("j4", "b", 20, 100, 4, pods=2),
            job("j5", "a", 30, 50, 1),
        ),
        fifo_backfill,
    ).run()
    jobs = result.jobs
    assert jobs["j1"].nodes == ("a-0",) and jobs["j2"].nodes == ("a-0",)
    assert (jobs["j3"].first_start, jobs["j3"].nodes) == (10, ("b-0",))
    assert (jobs["j5"].first_start, jobs["j5"].nodes) == (110, ("b-0",))
    assert jobs["j4"].first_start == 1000
    assert sum(r.preemptions for r in jobs.values()) == 0


def test_baseline_never_reclaims_an_owner() -> None:
    # a's 8-GPU gang borrows b's node at t=0; b's job at t=100 waits for it to end,
    # where fairpool would reclaim. The same metrics code measures it: b waits 900 s
    # for its entitlement.
    study = run_baseline(
        NODES,
        policy(),
        trace(job("a1", "a", 0, 1000, 4, pods=2), job("b1", "b", 100, 500, 4)),
        START,
        None,
    )
    s = study.summary
    assert s["preemptions"] == 0
    assert s["reclaim_lost_fraction"] == 0
    assert s["time_to_entitlement_max_s"] == 900
    assert s["members"]["b"]["mean_wait_s"] == 900
