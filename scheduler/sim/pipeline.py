"""A whole what-if study: load-checked inputs -> pooled replay -> standalone replays ->
tables and summary. The CLI and the benchmark both call `run_study`."""

from __future__ import annotations

import math
from collections.abc import Callable, Container
from dataclasses import dataclass, fields
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from policies.errors import InputError
from policies.model import Policy
from reports.costmodel.usage_row import usage_frame
from scheduler.engine.decisions import PREEMPTION_CAUSES
from scheduler.engine.snapshot import Node
from scheduler.sim import metrics
from scheduler.sim.never import fits, never_runs
from scheduler.sim.simulator import (
    Engine,
    JobState,
    Progress,
    SimulationResult,
    Simulator,
    UsageRow,
)
from scheduler.sim.standalone import StandaloneReplays, StandaloneResult
from scheduler.sim.waiting import FRAGMENTATION_CLAIMABLE, IDLE_CAUSES, OWED_CAUSES
from scheduler.traces.model import Trace

HOUR_S = 3600


@dataclass
class Study:
    policy: Policy
    start: datetime
    """UTC instant of trace time 0."""
    result: SimulationResult
    standalone: dict[str, StandaloneResult] | None
    jobs: pd.DataFrame
    members: pd.DataFrame
    timeline: pd.DataFrame
    usage: pd.DataFrame
    capacity: pd.DataFrame
    reclaim_lost: pd.DataFrame
    summary: dict[str, object]
    never_runnable: dict[str, str]
    """Job id -> why it can never run on the cluster under the policy (`never_runs`), of
    the jobs the replay left waiting."""


def check_trace(
    trace: Trace, nodes: tuple[Node, ...], policy: Policy, source: str = "trace"
) -> None:
    """Jobs of unknown members, or that could not run even on an empty cluster, are bad
    input, not a wait (the CSV reader names lines; this also guards synthetic traces)."""
    known = set(policy.member_names())
    unknown = sorted({j.org for j in trace.jobs} - known)
    if unknown:
        raise InputError(
            f"{source}: unknown member(s) {', '.join(unknown)} "
            f"(policy members: {', '.join(sorted(known))})"
        )
    bad = [j for j in trace.jobs if not fits(j, nodes)]
    if bad:
        first = bad[0]
        model = first.gpu_model or "any GPU model"
        raise InputError(
            f"{source}: {len(bad)} job(s) can never fit the cluster; first: job "
            f"{first.job_id!r} needs {first.num_pods} pod(s) x {first.gpus_per_pod} GPUs "
            f"of {model}"
        )


