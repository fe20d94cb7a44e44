"""Nodes whose owner label names no member are unowned (pure).

docs/glossary.md: a node whose `fairpool.io/owner` label names no member of the policy is
**unowned**, its GPUs pool capacity that is nobody's contribution. The scheduler reads it
so: such a node adds to nobody's entitlement (`scheduler.engine.entitlement`), whatever the
label says. The meter records the label as it finds it, so the bill decides: in each hour,
an owner that is no member of the policy version in force that hour is billed as
`UNATTRIBUTED`, like a node without the label. Passed through, a typo (`lab-bioo`) became
a member of its own in the report, credited with the node's capacity. Decided per hour, a
member removed from the policy on the 20th still owns its nodes in the hours before.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from policies.model import Policy
from reports.costmodel.frames import HOUR_DTYPE, UNATTRIBUTED, empty_frame

FOUND_COLUMNS = ["hour", "owner", "node", "gpu_seconds", "gpu_seconds_available"]
FLAGGED_NODES = 10
"""Nodes named one by one in a flag about one label value."""


def owners_to_unowned(
    frame: pd.DataFrame,
    version_of_hour: pd.Series,
    known: Mapping[int, Policy],
    policy: Policy,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(`frame` with each `owner` that names no member of the policy version in force in
    its hour replaced by `UNATTRIBUTED`, the rows replaced as they were: `FOUND_COLUMNS`).

    An hour's version is `version_of_hour`'s; its members those of `known[version]`, else
    of `policy` (a version the report has no document of is priced with `policy` too)."""
    if frame.empty:
        return frame, _empty_found()
    versions = frame["hour"].map(version_of_hour).fillna(policy.version).astype("int64")
    pairs = pd.DataFrame({"version": versions, "owner": frame["owner"]})
    unknown = {
        (int(version), str(owner))
        for version, owner in pairs.drop_duplicates().itertuples(index=False)
        if owner != UNATTRIBUTED and owner not in known.get(int(version), policy).member_names()
    }
    if not unknown:
        return frame, _empty_found()
    mask = pd.MultiIndex.from_frame(pairs).isin(list(unknown))
    found = frame.loc[mask].reindex(columns=FOUND_COLUMNS)
    found = found.fillna({"node": "", "gpu_seconds": 0.0, "gpu_seconds_available": 0.0})
    relabelled = frame.copy()
    relabelled.loc[mask, "owner"] = UNATTRIBUTED
    return relabelled, found.reset_index(drop=True)


def _empty_found() -> pd.DataFrame:
    return empty_frame(
        {
            "hour": HOUR_DTYPE,
            "owner": "object",
            "node": "object",
            "gpu_seconds": "float64",
            "gpu_seconds_available": "float64",
        }
    )


def unowned_flags(found: pd.DataFrame) -> list[str]:
    """One flag per owner label value that named no member (`owners_to_unowned`'s rows of
    usage and capacity together): its nodes, hours, capacity and use, so that the operator
    can correct the label."""
    flags: list[str] = []
    for owner, rows in found.groupby("owner", sort=True):
        nodes = sorted(set(rows["node"]) - {""})
        named = ", ".join(nodes[:FLAGGED_NODES])
        if len(nodes) > FLAGGED_NODES:
            named += f" and {len(nodes) - FLAGGED_NODES} more"
        hours = pd.DatetimeIndex(rows["hour"].unique()).sort_values()
        span = f"{hours[0]:%Y-%m-%d %H:%M}Z"
        if len(hours) > 1:
            span += f" to {hours[-1]:%Y-%m-%d %H:%M}Z"
        flags.append(
            f"owner label '{owner}' names no member of the policy in force in "
            f"{len(hours)} hour(s) ({span})"
            + (f", on node(s) {named}" if named else "")
            + f": unowned there, its {rows['gpu_seconds_available'].sum() / 3600:.1f} GPU-hours "
            f"of capacity and {rows['gpu_seconds'].sum() / 3600:.1f} GPU-hours used on it are "
            f"billed as '{UNATTRIBUTED}' (correct the nodes' fairpool.io/owner label if it is "
            "a typo)"
        )
    return flags
