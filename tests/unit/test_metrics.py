"""The metrics of docs/metrics.md on tiny hand-written timelines, each worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.sim import metrics
from tests.examples import examples


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


def test_reclaim_lost_fraction() -> None:
    assert metrics.reclaim_lost_fraction(50.0, 1000.0) == 0.05
    assert metrics.reclaim_lost_fraction(0.0, 0.0) is None


def test_preemptions_per_job_max_and_p99() -> None:
    # 100 jobs: 98 never preempted, one twice, one 52 times. The p99's rank 0.99 x 99 =
    # 98.01 lies between sorted index 98 (2) and 99 (52): 2 + 0.01 x 50 = 2.5.
    figures = metrics.preemptions_per_job([0] * 98 + [2, 52])
    assert figures["preemptions_per_job_max"] == 52
    assert figures["preemptions_per_job_p99"] == pytest.approx(2.5)
    assert metrics.preemptions_per_job([]) == {
        "preemptions_per_job_max": None,
        "preemptions_per_job_p99": None,
    }


def test_time_to_entitlement_leaves_out_zero_episodes() -> None:
    figures = metrics.time_to_entitlement([0.0, 30.0, 10.0, 20.0])
    assert figures["time_to_entitlement_episodes"] == 3
    assert figures["time_to_entitlement_p50_s"] == 20
    # p99 of 10, 20, 30: rank 2 x 0.99 = 1.98 -> 20 + 0.98 x 10.
    assert figures["time_to_entitlement_p99_s"] == pytest.approx(29.8)
    assert figures["time_to_entitlement_max_s"] == 30


def test_same_jobs_ratios_and_share_later() -> None:
    # Pooled 100, 300, 200 s against standalone 200, 200, 200 s.
    same = metrics.SameJobs.of([100.0, 300.0, 200.0], [200.0, 200.0, 200.0])
    assert same.jobs == 3
    assert same.jct_ratio_mean == pytest.approx(1.0)
    # p95 pooled: rank 2 x 0.95 = 1.9 over 100, 200, 300 -> 290; standalone 200.
    assert same.jct_ratio_p95 == pytest.approx(290 / 200)
    # Only the second finished later (the third equal is not later).
    assert same.share_finished_later == pytest.approx(1 / 3)
    assert metrics.SameJobs.of([], []).jct_ratio_mean is None
    with pytest.raises(ValueError, match="pair up"):
        metrics.SameJobs.of([1.0], [])


def test_work_done_by_counts_whole_jobs_ended_in_time() -> None:
    # 2 GPUs x 100 s ended at 150, 4 x 50 ended at 300 (late), 1 x 10 never ended.
    done = metrics.work_done_by([2, 4, 1], [100.0, 50.0, 10.0], [150.0, 300.0, float("nan")], 200.0)
    assert done == 200.0


def test_worse_off_pooled() -> None:
    # Within 5 % or 1 h of standalone is not worse off; the larger bound applies.
    assert metrics.worse_off_pooled(3600.0 + 3599.0, 3600.0, 0.0) is False
    assert metrics.worse_off_pooled(3600.0 + 3601.0, 3600.0, 0.0) is True
    assert metrics.worse_off_pooled(104_000.0, 100_000.0, 0.0) is False
    assert metrics.worse_off_pooled(106_000.0, 100_000.0, 0.0) is True
    # Less own work done within the window is worse off whatever the JCT.
    assert metrics.worse_off_pooled(10.0, 100.0, -0.5) is True
    assert metrics.worse_off_pooled(None, 100.0, 0.0) is None


def _pivoted(timeline: pd.DataFrame, end: float) -> dict[str, np.ndarray]:
    """The grid's values by definition: per field, the timeline pivoted to one column per
    (member, model), carried forward, 0 before a key's first row."""
    frame = timeline[timeline["time"] <= end].drop_duplicates(
        ["time", "member", "gpu_model"], keep="last"
    )
    keys = sorted(set(zip(frame["member"], frame["gpu_model"], strict=True)))
    times = sorted(frame["time"].unique())
    columns = pd.MultiIndex.from_tuples(keys, names=["member", "gpu_model"])
    out = {}
    for field in metrics.TIMELINE_FIELDS:
        wide = frame.pivot(index="time", columns=["member", "gpu_model"], values=field)
        wide = wide.reindex(index=times, columns=columns).ffill().fillna(0.0)
        out[field] = wide.to_numpy(dtype=float)
    return out


_KEYS = [("a", "G"), ("a", "H"), ("b", "G"), ("c", "H")]


@settings(max_examples=examples(200), deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 12),
            st.sampled_from(_KEYS),
            st.integers(0, 16),
            st.one_of(st.floats(0, 16), st.just(math.nan)),
        ),
        max_size=40,
    ),
    end=st.integers(0, 14),
)
def test_grid_carries_each_keys_last_value_as_a_pivot_would(
    rows: list[tuple[int, tuple[str, str], int, float]], end: int
) -> None:
    """Repeated instants (last wins), keys that start late, rows past the end, and a
    missing fair share (carrying the one before it): the same arrays as the pivot."""
    timeline = metrics.timeline_frame(
        [
            row(float(t), member, allocated, model=model, fair=fair, pending=allocated % 3)
            for t, (member, model), allocated, fair in rows
        ]
    )
    g = metrics.grid(timeline, end=end)
    expected = _pivoted(timeline, end)
    assert set(g.values) == set(expected)
    for field, values in expected.items():
        np.testing.assert_array_equal(g.values[field], values, err_msg=field)