def run_study(
    nodes: tuple[Node, ...],
    policy: Policy,
    trace: Trace,
    start: datetime,
    *,
    standalone: bool = True,
    engine: Engine | None = None,
    progress: Progress | None = None,
    on_standalone: Callable[[str], None] | None = None,
    processes: int | None = None,
    batch_s: float = 0.0,
) -> Study:
    """The pooled replay and (with `standalone`) every member's, all with the same
    `batch_s` (`Simulator`), measured into one study."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    start_epoch = start.timestamp()
    offset = start_epoch - math.floor(start_epoch / HOUR_S) * HOUR_S
    alone: dict[str, StandaloneResult] | None = None
    # The standalone replays start first, in worker processes, and run while this
    # process replays the pooled cluster.
    with StandaloneReplays(
        nodes,
        policy,
        trace,
        policy.member_names() if standalone else [],
        engine=engine,
        processes=processes,
        batch_s=batch_s,
    ) as replays:
        result = Simulator(
            nodes, policy, trace, engine, start_offset_s=offset, progress=progress, batch_s=batch_s
        ).run()
        if standalone:
            alone = replays.results(on_standalone)
    return build_study(policy, start, result, alone)


def build_study(
    policy: Policy,
    start: datetime,
    result: SimulationResult,
    alone: dict[str, StandaloneResult] | None,
) -> Study:
    start_utc = start.astimezone(UTC)
    base = pd.Timestamp(start_utc)
    hour0 = base.floor("h")
    jobs = jobs_table(result, alone)
    timeline = metrics.timeline_frame(result.timeline)
    end = result.end_time
    g = metrics.grid(timeline, end)
    members = members_table(policy, result, alone, jobs, g, end)
    never = never_runs((r.job for r in result.unfinished()), result.nodes, policy)
    summary = summary_dict(policy, start_utc, result, alone, jobs, members, g, end, len(never))
    timeline.insert(1, "time_utc", base + pd.to_timedelta(timeline["time"], unit="s"))
    timeline = timeline.rename(columns={"time": "time_s"})
    return Study(
        policy=policy,
        start=start_utc,
        result=result,
        standalone=alone,
        jobs=jobs,
        members=members,
        timeline=timeline,
        usage=usage_table(result, hour0, policy.version),
        capacity=capacity_table(result, start_utc, end),
        reclaim_lost=lost_table(result, hour0),
        summary=summary,
        never_runnable=never,
    )


def jobs_table(result: SimulationResult, alone: dict[str, StandaloneResult] | None) -> pd.DataFrame:
    rows = []
    for record in result.jobs.values():
        job = record.job
        done = record.state is JobState.DONE
        standalone_jct = math.nan
        standalone_runs: bool | None = None
        if alone is not None and job.org in alone:
            member = alone[job.org]
            standalone_runs = job.job_id not in member.never_runs
            standalone_jct = member.jct_s.get(job.job_id, math.nan)
        rows.append(
            {
                "job_id": job.job_id,
                "member": job.org,
                "gpu_model": job.gpu_model,
                "num_pods": job.num_pods,
                "gpus_per_pod": job.gpus_per_pod,
                "gpus": job.gpus,
                "priority": job.priority,
                "submit_s": job.submit_time,
                "duration_s": job.duration_s,
                "start_s": record.first_start if record.first_start is not None else math.nan,
                "end_s": record.end if record.end is not None else math.nan,
                "wait_s": (record.first_start - job.submit_time)
                if record.first_start is not None
                else math.nan,
                "jct_s": (record.end - job.submit_time) if record.end is not None else math.nan,
                "completed": done,
                "state": record.state.value,
                "preemptions": record.preemptions,
                "lost_gpu_s": record.lost_gpu_s,
                "node_owners": ";".join(record.node_owners),
                "used_on_others_hardware_gpu_s": record.used_on_others_hardware_gpu_s,
                "standalone_runs": standalone_runs,
                "standalone_jct_s": standalone_jct,
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.astype({"standalone_runs": "boolean", "gpu_model": "string"})


def _member_used_gpu_s(g: metrics.Grid, member: str) -> float:
    return metrics.integral(g, "allocated", g.member_columns(member))


def members_table(
    policy: Policy,
    result: SimulationResult,
    alone: dict[str, StandaloneResult] | None,
    jobs: pd.DataFrame,
    g: metrics.Grid,
    end: float,
) -> pd.DataFrame:
    _, last_submit = metrics.submission_window(jobs)
    episodes = _episodes_by_member(result)
    beyond = _past_allowance_by_member(result)
    rows = []
    for member in result.members:
        columns = g.member_columns(member)
        mine = jobs[jobs["member"] == member] if not jobs.empty else _empty_jobs()
        stats = metrics.job_stats(mine)
        used = metrics.integral(g, "allocated", columns)
        lost = float(mine["lost_gpu_s"].sum())
        row: dict[str, object] = {
            "member": member,
            "gpus_contributed": sum(n for (o, _), n in result.capacity.items() if o == member),
            "gpus_entitled": sum(n for (m, _), n in result.entitlement.items() if m == member),
            "gpu_hours_used": metrics.hours(used),
            "gpu_hours_entitled": metrics.hours(metrics.integral(g, "entitlement", columns)),
            "gpu_hours_borrowed": metrics.hours(metrics.integral(g, "borrowed", columns)),
            "gpu_hours_used_on_others_hardware": metrics.hours(
                metrics.integral(g, "used_on_others_hardware", columns)
            ),
            "gpu_hours_lent": metrics.hours(metrics.integral(g, "lent", columns)),
            "gpu_hours_lost_to_reclaim": metrics.hours(lost),
            "reclaim_lost_fraction": metrics.reclaim_lost_fraction(lost, used),
            **_lost_by_cause(result, member),
            "jobs_submitted": len(mine),
            **stats,
            "preemptions": int(mine["preemptions"].sum()),
            **metrics.preemptions_per_job(mine["preemptions"]),
            **metrics.time_to_entitlement(episodes.get(member, [])),
            "time_to_entitlement_past_allowance_h": metrics.hours(beyond.get(member, 0.0)),
            **_standalone_figures(member, alone, mine, last_submit),
        }
        rows.append(row)
    return pd.DataFrame(rows)


def _lost_by_cause(result: SimulationResult, member: str | None = None) -> dict[str, float]:
    """Lost work in GPU-hours by who preempted it (`PREEMPTION_CAUSES`): the pool's, or one
    member's."""
    by_cause = dict.fromkeys(PREEMPTION_CAUSES, 0.0)
    for (whose, cause), gpu_s in result.lost_by_cause_gpu_s.items():
        if member is None or whose == member:
            by_cause[cause] += gpu_s
    return {f"reclaim_lost_{c}_gpu_h": metrics.hours(v) for c, v in by_cause.items()}


