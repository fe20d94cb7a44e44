"""The metrics of docs/metrics.md on tiny hand-written timelines, each worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from scheduler.sim import metrics


def row(
    t: float,
    member: str,
    allocated: int,
    *,
    model: str = "G",
    entitlement: int = 4,
    fair: float = 4.0,
    demand: int = 0,
    pending: int = 0,
    borrowed: int = 0,
    lent: int = 0,
    elsewhere: int = 0,
) -> tuple[object, ...]:
    return (
        t, member, model, allocated, entitlement, fair, demand, pending, borrowed, lent, elsewhere
    )  # fmt: skip


def test_utilization_is_allocated_over_available() -> None:
    # 4 GPUs for 20 s = 80 GPU-s available; a holds 2 GPUs for 10 s then 4 for 10 s.
    timeline = metrics.timeline_frame(
        [row(0, "a", 2), row(0, "b", 0), row(10, "a", 4), row(20, "a", 0)]
    )
    g = metrics.grid(timeline, end=20)
    assert metrics.utilization(g, capacity_gpus=4, since=0, until=20) == pytest.approx(60 / 80)
    # Over a submission window [5, 15]: 2 x 5 + 4 x 5 = 30 of 40 GPU-s.
    assert metrics.utilization(g, capacity_gpus=4, since=5, until=15) == pytest.approx(30 / 40)
    assert metrics.utilization(g, capacity_gpus=4, since=5, until=5) is None
    assert metrics.integral(g, "allocated", g.member_columns("a")) == pytest.approx(60)
    assert metrics.integral_until(g, "allocated", 15) == pytest.approx(20 + 20)
    assert metrics.integral_between(g, "allocated", 5, 15) == pytest.approx(10 + 20)


def test_utilization_while_pending_only_counts_waiting_instants() -> None:
    # 4 GPUs. [0,10): a holds 4, b waits for 2 (contended). [10,20): b holds 2, nothing
    # waits. [20,30): nothing held, a waits for 8 it can never get (say, a gang).
    timeline = metrics.timeline_frame(
        [
            row(0, "a", 4),
            row(0, "b", 0, pending=2),
            row(10, "a", 0),
            row(10, "b", 2),
            row(20, "b", 0),
            row(20, "a", 0, pending=8),
        ]
    )
    g = metrics.grid(timeline, end=30)
    # While pending: (4 x 10 + 0 x 10) / (4 x 20); overall over [0, 30]: 60 / 120.
    assert metrics.utilization_while_pending(g, capacity_gpus=4) == pytest.approx(0.5)
    assert metrics.utilization(g, capacity_gpus=4, since=0, until=30) == pytest.approx(0.5)
    # Over [0, 20] they differ: 60 / 80 overall, still 40 / 80 while pending.
    assert metrics.utilization(g, capacity_gpus=4, since=0, until=20) == pytest.approx(0.75)
    quiet = metrics.grid(metrics.timeline_frame([row(0, "a", 2)]), end=10)
    assert metrics.utilization_while_pending(quiet, capacity_gpus=4) is None


def test_makespan_runs_from_first_submission_to_last_end() -> None:
    jobs = pd.DataFrame({"submit_s": [5.0, 7.0, 9.0], "end_s": [50.0, math.nan, 30.0]})
    assert metrics.makespan_s(jobs) == 45.0
    assert metrics.submission_window(jobs) == (5.0, 9.0)
    assert metrics.makespan_s(jobs.assign(end_s=math.nan)) is None


def test_rows_at_one_instant_keep_the_last() -> None:
    timeline = metrics.timeline_frame([row(0, "a", 1), row(0, "a", 3)])
    g = metrics.grid(timeline, end=10)
    assert metrics.integral(g, "allocated") == pytest.approx(30)


def test_fairness_jain_averages_only_contended_instants() -> None:
    # [0,10): both pending, a at its fair share (x=1), b at 0 (x=0): J = 1/(2*1) = 0.5
    # [10,30): both pending and both at their fair share: J = 1
    # [30,40): only a pending: not counted.  Average: (0.5*10 + 1*20) / 30.
    timeline = metrics.timeline_frame(
        [
            row(0, "a", 2, fair=2, pending=1),
            row(0, "b", 0, fair=2, pending=2),
            row(10, "b", 2, fair=2, pending=1),
            row(30, "b", 2, fair=2, pending=0),
        ]
    )
    g = metrics.grid(timeline, end=40)
    assert metrics.fairness_jain(g) == pytest.approx(25 / 30)


def test_fairness_sums_models_and_caps_at_one() -> None:
    # a: 6 of fair 4 on G plus 0 of 0 on H -> min(1, 6/4) = 1; b: 1 of fair 2 -> 0.5.
    # J = (1.5)^2 / (2 * (1 + 0.25)) = 0.9
    timeline = metrics.timeline_frame(
        [
            row(0, "a", 6, fair=4, pending=1),
            row(0, "a", 0, model="H", fair=0, pending=0),
            row(0, "b", 1, fair=2, pending=1),
            row(0, "b", 0, model="H", fair=0),
        ]
    )
    assert metrics.fairness_jain(metrics.grid(timeline, end=5)) == pytest.approx(0.9)


def test_fairness_is_none_without_contention() -> None:
    timeline = metrics.timeline_frame([row(0, "a", 2, pending=3), row(0, "b", 0)])
    assert metrics.fairness_jain(metrics.grid(timeline, end=100)) is None


def test_jain_index() -> None:
    import numpy as np

    assert metrics.jain(np.array([1.0, 1.0, 1.0])) == pytest.approx(1.0)
    assert metrics.jain(np.array([1.0, 0.0, 0.0, 0.0])) == pytest.approx(0.25)
    assert metrics.jain(np.array([0.0, 0.0])) == 1.0


def test_entitlement_violation_counts_only_long_episodes() -> None:
    # grace 30 s -> only episodes longer than 40 s count.
    # a: entitlement 4, demand 4, pending. [0,30) allocated 0: a 30 s episode, ignored
    #    (a normal reclaim). [30,100) allocated 4: no deficit. [100,200) allocated 2:
    #    deficit 2 for 100 s -> 200 GPU-s.
    # b: deficit 1 on [0,20) then 2 on [20,50): one 50 s episode -> 20 + 60 = 80 GPU-s.
    # c: deficit 4 for 100 s but nothing pending (demand met by design): not counted.
    timeline = metrics.timeline_frame(
        [
            row(0, "a", 0, demand=4, pending=4),
            row(30, "a", 4, demand=4, pending=1),
            row(100, "a", 2, demand=4, pending=2),
            row(0, "b", 2, demand=3, pending=1),
            row(20, "b", 1, demand=3, pending=2),
            row(50, "b", 3, demand=3, pending=0),
            row(0, "c", 0, demand=4, pending=0),
        ]
    )
    g = metrics.grid(timeline, end=200)
    assert metrics.entitlement_violation_gpu_s(g, grace_period_s=30) == pytest.approx(280)
    # With a 45 s grace period the 50 s episode of b no longer counts.
    assert metrics.entitlement_violation_gpu_s(g, grace_period_s=45) == pytest.approx(200)


def test_violation_floor_is_min_of_entitlement_and_demand() -> None:
    # Entitlement 8 but demand only 3: the floor is 3; allocated 1 -> deficit 2 for 60 s.
    timeline = metrics.timeline_frame([row(0, "a", 1, entitlement=8, demand=3, pending=2)])
    g = metrics.grid(timeline, end=60)
    assert metrics.entitlement_violation_gpu_s(g, grace_period_s=30) == pytest.approx(120)


def test_job_stats_over_completed_jobs() -> None:
    jobs = pd.DataFrame(
        {
            "completed": [True, True, True, True, False],
            "wait_s": [0.0, 10.0, 20.0, 30.0, math.nan],
            "jct_s": [100.0, 110.0, 120.0, 130.0, math.nan],
        }
    )
    stats = metrics.job_stats(jobs)
    assert stats["jobs_completed"] == 4
    assert stats["mean_wait_s"] == pytest.approx(15.0)
    # Linear interpolation: position 0.95 * 3 = 2.85 -> 20 + 0.85 * 10.
    assert stats["p95_wait_s"] == pytest.approx(28.5)
    assert stats["mean_jct_s"] == pytest.approx(115.0)


def test_job_stats_of_nothing_are_none() -> None:
    empty = pd.DataFrame({"completed": pd.Series([], dtype=bool), "wait_s": [], "jct_s": []})
    stats = metrics.job_stats(empty)
    assert stats == {
        "jobs_completed": 0,
        "mean_wait_s": None,
        "p95_wait_s": None,
        "mean_jct_s": None,
    }
