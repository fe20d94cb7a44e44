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
    frame = pd.DataFrame(rows, columns=list(TIMELINE_COLUMNS))
    return frame.astype({"time": "float64", "fair_share": "float64"})


def grid(timeline: pd.DataFrame, end: float) -> Grid:
    """The timeline as segments over [first time, end]. Rows at one instant: last wins."""
    frame = timeline[timeline["time"] <= end].drop_duplicates(
        ["time", "member", "gpu_model"], keep="last"
    )
    keys = sorted(
        {(str(m), str(g)) for m, g in zip(frame["member"], frame["gpu_model"], strict=True)}
    )
    times = np.array(sorted(frame["time"].unique()), dtype=float)
    values: dict[str, np.ndarray] = {}
    index = pd.MultiIndex.from_tuples(keys, names=["member", "gpu_model"])
    for field in TIMELINE_FIELDS:
        wide = frame.pivot(index="time", columns=["member", "gpu_model"], values=field)
        wide = wide.reindex(index=times, columns=index).ffill().fillna(0.0)
        values[field] = wide.to_numpy(dtype=float)
    dt = np.diff(np.append(times, max(end, times[-1] if len(times) else end)))
    return Grid(times=times, dt=dt, keys=keys, values=values)


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
    total_sq = float((x * x).sum())
    if total_sq == 0.0:
        return 1.0
    return float(x.sum() ** 2 / (len(x) * total_sq))


def fairness_jain(g: Grid) -> float | None:
    members = g.members()
    if len(members) < 2:
        return None
    columns = [g.member_columns(m) for m in members]

    def per_member(field: str) -> np.ndarray:
        return np.stack([g.values[field][:, c].sum(axis=1) for c in columns], axis=1)

    allocated = per_member("allocated")
    fair = per_member("fair_share")
    pending = per_member("pending")
    weighted = 0.0
    total = 0.0
    for i in range(len(g.times)):
        if g.dt[i] <= 0:
            continue
        waiting = pending[i] > 0
        if waiting.sum() < 2:
            continue
        a = allocated[i][waiting]
        f = fair[i][waiting]
        x = np.where(f > 0, np.minimum(1.0, a / np.where(f > 0, f, 1.0)), 1.0)
        weighted += jain(x) * g.dt[i]
        total += g.dt[i]
    return weighted / total if total > 0 else None


def entitlement_violation_gpu_s(g: Grid, grace_period_s: float) -> float:
    threshold = grace_period_s + VIOLATION_SLACK_S
    floor = np.minimum(g.values["entitlement"], g.values["demand"])
    deficit = np.clip(floor - g.values["allocated"], 0.0, None)
    deficit = np.where(g.values["pending"] > 0, deficit, 0.0)
    keep = g.dt > 0
    deficit = deficit[keep]
    dt = g.dt[keep]
    total = 0.0
    for k in range(deficit.shape[1]):
        column = deficit[:, k]
        episode_s = 0.0
        episode_gpu_s = 0.0
        for value, seconds in zip(column, dt, strict=True):
            if value > 0:
                episode_s += seconds
                episode_gpu_s += value * seconds
                continue
            if episode_s > threshold:
                total += episode_gpu_s
            episode_s = episode_gpu_s = 0.0
        if episode_s > threshold:
            total += episode_gpu_s
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


def hours(gpu_seconds: float) -> float:
    return gpu_seconds / 3600.0
