"""The report's tables beside the invoices: GPU-hours per day, utilization, entitlement
against use, who used whose hardware, and the pool's facts."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd

from policies.model import Policy
from reports.costmodel.bill import GpuHours
from reports.costmodel.coverage import Coverage
from reports.costmodel.prices import gpu_hours
from reports.costmodel.usage_split import on_own_nodes

ENTITLEMENT_COLUMNS = [
    "member",
    "gpu_model",
    "contributed_gpu_hours",
    "purchased_gpu_hours",
    "entitlement_gpu_hours",
    "used_gpu_hours",
]


def efficiency(usage: pd.DataFrame, members: list[str]) -> dict[str, float | None]:
    """GPU activity over allocated GPU-seconds, where utilization is known."""
    known = usage[usage["utilization"].notna()]
    busy = (known["gpu_seconds"] * known["utilization"]).groupby(known["member"]).sum()
    known_seconds = known.groupby("member")["gpu_seconds"].sum()
    result: dict[str, float | None] = {}
    for m in members:
        seconds_known = float(known_seconds.get(m, 0.0))
        result[m] = float(busy.get(m, 0.0)) / seconds_known if seconds_known > 0 else None
    return result


def daily_gpu_hours(
    usage_split: pd.DataFrame, day_of: pd.Series, members: list[str], used: pd.Series
) -> pd.DataFrame:
    """Local day (index) x member (columns, those that used anything)."""
    days = sorted(set(day_of.values))
    usage_days = usage_split["hour"].map(day_of)
    daily = (
        (usage_split.groupby([usage_days, usage_split["member"]])["gpu_seconds"].sum() / 3600.0)
        .unstack(fill_value=0.0)
        .reindex(index=days, columns=[m for m in members if m in used.index], fill_value=0.0)
    )
    daily.index.name = "day"
    return daily


UTILIZATION_NA_BELOW = 0.5
"""Utilization (DCGM) of a day is shown as n/a when fewer than half the DCGM samples
expected for the GPUs in use were found."""
UTILIZATION_PARTIAL_BELOW = 0.9
"""... and marked partial below 90 %."""


def utilization_coverage(
    usage: pd.DataFrame, node_coverage: pd.DataFrame | None, day_of: pd.Series
) -> pd.Series:
    """Per local day, the share of expected DCGM samples found for the GPUs in use: the
    nodes' utilization coverage weighted by the GPU-seconds used on them each hour.
    NaN for a day without any (or without coverage recorded, e.g. a simulation)."""
    days = sorted(set(day_of.values))
    if node_coverage is None or node_coverage.empty or usage.empty:
        return pd.Series(np.nan, index=days, dtype="float64")
    used = usage.groupby(["hour", "node"], as_index=False)["gpu_seconds"].sum()
    cov = node_coverage[["hour", "node", "utilization"]].dropna(subset=["utilization"])
    joined = used.merge(cov, on=["hour", "node"], how="inner")
    joined = joined[joined["gpu_seconds"] > 0]
    if joined.empty:
        return pd.Series(np.nan, index=days, dtype="float64")
    joined_days = joined["hour"].map(day_of)
    found = (joined["utilization"] * joined["gpu_seconds"]).groupby(joined_days).sum()
    expected = joined.groupby(joined_days)["gpu_seconds"].sum()
    return (found / expected).reindex(days).astype("float64")


def utilization_daily(
    usage: pd.DataFrame,
    usage_split: pd.DataFrame,
    capacity: pd.DataFrame,
    day_of: pd.Series,
    coverage: Coverage,
    node_coverage: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per local day: available and used GPU-hours, allocation (used / available) and
    utilization (GPU activity from DCGM, where known), with the utilization's coverage:
    n/a below `UTILIZATION_NA_BELOW`, partial below `UTILIZATION_PARTIAL_BELOW`; a day
    with every hour missing has neither."""
    days = sorted(set(day_of.values))
    available = capacity.groupby(capacity["hour"].map(day_of))["billed"].sum().reindex(days)
    available = available / 3600.0
    used = usage_split.groupby(usage_split["hour"].map(day_of))["gpu_seconds"].sum()
    used = (used.reindex(days) / 3600.0).fillna(0.0)
    known = usage[usage["utilization"].notna()]
    known_days = known["hour"].map(day_of)
    busy = (known["gpu_seconds"] * known["utilization"]).groupby(known_days).sum()
    known_seconds = known.groupby(known_days)["gpu_seconds"].sum()
    activity = (busy / known_seconds.where(known_seconds > 0)).reindex(days)
    table = pd.DataFrame(
        {
            "day": days,
            "available_gpu_hours": available.to_numpy(),
            "used_gpu_hours": used.to_numpy(),
            "allocation": (used / available.where(available > 0)).to_numpy(),
            "utilization": activity.to_numpy(),
        }
    )
    found = utilization_coverage(usage, node_coverage, day_of).to_numpy()
    table["utilization_coverage"] = found
    table.loc[found < UTILIZATION_NA_BELOW, "utilization"] = np.nan
    table["utilization_partial"] = (found >= UTILIZATION_NA_BELOW) & (
        found < UTILIZATION_PARTIAL_BELOW
    )
    missing = coverage.daily.set_index("day")
    all_missing = (missing["hours_missing"] == missing["hours"]).reindex(days)
    table.loc[all_missing.to_numpy(), ["allocation", "used_gpu_hours"]] = np.nan
    return table


