"""Usage split per hour: on own nodes, on others' hardware within purchased GPUs, and on
others' hardware beyond them (charged to the user, credited to the owner as lent)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import numpy as np
import pandas as pd

from policies.model import Policy
from reports.costmodel.coverage import month_hour_index

USAGE_KEYS = ["hour", "member", "owner", "gpu_model", "policy_version"]
CHARGED = "used_on_others_charged"
"""GPU-seconds used on others' hardware that purchased GPUs do not cover."""


def policy_version_per_hour(
    usage: pd.DataFrame, start: datetime, end: datetime, current_version: int
) -> pd.Series:
    """The policy version in force in each hour of the month: the newest one the hour's
    usage names, else the current policy's."""
    return (
        usage.groupby("hour")["policy_version"]
        .max()
        .reindex(month_hour_index(start, end))
        .fillna(current_version)
    ).astype("int64")


def split_usage(
    usage: pd.DataFrame,
    policy: Policy,
    version_of_hour: pd.Series | None = None,
    by_version: Mapping[int, Policy] | None = None,
) -> pd.DataFrame:
    """Usage summed per (hour, member, owner, GPU model, version), with its GPU-seconds
    split into `own`, `within_purchase` and `used_on_others_charged`.

    In each hour a member's use of others' hardware of a model is covered by the GPUs of
    that model it held purchased in that hour's policy version (`version_of_hour`, the
    versions in `by_version`; `policy` for an hour or version not in them) first, in
    proportion over the owners it used: the hours its purchase is paid for, no others."""
    split = usage.groupby(USAGE_KEYS, as_index=False, sort=False)["gpu_seconds"].sum()
    own = on_own_nodes(split)
    other = split[~own]
    other_total = other.groupby(["hour", "member", "gpu_model"])["gpu_seconds"].transform("sum")
    known = by_version or {}
    purchased: dict[int | None, dict[tuple[str, str], float]] = {}

    def purchased_seconds(version: int | None) -> dict[tuple[str, str], float]:
        if version not in purchased:
            in_force = known.get(version, policy) if version is not None else policy
            purchased[version] = {
                (m.name, model): float(gpus) * 3600.0
                for m in in_force.members
                for model, gpus in m.purchased.items()
                if gpus
            }
        return purchased[version]

    versions: list[int | None] = (
        [None] * len(other)
        if version_of_hour is None
        else [
            None if pd.isna(v) else int(v)
            for v in other["hour"].map(version_of_hour).to_numpy(dtype=object)
        ]
    )
    covered = np.array(
        [
            purchased_seconds(v).get((m, g), 0.0)
            for m, g, v in zip(other["member"], other["gpu_model"], versions, strict=True)
        ],
        dtype="float64",
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(other_total > 0, np.minimum(1.0, covered / other_total), 0.0)
    split["within_purchase"] = 0.0
    split[CHARGED] = 0.0
    split.loc[~own, "within_purchase"] = other["gpu_seconds"].to_numpy() * fraction
    split.loc[~own, CHARGED] = other["gpu_seconds"].to_numpy() - split.loc[~own, "within_purchase"]
    split["own"] = np.where(own, split["gpu_seconds"], 0.0)
    return split


def on_own_nodes(split: pd.DataFrame) -> np.ndarray:
    """Rows of use on the member's own nodes."""
    return (split["member"] == split["owner"]).to_numpy()
