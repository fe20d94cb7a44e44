"""Coverage of metered hours, per hour, node and source (pure).

Coverage is the share of the samples expected in the hour that Prometheus holds, for
each source separately:

- **allocation**: samples of the pods' allocation series (fairpool's gauge, else
  kube-state-metrics' Running phase) found, over the scrape-grid points at which each
  pod was live. A pod billed from its exact start and completion times counts as fully
  covered.
- **capacity**: samples of the node's `kube_node_status_allocatable` found, over one
  per scrape interval of the hour.
- **utilization**: DCGM samples found for the pods on the node (either metric, per GPU),
  over one per scrape interval for each GPU a pod held (its GPU-seconds / interval).

A source with no samples expected on a node in that hour has no coverage (NULL), not 1.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

NODE_COVERAGE_OUT = ["node", "allocation", "capacity", "utilization"]


def node_coverage(
    allocation: pd.DataFrame,
    capacity: pd.DataFrame,
    usage: pd.DataFrame,
    dcgm_counts: pd.Series,
    interval: float,
    hour: str = "h0",
) -> pd.DataFrame:
    """One row per hour and node, the hour in column `hour`.

    `allocation`: `hour`, `node`, `present`, `live` per pod; `capacity`: the capacity
    rows (`hour`, `node`, `coverage`); `usage`: the usage rows (`hour`, `namespace`,
    `pod`, `node`, `gpu_seconds`); `dcgm_counts`: DCGM samples per (hour, namespace,
    pod)."""
    keys = [hour, "node"]
    parts: list[pd.Series] = []
    if len(allocation):
        sums = _exact_sums(allocation, keys, ["present", "live"])
        parts.append((sums["present"] / sums["live"].where(sums["live"] > 0)).rename("allocation"))
    if len(capacity):
        parts.append(capacity.set_index(keys)["coverage"].rename("capacity"))
    if len(usage):
        expected = usage["gpu_seconds"].to_numpy(dtype=float) / interval
        index = pd.MultiIndex.from_arrays([usage[hour], usage["namespace"], usage["pod"]])
        found = dcgm_counts.reindex(index).fillna(0.0).to_numpy(dtype=float)
        per_pod = pd.DataFrame(
            {
                hour: usage[hour].to_numpy(),
                "node": usage["node"].to_numpy(),
                "found": np.minimum(found, expected),
                "expected": expected,
            }
        )
        sums = _exact_sums(per_pod, keys, ["found", "expected"])
        parts.append(
            (sums["found"] / sums["expected"].where(sums["expected"] > 0)).rename("utilization")
        )
    columns = [hour, *NODE_COVERAGE_OUT]
    if not parts:
        return pd.DataFrame(
            {c: pd.Series(dtype="object" if c == "node" else "float64") for c in columns}
        )
    table = pd.concat(parts, axis=1).reindex(columns=NODE_COVERAGE_OUT[1:])
    table = table.clip(upper=1.0).astype("float64")
    table.index.names = keys
    # Rows in (hour, node) order whatever the sources' order: an hour's rows do not
    # depend on the other hours of its chunk.
    return table.sort_index().reset_index()[columns]


def _exact_sums(frame: pd.DataFrame, keys: list[str], columns: list[str]) -> pd.DataFrame:
    """Correctly rounded sums of `columns` per `keys` (sorted): an hour's figures then do
    not depend on which other hours were summed alongside it (pandas' grouped sums can
    differ in the last bit). Whole numbers (sample counts) below 2**53 add up exactly in
    any order; other columns are summed with `math.fsum`, group by group."""
    grouped = frame.groupby(keys, sort=True)
    numbers = grouped.ngroup().to_numpy(dtype=float, na_value=np.nan)
    index = grouped.size().index
    kept = ~np.isnan(numbers) & (numbers >= 0)  # rows with a missing key: no group
    codes = numbers[kept].astype(np.int64)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(index) + 1))
    sums: dict[str, np.ndarray] = {}
    for column in columns:
        values = frame[column].to_numpy(dtype=float)[kept]
        whole = np.isfinite(values).all() and (values == np.floor(values)).all()
        if whole and np.abs(values).sum() < 2.0**53:
            sums[column] = np.bincount(codes, weights=values, minlength=len(index))
        else:
            ordered = values[order]
            sums[column] = np.array(
                [math.fsum(ordered[a:b]) for a, b in itertools.pairwise(bounds)],
                dtype=float,
            )
    return pd.DataFrame(sums, index=index)


def source_coverage(table: pd.DataFrame) -> dict[str, float | None]:
    """Mean coverage per source over the nodes that expected samples of it."""
    out: dict[str, float | None] = {}
    for source in NODE_COVERAGE_OUT[1:]:
        values = table[source].dropna() if source in table else pd.Series(dtype=float)
        out[source] = float(values.mean()) if len(values) else None
    return out
