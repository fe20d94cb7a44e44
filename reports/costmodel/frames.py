"""The usage tables the cost model reads, checked and normalised.

Metered usage (the ledger) and simulated usage (the simulator's parquet files) have
the same shape, so one cost model serves both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

import pandas as pd

from policies.errors import InputError
from reports.costmodel.usage_row import BILLED_USAGE_COLUMNS

UNATTRIBUTED = "unattributed"
"""Member (or owner) of usage the policy could not map to anyone: billed to no member,
shown as its own row so that nothing disappears from the totals."""

CAPACITY_COLUMNS = ("hour", "owner", "gpu_model", "gpu_seconds_available")
RECLAIM_COLUMNS = ("hour", "member", "gpu_model", "gpu_seconds_lost")
"""Required; an optional `cause` column says who preempted the work (`LOST_CAUSES`)."""
LOST_CAUSES = ("entitlement", "fair_share", "consolidation", "queue")
"""The causes of a preemption (docs/glossary.md, "cause"), as the engine names them in
`scheduler.engine.decisions.PREEMPTION_CAUSES`. Lost work without one (a table without a
`cause` column, or ledger rows metered before causes were recorded) has the cause "":
it counts in the total lost to reclaim only."""


def unknown_causes(causes: Iterable[str]) -> list[str]:
    """The causes among `causes` that are neither a `LOST_CAUSES` entry nor "" (not
    recorded), in order."""
    return sorted(set(causes) - {"", *LOST_CAUSES})


class FrameError(InputError):
    """A usage table without a column the cost model needs."""


def _require(frame: pd.DataFrame, name: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise FrameError(f"{name}: missing column(s) {', '.join(missing)}")


def _utc_hours(values: pd.Series) -> pd.Series:
    hours = pd.to_datetime(values, utc=True)
    return hours.dt.floor("h")


def _in_window(frame: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    return frame[(frame["hour"] >= pd.Timestamp(start)) & (frame["hour"] < pd.Timestamp(end))]


def _names(values: pd.Series) -> pd.Series:
    filled = values.astype("object").where(values.notna(), UNATTRIBUTED)
    return filled.astype(str).replace("", UNATTRIBUTED)


def normalise_usage(
    usage: pd.DataFrame | None, start: datetime, end: datetime, default_version: int
) -> pd.DataFrame:
    columns = [
        *BILLED_USAGE_COLUMNS,
        "utilization",
        "coverage",
        "policy_version",
        "namespace",
        "pod",
        "job_id",
        "node",
    ]
    if usage is None or usage.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns}).assign(
            hour=pd.Series(dtype="datetime64[ns, UTC]"),
            gpu_seconds=pd.Series(dtype="float64"),
            utilization=pd.Series(dtype="float64"),
            coverage=pd.Series(dtype="float64"),
            policy_version=pd.Series(dtype="int64"),
        )
    _require(usage, "usage", BILLED_USAGE_COLUMNS)
    frame = pd.DataFrame(
        {
            "hour": _utc_hours(usage["hour"]),
            "member": _names(usage["member"]),
            "owner": _names(usage["owner"]),
            "gpu_model": usage["gpu_model"].astype(str),
            "gpu_seconds": pd.to_numeric(usage["gpu_seconds"]).astype("float64"),
            "utilization": pd.to_numeric(usage["utilization"]).astype("float64")
            if "utilization" in usage
            else float("nan"),
            "coverage": pd.to_numeric(usage["coverage"]).astype("float64")
            if "coverage" in usage
            else 1.0,
            "policy_version": pd.to_numeric(usage["policy_version"])
            .fillna(default_version)
            .astype("int64")
            if "policy_version" in usage
            else default_version,
        }
    )
    # Where it ran, for the flags that name a pod (metered usage has them) or, where no
    # pod is named (a simulation's rows), its job.
    for column in ("namespace", "pod", "job_id", "node"):
        frame[column] = usage[column].fillna("").astype(str) if column in usage else ""
    if (frame["gpu_seconds"] < 0).any():
        raise FrameError("usage: gpu_seconds must not be negative")
    return _in_window(frame, start, end).reset_index(drop=True)


def normalise_capacity(
    capacity: pd.DataFrame | None, start: datetime, end: datetime
) -> pd.DataFrame:
    """Capacity per (hour, owner, GPU model) in [start, end)."""
    return capacity_per_owner(capacity_rows(capacity, start, end))


HOUR_DTYPE = "datetime64[ns, UTC]"


def empty_frame(dtypes: Mapping[str, str]) -> pd.DataFrame:
    """No rows, with these columns of these types (a concat or merge with it keeps them)."""
    return pd.DataFrame({column: pd.Series(dtype=dtype) for column, dtype in dtypes.items()})


def capacity_rows(capacity: pd.DataFrame | None, start: datetime, end: datetime) -> pd.DataFrame:
    """Capacity as given (per node, `node` '' when not named) in [start, end): an owner
    is decided per node and hour (`reports.costmodel.unowned`) before it is summed."""
    if capacity is None or capacity.empty:
        return empty_frame(
            {
                "hour": HOUR_DTYPE,
                "owner": "object",
                "gpu_model": "object",
                "node": "object",
                "gpu_seconds_available": "float64",
                "coverage": "float64",
            }
        )
    _require(capacity, "capacity", CAPACITY_COLUMNS)
    frame = pd.DataFrame(
        {
            "hour": _utc_hours(capacity["hour"]),
            "owner": _names(capacity["owner"]),
            "gpu_model": capacity["gpu_model"].astype(str),
            "node": capacity["node"].fillna("").astype(str) if "node" in capacity else "",
            "gpu_seconds_available": pd.to_numeric(capacity["gpu_seconds_available"]).astype(
                "float64"
            ),
            "coverage": pd.to_numeric(capacity["coverage"]).astype("float64")
            if "coverage" in capacity
            else 1.0,
        }
    )
    return _in_window(frame, start, end).reset_index(drop=True)


def capacity_per_owner(rows: pd.DataFrame) -> pd.DataFrame:
    """`capacity_rows` summed per (hour, owner, GPU model), as the cost model needs it."""
    if rows.empty:
        return rows.drop(columns="node").reset_index(drop=True)
    return (
        rows.groupby(["hour", "owner", "gpu_model"], as_index=False)
        .agg(gpu_seconds_available=("gpu_seconds_available", "sum"), coverage=("coverage", "min"))
        .reset_index(drop=True)
    )


def normalise_reclaim(reclaim: pd.DataFrame | None, start: datetime, end: datetime) -> pd.DataFrame:
    if reclaim is None or reclaim.empty:
        return empty_frame(
            {
                "hour": HOUR_DTYPE,
                "member": "object",
                "gpu_model": "object",
                "cause": "object",
                "gpu_seconds_lost": "float64",
            }
        )
    _require(reclaim, "reclaim_lost", RECLAIM_COLUMNS)
    cause = reclaim["cause"].fillna("").astype(str) if "cause" in reclaim.columns else ""
    frame = pd.DataFrame(
        {
            "hour": _utc_hours(reclaim["hour"]),
            "member": _names(reclaim["member"]),
            "gpu_model": reclaim["gpu_model"].astype(str),
            "cause": cause,
            "gpu_seconds_lost": pd.to_numeric(reclaim["gpu_seconds_lost"]).astype("float64"),
        }
    )
    unknown = unknown_causes(frame["cause"])
    if unknown:
        raise FrameError(
            f"reclaim_lost: unknown cause(s) {', '.join(map(repr, unknown))} in column cause "
            f"(expected one of {', '.join(LOST_CAUSES)}, or empty)"
        )
    return _in_window(frame, start, end).reset_index(drop=True)


def normalise_hour_status(
    status: pd.DataFrame | None, start: datetime, end: datetime
) -> pd.DataFrame | None:
    """The ledger's per-hour status (`hour`, `status`, optional `coverage`), or None."""
    if status is None:
        return None
    if "hour" not in status.columns:
        raise FrameError("hour_status: missing column hour")
    frame = pd.DataFrame({"hour": _utc_hours(status["hour"])})
    frame["status"] = status["status"].astype(str).values if "status" in status else "metered"
    frame["coverage"] = (
        pd.to_numeric(status["coverage"]).astype("float64").values if "coverage" in status else 1.0
    )
    return _in_window(frame, start, end).reset_index(drop=True)
