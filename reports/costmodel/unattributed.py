"""Usage no GPU model could be found for, and the price check that runs before billing.

A GPU-second whose GPU model is `unattributed` (no source named the node's GPU model)
has no price: it is set aside before billing, kept in the report's `unattributed` table
(pod, hour, node, GPU-seconds) and flagged, and never blocks the month. A GPU model
that is known but has no price in the policy version in force is a policy error: it is
raised before anything is billed, naming the model and the first pod (hour, node) that
used it.
"""

from __future__ import annotations

import pandas as pd

from policies.errors import InputError
from reports.costmodel.flags import Flag
from reports.costmodel.frames import UNATTRIBUTED
from reports.costmodel.prices import PriceBook

UNATTRIBUTED_COLUMNS = ["hour", "namespace", "pod", "node", "member", "owner", "gpu_seconds"]
FLAGGED_PODS = 10
"""Pods named one by one in the report's flags; the table lists every one."""


class PriceError(InputError):
    """A GPU model used in the month has no price in the policy version in force."""


def set_aside(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows with a GPU model, rows without one)."""
    unknown = frame["gpu_model"] == UNATTRIBUTED
    return frame[~unknown].reset_index(drop=True), frame[unknown].reset_index(drop=True)


def unattributed_table(usage: pd.DataFrame) -> pd.DataFrame:
    """One row per pod and hour without a GPU model, largest first."""
    if usage.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in UNATTRIBUTED_COLUMNS})
    table = usage.reindex(columns=UNATTRIBUTED_COLUMNS).fillna(
        {"namespace": "", "pod": "", "node": UNATTRIBUTED}
    )
    return table.sort_values(["gpu_seconds", "hour"], ascending=[False, True]).reset_index(
        drop=True
    )


def unattributed_flags(table: pd.DataFrame, capacity: pd.DataFrame) -> list[str]:
    """One flag for the month's usage without a GPU model, one per pod (the largest
    first, at most `FLAGGED_PODS`), and one for capacity without a GPU model."""
    flags: list[str] = []
    if len(table):
        total = float(table["gpu_seconds"].sum())
        flags.append(
            f"{total / 3600:.4f} GPU-hours ({total:.0f} GPU-seconds) on nodes with no known "
            f"GPU model are not priced: billed to no one, listed as '{UNATTRIBUTED}'"
        )
        for row in table.head(FLAGGED_PODS).itertuples(index=False):
            # Its namespace and pod are the member's to see, not the others'.
            flags.append(
                Flag(
                    f"{UNATTRIBUTED}: pod {row.namespace}/{row.pod} at "
                    f"{pd.Timestamp(row.hour):%Y-%m-%d %H:00}Z on node {row.node}: "
                    f"{float(row.gpu_seconds):.0f} GPU-seconds",
                    [str(row.member)],
                )
            )
        if len(table) > FLAGGED_PODS:
            flags.append(f"{UNATTRIBUTED}: {len(table) - FLAGGED_PODS} more pod-hours in the table")
    if len(capacity):
        flags.append(
            f"{float(capacity['gpu_seconds_available'].sum()) / 3600:.1f} GPU-hours of capacity "
            f"on nodes with no GPU model label are not priced ('{UNATTRIBUTED}')"
        )
    return flags


def check_prices(
    book: PriceBook,
    usage: pd.DataFrame,
    capacity: pd.DataFrame,
    version_of_hour: pd.Series,
) -> list[str]:
    """Raise `PriceError` unless every GPU model used or contributed has a price in the
    policy version in force in each hour it appears, or in a later version (its first
    price then applies to those hours: the flags returned say so)."""
    flags: list[str] = []
    for frame, what in ((usage, "used by pod"), (capacity, "contributed")):
        if frame.empty:
            continue
        ordered = frame.sort_values("hour", kind="stable")
        versions = ordered["hour"].map(version_of_hour).fillna(book.policy.version).astype(int)
        pairs = pd.DataFrame({"gpu_model": ordered["gpu_model"].astype(str), "version": versions})
        for (model, version), index in pairs.groupby(["gpu_model", "version"]).groups.items():
            policy = book.by_version.get(int(version), book.policy)
            if any(m.name == model for m in policy.spec.gpu_models):
                continue
            first = ordered.loc[index[0]]
            later = book.later_price(model, policy.version)
            if later is not None:
                flag = (
                    f"GPU model {model!r} has no price in policy version {policy.version}: "
                    f"its hours then are priced at {later[1]} per GPU-hour, the price of "
                    f"version {later[0]}, the first to name it"
                )
                if flag not in flags:
                    flags.append(flag)
                continue
            where = (
                f"first {_user(first)} on node {first.get('node', '?')}"
                if what.startswith("used")
                else f"first {what} by {first.get('owner', '?')}"
            )
            known = ", ".join(m.name for m in policy.spec.gpu_models)
            # A policy from a file (a simulation's, `report --policy`) has no version.
            which = f"policy version {policy.version}" if policy.version else "the policy"
            raise PriceError(
                f"{which}: GPU model {model!r} has no price "
                f"({where} at {pd.Timestamp(first['hour']):%Y-%m-%d %H:00}Z); "
                f"known models: {known}"
            )
    return flags


def _user(row: pd.Series) -> str:
    """The pod of a usage row, or its job where no pod is named (a simulation's rows)."""
    pod = row.get("pod") or ""
    if pod:
        return f"used by pod {row.get('namespace', '')}/{pod}"
    return f"used by job {row.get('job_id') or '?'} of {row.get('member') or '?'}"