def utilization_flags(daily: pd.DataFrame) -> list[str]:
    """The days whose utilization (DCGM) is shown as n/a or partial, and why."""
    found = daily["utilization_coverage"]
    na_days = daily.loc[found < UTILIZATION_NA_BELOW, "day"].tolist()
    partial_days = daily.loc[daily["utilization_partial"], "day"].tolist()
    flags = []
    if na_days:
        flags.append(
            f"utilization (DCGM) n/a on {len(na_days)} day(s) ({', '.join(map(str, na_days[:5]))}"
            f"{', ...' if len(na_days) > 5 else ''}): under {UTILIZATION_NA_BELOW:.0%} of its "
            "samples were found"
        )
    if partial_days:
        flags.append(
            f"utilization (DCGM) partial on {len(partial_days)} day(s): under "
            f"{UTILIZATION_PARTIAL_BELOW:.0%} of its samples were found"
        )
    return flags


def entitlement_vs_use(
    policy: Policy,
    usage_split: pd.DataFrame,
    hours: GpuHours,
    members: list[str],
    purchased_hours: dict[tuple[str, str], float],
) -> pd.DataFrame:
    """Per member and GPU model: contributed, purchased (each hour's policy version),
    entitlement and used GPU-hours."""
    used_by_model = gpu_hours(usage_split, ["member", "gpu_model"], "gpu_seconds")
    rows = []
    for m in members:
        for model in (g.name for g in policy.spec.gpu_models):
            contributed = float(hours.contributed_by_model.get((m, model), 0.0))
            bought = purchased_hours.get((m, model), 0.0)
            used = float(used_by_model.get((m, model), 0.0))
            if contributed or bought or used:
                rows.append(
                    {
                        "member": m,
                        "gpu_model": model,
                        "contributed_gpu_hours": contributed,
                        "purchased_gpu_hours": bought,
                        "entitlement_gpu_hours": contributed + bought,
                        "used_gpu_hours": used,
                    }
                )
    return pd.DataFrame(rows, columns=ENTITLEMENT_COLUMNS)


def lent_flows(usage_split: pd.DataFrame, members: list[str]) -> pd.DataFrame:
    """member (index) x owner (columns): GPU-hours the member used on the owner's nodes."""
    on_others = usage_split[~on_own_nodes(usage_split)]
    flows = gpu_hours(on_others, ["member", "owner"], "gpu_seconds")
    return pd.DataFrame(
        [[float(flows.get((m, owner), 0.0)) for owner in members] for m in members],
        index=pd.Index(members, name="member"),
        columns=pd.Index(members, name="owner"),
    )


def consortium_table(
    hours: GpuHours,
    amounts: dict[str, Decimal],
    hours_in_month: int,
    coverage: Coverage,
) -> pd.DataFrame:
    """The pool's facts: item, gpu_hours, amount. `amounts` has the capacity cost, the
    shared fixed costs, the pool cost, the sum of member totals, the charges for use of
    others' hardware and the purchase payments."""
    nan = float("nan")
    used = float(hours.used.sum())
    available = float(hours.contributed.sum())
    return pd.DataFrame(
        [
            {"item": "capacity cost", "gpu_hours": available, "amount": amounts["capacity"]},
            {"item": "shared fixed costs", "gpu_hours": nan, "amount": amounts["shared"]},
            {"item": "pool cost", "gpu_hours": nan, "amount": amounts["pool"]},
            {"item": "sum of member totals", "gpu_hours": nan, "amount": amounts["totals"]},
            {"item": "GPU-hours used", "gpu_hours": used, "amount": None},
            {"item": "GPU-hours idle", "gpu_hours": float(hours.idle.sum()), "amount": None},
            {
                "item": "GPU-hours used on others' hardware, charged",
                "gpu_hours": float(hours.used_on_others_charged.sum()),
                "amount": amounts["charges"],
            },
            {"item": "purchased GPUs paid", "gpu_hours": nan, "amount": amounts["purchases"]},
            {
                "item": "GPU-hours lost to reclaim",
                "gpu_hours": float(hours.lost.sum()),
                "amount": None,
            },
            {
                "item": "allocation (used over available)",
                "gpu_hours": used / available if available else None,
                "amount": None,
            },
            {"item": "hours in month", "gpu_hours": float(hours_in_month), "amount": None},
            {"item": "hours missing", "gpu_hours": float(coverage.hours_missing), "amount": None},
            {"item": "hours partial", "gpu_hours": float(coverage.hours_partial), "amount": None},
        ]
    )