def _past_allowance(result: SimulationResult) -> list[tuple[str, str, float]]:
    """(member, cause, seconds beyond the allowance) of every owed episode past it."""
    allowance = result.owed_allowance_s
    return [(m, c, stop - start - allowance) for m, _, start, stop, c in result.owed_past_allowance]


def _past_allowance_by_member(result: SimulationResult) -> dict[str, float]:
    out: dict[str, float] = {}
    for member, _, seconds in _past_allowance(result):
        out[member] = out.get(member, 0.0) + seconds
    return out


def _episodes_by_member(result: SimulationResult) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for member, _, start, stop in result.entitlement_episodes:
        out.setdefault(member, []).append(stop - start)
    return out


STANDALONE_KEYS = (
    "standalone_mean_jct_s",
    "pooled_mean_jct_s_same_jobs",
    "standalone_mean_wait_s",
    "standalone_jobs_completed",
    "standalone_never_runs",
    "jct_ratio_mean",
    "jct_ratio_p95",
    "share_jobs_finished_later",
    "pooling_dividend_gpu_hours",
    "worse_off_pooled",
)


def _standalone_figures(
    member: str,
    alone: dict[str, StandaloneResult] | None,
    mine: pd.DataFrame,
    last_submit: float,
) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(STANDALONE_KEYS)
    if alone is None or member not in alone:
        return row
    own = alone[member]
    row["standalone_mean_jct_s"] = _mean(list(own.jct_s.values()))
    # Like with like: the pooled JCT of the very jobs that completed standalone.
    both = mine[_completed_among(mine, own.jct_s)]
    both_jct = both["jct_s"].tolist()
    both_ids = both["job_id"].tolist()
    row["pooled_mean_jct_s_same_jobs"] = _mean(both_jct) if both_jct else None
    row["standalone_mean_wait_s"] = _mean(list(own.wait_s.values()))
    row["standalone_jobs_completed"] = len(own.jct_s)
    row["standalone_never_runs"] = len(own.never_runs)
    standalone_same = [own.jct_s[j] for j in both_ids]
    same = metrics.SameJobs.of(both_jct, standalone_same)
    row["jct_ratio_mean"] = same.jct_ratio_mean
    row["jct_ratio_p95"] = same.jct_ratio_p95
    row["share_jobs_finished_later"] = same.share_finished_later
    gpus, durations = mine["gpus"].tolist(), mine["duration_s"].tolist()
    pooled_work = metrics.work_done_by(gpus, durations, mine["end_s"].tolist(), last_submit)
    standalone_end = [
        submit + own.jct_s[j] if j in own.jct_s else math.nan
        for j, submit in zip(mine["job_id"].tolist(), mine["submit_s"].tolist(), strict=True)
    ]
    standalone_work = metrics.work_done_by(gpus, durations, standalone_end, last_submit)
    dividend = metrics.hours(pooled_work - standalone_work)
    row["pooling_dividend_gpu_hours"] = dividend
    # The sharing incentive compares the pooled and standalone means of the same jobs.
    row["worse_off_pooled"] = metrics.worse_off_pooled(
        row["pooled_mean_jct_s_same_jobs"],  # type: ignore[arg-type]
        _mean(standalone_same),
        dividend,
    )
    return row


