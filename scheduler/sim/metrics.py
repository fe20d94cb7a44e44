"""The metrics of docs/metrics.md, computed from a simulation's allocation
timeline and job table. Pure functions over pandas frames, so tests can feed them
hand-written timelines.

The timeline frame has one row per change: `time, member, gpu_model` and the
`TIMELINE_FIELDS`; a row holds until the next row of the same (member, gpu_model), and
the last one until the end of the window. Every (member, gpu_model) needs a row at the
window start.

Definitions (words of docs/glossary.md) and the choices left open:
- borrowed = max(0, allocated - entitlement); used_on_others_hardware = GPUs of the
  member's pods on nodes another member owns; lent = GPUs of other members' pods on the
  member's own nodes. Pods in their grace period count as allocated (they hold the GPUs).
- utilization = allocated GPU-seconds / available GPU-seconds over the submission window
  (first to last submission): the stretch where the trace offers work, so neither the
  drain after the last submission nor an idle lead-in dilutes it. None when the window
  is empty (one submission instant).
- utilization_while_pending = the same ratio over only the instants, anywhere in the
  run, when some pod waits: below 1 it means GPUs stayed idle while work waited
  (fragmentation, gangs, limits, grace periods). None when nothing ever waited.
- makespan_s = from the first submission to the last job's end.
- fairness_jain: at each instant, the members with pending work (summed over GPU
  models); when there are at least 2, Jain's index of x_i = min(1, allocated_i /
  fair_share_i) with allocated and fair share summed over models (x_i = 1 when the fair
  share is 0, and the index is 1 when every x_i is 0: all are equally served). The
  time-average over those instants; None when there were none (no contention).
- entitlement_violation_gpu_s: per member and model, while the member has pending work,
  deficit = max(0, min(entitlement, demand) - allocated). An episode is a maximal
  stretch of positive deficit; episodes longer than `reclaim grace + 10 s` count in full
  (the integral of the deficit over the episode), shorter ones not at all.
- wait = first start - submit; JCT = end - submit; both over completed jobs; p95 by
  linear interpolation. None when a member completed no job.
- reclaim_lost_fraction = GPU-seconds lost to reclaim / GPU-seconds allocated (the lost
  work was allocated too, so it is a share of what was used); None when nothing was.
- preemptions per job: max and p99 over every job of the trace (0 for jobs never
  preempted, so a rare offender shows in the max, not in the p99).
- time to entitlement: the lengths of the owed episodes the simulator measures
  (`scheduler.sim.waiting`); p50, p99, max over episodes longer than 0 s.
- same jobs pooled and standalone: over the jobs completed in both replays, the ratio
  of the pooled to the standalone mean JCT, the same for the p95 JCT, and the share of
  those jobs whose pooled end is later than their standalone end.
- pooling dividend = the member's own work (GPUs x duration) of jobs completed by the
  end of the submission window, pooled minus standalone. Lost work is not in it: a job
  preempted and restarted counts its work once, when it completes.
- worse off pooled: the sharing incentive fails: the pooled mean JCT of the same jobs is
  above max(1.05 x standalone, standalone + 1 h), or the pooling dividend is negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

TIMELINE_FIELDS = (
    "allocated",
    "entitlement",
    "fair_share",
    "demand",
    "pending",
    "borrowed",
    "lent",
    "used_on_others_hardware",
)
TIMELINE_COLUMNS = ("time", "member", "gpu_model", *TIMELINE_FIELDS)
VIOLATION_SLACK_S = 10.0


@dataclass(frozen=True)
class Grid:
    """A timeline made rectangular: the value of each field for each (member, model)
    key over consecutive segments [times[i], times[i] + dt[i])."""

    times: np.ndarray
    dt: np.ndarray
    keys: list[tuple[str, str]]
    values: dict[str, np.ndarray]
    """field -> array of shape (segments, keys)."""

    def member_columns(self, member: str) -> list[int]:
        return [i for i, (m, _) in enumerate(self.keys) if m == member]

    def members(self) -> list[str]:
        return sorted({m for m, _ in self.keys})


def timeline_frame(rows: Sequence[tuple[object, ...]]) -> pd.DataFrame:
    if not rows:
        frame = pd.DataFrame(rows, columns=list(TIMELINE_COLUMNS))
        return frame.astype({"time": "float64", "fair_share": "float64"})
    # Column by column: pandas infers each column of a list of rows through an array of
    # Python objects, twice as slow on a month's replay (a hundred thousand rows).
    columns = zip(TIMELINE_COLUMNS, zip(*rows, strict=True), strict=True)
    return pd.DataFrame(
        {
            name: pd.array(values, dtype="str")
            if name in ("member", "gpu_model")
            else np.array(values, dtype=np.float64 if name in ("time", "fair_share") else None)
            for name, values in columns
        }
    )


def grid(timeline: pd.DataFrame, end: float) -> Grid:
    """The timeline as segments over [first time, end]. Rows at one instant: last wins."""
    frame = timeline[timeline["time"] <= end].drop_duplicates(
        ["time", "member", "gpu_model"], keep="last"
    )
    members, models = frame["member"].tolist(), frame["gpu_model"].tolist()
    keys = sorted({(str(m), str(g)) for m, g in zip(members, models, strict=True)})
    at = frame["time"].to_numpy(dtype=float)
    times = np.unique(at)
    # Each row's cell, then each field's value carried down its column until the next
    # row of that key (0 before the first): one array per field, not a pivot each.
    column_of = {key: i for i, key in enumerate(keys)}
    row = np.searchsorted(times, at)
    column = np.fromiter(
        (column_of[(str(m), str(g))] for m, g in zip(members, models, strict=True)),
        dtype=np.intp,
        count=len(at),
    )
    fields = {field: frame[field].to_numpy(dtype=float) for field in TIMELINE_FIELDS}
    values = _carried(fields, row, column, (len(times), len(keys)))
    dt = np.diff(np.append(times, max(end, times[-1] if len(times) else end)))
    return Grid(times=times, dt=dt, keys=keys, values=values)


def _carried(
    values: dict[str, np.ndarray], row: np.ndarray, column: np.ndarray, shape: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Per field, a (time, key) array holding each row's value from its time on until the
    next row of its key, and 0 before the key's first row. Where each cell's value comes
    from depends only on which cells have rows, so it is worked out once for all fields
    (a field with a missing value, which carries the one before it, gets its own)."""
    times, keys = shape
    cell = row * keys + column
    has = np.zeros(times * keys, dtype=bool)
    has[cell] = True
    source = _last_source(has, times, keys)
    out: dict[str, np.ndarray] = {}
    for field, value in values.items():
        cells = np.zeros(times * keys)
        cells[cell] = value
        missing = np.isnan(value)
        if missing.any():
            known = has.copy()
            known[cell[missing]] = False
            cells[cell[missing]] = 0.0
            out[field] = cells[_last_source(known, times, keys)].reshape(times, keys)
        else:
            out[field] = cells[source].reshape(times, keys)
    return out


