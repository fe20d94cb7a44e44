"""Per-member figures of a trace (jobs, gangs, GPU-hours, span) as a pandas table."""

from __future__ import annotations

import pandas as pd

from scheduler.traces.model import Trace

SUMMARY_COLUMNS = [
    "member",
    "jobs",
    "gangs",
    "gpu_hours",
    "largest_job_gpus",
    "median_duration_s",
    "first_submit_s",
    "last_submit_s",
]


def trace_frame(trace: Trace) -> pd.DataFrame:
    """One row per job, in the canonical columns plus `gpus`."""
    frame = pd.DataFrame(
        {
            "job_id": [j.job_id for j in trace.jobs],
            "org": [j.org for j in trace.jobs],
            "submit_time": [j.submit_time for j in trace.jobs],
            "duration_s": [j.duration_s for j in trace.jobs],
            "num_pods": [j.num_pods for j in trace.jobs],
            "gpus_per_pod": [j.gpus_per_pod for j in trace.jobs],
            "gpu_model": [j.gpu_model for j in trace.jobs],
            "priority": [j.priority for j in trace.jobs],
        }
    )
    frame["gpus"] = frame["num_pods"] * frame["gpus_per_pod"]
    return frame


def member_summary(trace: Trace) -> pd.DataFrame:
    """Per member, sorted by name, with a final 'total' row."""
    frame = trace_frame(trace)
    if frame.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    frame["gpu_hours"] = frame["gpus"] * frame["duration_s"] / 3600.0
    frame["gang"] = frame["num_pods"] > 1

    def figures(group: pd.DataFrame) -> dict[str, float]:
        return {
            "jobs": len(group),
            "gangs": int(group["gang"].sum()),
            "gpu_hours": float(group["gpu_hours"].sum()),
            "largest_job_gpus": int(group["gpus"].max()),
            "median_duration_s": float(group["duration_s"].median()),
            "first_submit_s": float(group["submit_time"].min()),
            "last_submit_s": float(group["submit_time"].max()),
        }

    rows = [{"member": name, **figures(group)} for name, group in frame.groupby("org")]
    rows.append({"member": "total", **figures(frame)})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def offered_load(trace: Trace, gpus: int, span_s: float) -> float:
    """Offered GPU-seconds over the GPU-seconds of `gpus` GPUs for `span_s` seconds."""
    work = sum(j.gpus * j.duration_s for j in trace.jobs)
    return work / (gpus * span_s) if gpus > 0 and span_s > 0 else float("nan")


def span_s(trace: Trace) -> float:
    """From time 0 to the last submission plus its run time, at the latest job end."""
    return max((j.submit_time + j.duration_s for j in trace.jobs), default=0.0)


def submission_window_s(trace: Trace) -> float:
    """From the first submission to the last: the stretch over which the trace offers
    work, so neither the drain after the last submission nor a lead-in dilutes a load."""
    if not trace.jobs:
        return 0.0
    submits = [j.submit_time for j in trace.jobs]
    return max(submits) - min(submits)