def _completed_among(jobs: pd.DataFrame, ids: Container[str]) -> np.ndarray:
    """Which rows of the job table completed and have their id in `ids`. A membership
    test per id: `Series.isin` on a string column converts every value into Python
    first, and costs as much as the rest of a member's figures."""
    wanted = np.fromiter((j in ids for j in jobs["job_id"].tolist()), dtype=bool, count=len(jobs))
    return jobs["completed"].to_numpy(dtype=bool) & wanted


def _empty_jobs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "job_id": pd.Series([], dtype=str),
            "completed": pd.Series([], dtype=bool),
            "wait_s": pd.Series([], dtype=float),
            "jct_s": pd.Series([], dtype=float),
            "lost_gpu_s": pd.Series([], dtype=float),
            "preemptions": pd.Series([], dtype=int),
            "gpus": pd.Series([], dtype=int),
            "duration_s": pd.Series([], dtype=float),
            "end_s": pd.Series([], dtype=float),
            "submit_s": pd.Series([], dtype=float),
        }
    )


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


SUM_KEYS = (
    "gpu_hours_used",
    "gpu_hours_entitled",
    "gpu_hours_borrowed",
    "gpu_hours_used_on_others_hardware",
    "gpu_hours_lent",
    "gpu_hours_lost_to_reclaim",
)
MEMBER_KEYS = (
    *SUM_KEYS,
    "jobs_submitted",
    "jobs_completed",
    "mean_wait_s",
    "p95_wait_s",
    "mean_jct_s",
    "preemptions",
    "reclaim_lost_fraction",
    *(f"reclaim_lost_{cause}_gpu_h" for cause in PREEMPTION_CAUSES),
    "preemptions_per_job_max",
    "preemptions_per_job_p99",
    "time_to_entitlement_episodes",
    "time_to_entitlement_p50_s",
    "time_to_entitlement_p99_s",
    "time_to_entitlement_max_s",
    "time_to_entitlement_past_allowance_h",
    *STANDALONE_KEYS,
)