def _last_source(has: np.ndarray, times: int, keys: int) -> np.ndarray:
    """For each cell of a (time, key) grid, flattened: the last cell at or before it in
    its column that `has` a value (the column's first cell when none, which then holds
    0)."""
    rows = np.where(has.reshape(times, keys), np.arange(times)[:, np.newaxis], 0)
    np.maximum.accumulate(rows, axis=0, out=rows)
    return (rows * keys + np.arange(keys)).ravel()


def integral(g: Grid, field: str, columns: list[int] | None = None) -> float:
    """Σ value x duration (GPU-seconds for GPU fields) over the given key columns."""
    data = g.values[field] if columns is None else g.values[field][:, columns]
    return float((data.sum(axis=1) * g.dt).sum())


def integral_until(g: Grid, field: str, until: float, columns: list[int] | None = None) -> float:
    """Like `integral`, only over [start, until]."""
    return integral_between(g, field, -np.inf, until, columns)


def integral_between(
    g: Grid, field: str, since: float, until: float, columns: list[int] | None = None
) -> float:
    """Like `integral`, only over [since, until]."""
    lo = np.maximum(g.times, since)
    dt = np.clip(np.minimum(g.times + g.dt, until) - lo, 0.0, None)
    data = g.values[field] if columns is None else g.values[field][:, columns]
    return float((data.sum(axis=1) * dt).sum())


def utilization(g: Grid, capacity_gpus: int, since: float, until: float) -> float | None:
    """Allocated over available GPU-seconds in [since, until] (the submission window)."""
    window = until - since
    if capacity_gpus <= 0 or window <= 0:
        return None
    return integral_between(g, "allocated", since, until) / (capacity_gpus * window)


def utilization_while_pending(g: Grid, capacity_gpus: int) -> float | None:
    """Allocated over available GPU-seconds, only while some pod waits."""
    waiting = g.values["pending"].sum(axis=1) > 0
    window = float(g.dt[waiting].sum())
    if capacity_gpus <= 0 or window <= 0:
        return None
    allocated = float((g.values["allocated"][waiting].sum(axis=1) * g.dt[waiting]).sum())
    return allocated / (capacity_gpus * window)


def makespan_s(jobs: pd.DataFrame) -> float | None:
    """From the first submission to the last job's end (over a job table with `submit_s`
    and `end_s`); None when no job ended."""
    if jobs.empty or jobs["end_s"].isna().all():
        return None
    return float(jobs["end_s"].max() - jobs["submit_s"].min())


def submission_window(jobs: pd.DataFrame) -> tuple[float, float]:
    """(first, last) submission time of a job table with `submit_s`; (0, 0) when empty."""
    if jobs.empty:
        return 0.0, 0.0
    return float(jobs["submit_s"].min()), float(jobs["submit_s"].max())


def jain(x: np.ndarray) -> float:
    return float(jain_rows(x[np.newaxis, :], np.array([len(x)]))[0])