def _clean(value: object) -> object:
    """JSON-ready and byte-stable: numpy scalars to Python, NaN to None, floats rounded."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    return value


def summary_dict(
    policy: Policy,
    start: datetime,
    result: SimulationResult,
    alone: dict[str, StandaloneResult] | None,
    jobs: pd.DataFrame,
    members: pd.DataFrame,
    g: metrics.Grid,
    end: float,
    never_runnable: int,
) -> dict[str, object]:
    capacity = sum(result.capacity.values())
    overall: dict[str, object] = {}
    for key in SUM_KEYS:
        overall[key] = float(members[key].sum()) if not members.empty else 0.0
    stats = metrics.job_stats(jobs) if not jobs.empty else metrics.job_stats(_empty_jobs())
    overall.update(stats)
    overall["jobs_submitted"] = len(jobs)
    first, last = metrics.submission_window(jobs)
    overall["utilization"] = metrics.utilization(g, capacity, first, last)
    overall["utilization_while_pending"] = metrics.utilization_while_pending(g, capacity)
    overall["makespan_s"] = metrics.makespan_s(jobs)
    overall["fairness_jain"] = metrics.fairness_jain(g)
    overall["entitlement_violation_gpu_s"] = metrics.entitlement_violation_gpu_s(
        g, policy.sharing.reclaim_grace_period_seconds
    )
    overall["preemptions"] = int(jobs["preemptions"].sum()) if not jobs.empty else 0
    overall.update(_waiting_figures(result, jobs, members))
    if alone is not None:
        jcts = [v for r in alone.values() for v in r.jct_s.values()]
        overall["standalone_mean_jct_s"] = _mean(jcts)
        overall["pooling_dividend_gpu_hours"] = float(members["pooling_dividend_gpu_hours"].sum())
        overall.update(_same_jobs_overall(jobs, alone))
        worse = [v for v in members["worse_off_pooled"] if v is True]
        overall["members_worse_off_pooled"] = len(worse)
    else:
        overall["standalone_mean_jct_s"] = None
        overall["pooling_dividend_gpu_hours"] = None
        overall.update(
            dict.fromkeys(("jct_ratio_mean", "jct_ratio_p95", "share_jobs_finished_later"))
        )
        overall["members_worse_off_pooled"] = None
    per_member = {
        str(row["member"]): {key: _clean(row[key]) for key in MEMBER_KEYS}
        for row in members.to_dict("records")
    }
    end_utc = start + pd.Timedelta(seconds=end).to_pytimedelta()
    local = start.astimezone(policy.billing.zone)
    return {
        **{k: _clean(v) for k, v in overall.items()},
        "members": per_member,
        "window": {
            "start": start.isoformat(),
            "end": end_utc.isoformat(),
            "seconds": _clean(float(end)),
            "month": local.strftime("%Y-%m"),
            "time_zone": policy.billing.time_zone,
        },
        "cluster": {"gpus": capacity, "nodes": len(result.nodes)},
        "simulation": {
            "policy": policy.metadata.name,
            "policy_version": policy.version,
            "events": result.events,
            "engine_cycles": result.cycles,
            "livelock_guard_trips": result.guard_trips,
            "livelock_guard_owed_overrides": result.owed_overrides,
            "max_preemptions_per_job": result.max_preemptions_per_job,
            "batch_seconds": result.batch_s,
            "jobs_unfinished": len(result.unfinished()),
            "jobs_never_runnable": never_runnable,
            "standalone": alone is not None,
        },
    }


def _waiting_figures(
    result: SimulationResult, jobs: pd.DataFrame, members: pd.DataFrame
) -> dict[str, object]:
    """Idle while waiting by cause, reclaim lost, preemptions per job, time to
    entitlement: the pool's figures (docs/metrics.md)."""
    idle = result.idle_while_waiting_gpu_s
    out: dict[str, object] = {
        "idle_while_waiting_gpu_h": metrics.hours(sum(idle.values())),
        **{
            f"idle_while_waiting_{cause}_gpu_h": metrics.hours(idle.get(cause, 0.0))
            for cause in IDLE_CAUSES
        },
        f"idle_while_waiting_{FRAGMENTATION_CLAIMABLE}_gpu_h": metrics.hours(
            result.fragmentation_claimable_gpu_s
        ),
        "capacity_gpu_h_while_pending": metrics.hours(result.capacity_gpu_s_while_pending),
    }
    lost = float(jobs["lost_gpu_s"].sum()) if not jobs.empty else 0.0
    used = float(members["gpu_hours_used"].sum()) * 3600.0 if not members.empty else 0.0
    out["reclaim_lost_fraction"] = metrics.reclaim_lost_fraction(lost, used)
    out.update(_lost_by_cause(result))
    out.update(metrics.preemptions_per_job(jobs["preemptions"] if not jobs.empty else []))
    out["consolidation_preemptions"] = result.consolidation_preemptions
    out.update(metrics.time_to_entitlement([b - a for _, _, a, b in result.entitlement_episodes]))
    out["time_to_entitlement_allowance_s"] = result.owed_allowance_s
    past = _past_allowance(result)
    out["time_to_entitlement_past_allowance_episodes"] = len(past)
    for cause in OWED_CAUSES:
        beyond = sum(seconds for _, c, seconds in past if c == cause)
        out[f"time_to_entitlement_past_allowance_{cause}_h"] = metrics.hours(beyond)
    return out