def jain_rows(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Jain's index of each row of `x`, `n` values counted in each (the others are 0):
    (Σx)² / (n Σx²), 1 when every value is 0."""
    total_sq = (x * x).sum(axis=1)
    nonzero = total_sq > 0
    return np.where(nonzero, x.sum(axis=1) ** 2 / (n * np.where(nonzero, total_sq, 1.0)), 1.0)


def fairness_jain(g: Grid) -> float | None:
    members = g.members()
    if len(members) < 2:
        return None
    columns = [g.member_columns(m) for m in members]

    def per_member(field: str) -> np.ndarray:
        return np.stack([g.values[field][:, c].sum(axis=1) for c in columns], axis=1)

    allocated = per_member("allocated")
    fair = per_member("fair_share")
    waiting = per_member("pending") > 0
    # Every instant at once (a month has tens of thousands): `jain` of each row's
    # waiting members, the others counted as 0 in both sums.
    counted = waiting.sum(axis=1)
    keep = (g.dt > 0) & (counted >= 2)
    x = np.where(fair > 0, np.minimum(1.0, allocated / np.where(fair > 0, fair, 1.0)), 1.0)
    index = jain_rows(np.where(waiting, x, 0.0)[keep], counted[keep])
    dt = g.dt[keep]
    total = float(dt.sum())
    return float((index * dt).sum()) / total if total > 0 else None


def entitlement_violation_gpu_s(g: Grid, grace_period_s: float) -> float:
    threshold = grace_period_s + VIOLATION_SLACK_S
    floor = np.minimum(g.values["entitlement"], g.values["demand"])
    deficit = np.clip(floor - g.values["allocated"], 0.0, None)
    deficit = np.where(g.values["pending"] > 0, deficit, 0.0)
    keep = g.dt > 0
    # Key by key, the runs of instants with a deficit are its episodes: each such instant
    # gets its episode's number, and `bincount` adds up each episode's seconds and
    # GPU-seconds in time order (the order a loop over the instants would add them in).
    kept = deficit[keep]
    rows, keys = kept.shape
    deficit = kept.T.ravel()
    dt = np.tile(g.dt[keep], keys)
    inside = deficit > 0
    before = np.roll(inside, 1)
    before[:: rows or 1] = False  # a key's first instant continues no run
    episode = np.cumsum(inside & ~before) - 1
    seconds = np.bincount(episode[inside], weights=dt[inside])
    gpu_s = np.bincount(episode[inside], weights=(deficit * dt)[inside])
    total = 0.0
    for value in gpu_s[seconds > threshold]:
        total += float(value)
    return total


def _mean(values: pd.Series) -> float | None:
    return float(values.mean()) if len(values) else None


def _p95(values: pd.Series) -> float | None:
    return float(np.percentile(values.to_numpy(dtype=float), 95)) if len(values) else None


def job_stats(jobs: pd.DataFrame) -> dict[str, float | int | None]:
    """Over a job table with `completed`, `wait_s`, `jct_s` columns."""
    done = jobs[jobs["completed"]]
    return {
        "jobs_completed": len(done),
        "mean_wait_s": _mean(done["wait_s"]),
        "p95_wait_s": _p95(done["wait_s"]),
        "mean_jct_s": _mean(done["jct_s"]),
    }


def reclaim_lost_fraction(lost_gpu_s: float, used_gpu_s: float) -> float | None:
    return lost_gpu_s / used_gpu_s if used_gpu_s > 0 else None


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float | None:
    """Linear-interpolation percentile; None over no value."""
    data = np.asarray(values, dtype=float)
    return float(np.percentile(data, q)) if data.size else None


def preemptions_per_job(preemptions: Sequence[int] | pd.Series) -> dict[str, float | None]:
    data = np.asarray(preemptions, dtype=float)
    return {
        "preemptions_per_job_max": float(data.max()) if data.size else None,
        "preemptions_per_job_p99": percentile(data, 99),
    }


def time_to_entitlement(durations: Sequence[float]) -> dict[str, float | int | None]:
    """Over owed episodes' lengths in seconds; episodes of 0 s are no wait at all."""
    data = np.asarray([d for d in durations if d > 0], dtype=float)
    return {
        "time_to_entitlement_episodes": int(data.size),
        "time_to_entitlement_p50_s": percentile(data, 50),
        "time_to_entitlement_p99_s": percentile(data, 99),
        "time_to_entitlement_max_s": float(data.max()) if data.size else None,
    }


@dataclass(frozen=True)
class SameJobs:
    """Pooled against standalone, over the jobs completed in both replays."""

    jobs: int
    jct_ratio_mean: float | None
    jct_ratio_p95: float | None
    share_finished_later: float | None

    @staticmethod
    def of(pooled_jct: Sequence[float], standalone_jct: Sequence[float]) -> SameJobs:
        """Pairs of JCTs of the same jobs (same submit time, so a later end is a larger
        JCT)."""
        pooled = np.asarray(pooled_jct, dtype=float)
        alone = np.asarray(standalone_jct, dtype=float)
        if pooled.size != alone.size:
            raise ValueError("pooled and standalone JCTs must pair up job by job")
        if not pooled.size:
            return SameJobs(0, None, None, None)
        mean_alone = float(alone.mean())
        p95_alone = float(np.percentile(alone, 95))
        return SameJobs(
            jobs=int(pooled.size),
            jct_ratio_mean=float(pooled.mean()) / mean_alone if mean_alone > 0 else None,
            jct_ratio_p95=float(np.percentile(pooled, 95)) / p95_alone if p95_alone > 0 else None,
            share_finished_later=float((pooled > alone).mean()),
        )


def work_done_by(
    gpus: Sequence[int], duration_s: Sequence[float], end_s: Sequence[float], until: float
) -> float:
    """GPU-seconds of work (GPUs x duration) of the jobs that ended by `until`."""
    g = np.asarray(gpus, dtype=float)
    d = np.asarray(duration_s, dtype=float)
    e = np.asarray(end_s, dtype=float)
    done = ~np.isnan(e) & (e <= until)
    return float((g[done] * d[done]).sum())


def worse_off_pooled(
    pooled_mean_jct_s: float | None,
    standalone_mean_jct_s: float | None,
    dividend_gpu_h: float | None,
) -> bool | None:
    """The sharing incentive fails for the member (see the module docstring)."""
    if pooled_mean_jct_s is None or standalone_mean_jct_s is None or dividend_gpu_h is None:
        return None
    bound = max(1.05 * standalone_mean_jct_s, standalone_mean_jct_s + 3600.0)
    return pooled_mean_jct_s > bound or dividend_gpu_h < -1e-9


def hours(gpu_seconds: float) -> float:
    return gpu_seconds / 3600.0