def _same_jobs_overall(jobs: pd.DataFrame, alone: dict[str, StandaloneResult]) -> dict[str, object]:
    """Every member's same jobs pooled against standalone, pooled together."""
    if jobs.empty:
        return {"jct_ratio_mean": None, "jct_ratio_p95": None, "share_jobs_finished_later": None}
    standalone = {j: v for r in alone.values() for j, v in r.jct_s.items()}
    both = jobs[_completed_among(jobs, standalone)]
    same = metrics.SameJobs.of(
        both["jct_s"].tolist(), [standalone[j] for j in both["job_id"].tolist()]
    )
    return {
        "jct_ratio_mean": same.jct_ratio_mean,
        "jct_ratio_p95": same.jct_ratio_p95,
        "share_jobs_finished_later": same.share_finished_later,
    }


# The usage row's columns a `UsageRow` carries (its hour an index from trace time 0's hour).
SIM_USAGE = [f.name for f in fields(UsageRow)]


def usage_table(result: SimulationResult, hour0: pd.Timestamp, version: int) -> pd.DataFrame:
    frame = pd.DataFrame(
        [
            (
                u.hour,
                u.pod_uid,
                u.namespace,
                u.job_id,
                u.member,
                u.owner,
                u.gpu_model,
                u.node,
                u.gpu_seconds,
            )
            for u in result.usage
        ],
        columns=SIM_USAGE,
    )
    frame["hour"] = hour0 + pd.to_timedelta(frame["hour"].astype("int64") * HOUR_S, unit="s")
    frame["hour"] = frame["hour"].astype("datetime64[ns, UTC]")
    frame["gpu_seconds"] = frame["gpu_seconds"].astype("float64")
    frame["utilization"] = np.nan
    frame["coverage"] = 1.0
    frame["policy_version"] = version
    keys = [c for c in SIM_USAGE if c != "gpu_seconds"]
    frame = frame.groupby(keys, as_index=False, sort=True).agg(
        gpu_seconds=("gpu_seconds", "sum"),
        utilization=("utilization", "first"),
        coverage=("coverage", "first"),
        policy_version=("policy_version", "first"),
    )
    return usage_frame(frame, source="simulation")


def capacity_table(result: SimulationResult, start: datetime, end: float) -> pd.DataFrame:
    """GPU-seconds available per (UTC hour, owner, model) over the simulated window."""
    t0 = start.timestamp()
    t1 = t0 + end
    first = math.floor(t0 / HOUR_S)
    last = math.ceil(t1 / HOUR_S)
    rows = []
    for hour in range(first, max(last, first + 1)):
        lo = max(t0, hour * HOUR_S)
        hi = min(t1, (hour + 1) * HOUR_S)
        seconds = max(0.0, hi - lo)
        if seconds <= 0:
            continue
        for (owner, model), gpus in sorted(result.capacity.items()):
            rows.append((hour * HOUR_S, owner, model, gpus * seconds))
    frame = pd.DataFrame(rows, columns=["hour", "owner", "gpu_model", "gpu_seconds_available"])
    frame["hour"] = pd.to_datetime(frame["hour"], unit="s", utc=True)
    return frame.astype({"gpu_seconds_available": "float64"})


def lost_table(result: SimulationResult, hour0: pd.Timestamp) -> pd.DataFrame:
    frame = pd.DataFrame(
        [(r.hour, r.member, r.gpu_model, r.cause, r.gpu_seconds) for r in result.lost],
        columns=["hour", "member", "gpu_model", "cause", "gpu_seconds_lost"],
    )
    frame["hour"] = hour0 + pd.to_timedelta(frame["hour"].astype("int64") * HOUR_S, unit="s")
    frame["hour"] = frame["hour"].astype("datetime64[ns, UTC]")
    frame = frame.groupby(["hour", "member", "gpu_model", "cause"], as_index=False, sort=True).agg(
        gpu_seconds_lost=("gpu_seconds_lost", "sum")
    )
    return frame.astype({"gpu_seconds_lost": "float64"})
