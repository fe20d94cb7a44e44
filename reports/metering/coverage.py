"""Coverage of one metered hour, per node and per source (pure).

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

import numpy as np
import pandas as pd

NODE_COVERAGE_OUT = ["node", "allocation", "capacity", "utilization"]


def node_coverage(
    allocation: pd.DataFrame,
    capacity: pd.DataFrame,
    usage: pd.DataFrame,
    dcgm_counts: pd.Series,
    interval: float,
) -> pd.DataFrame:
    """One row per node.

    `allocation`: `node`, `present`, `live` per pod; `capacity`: the capacity rows
    (`node`, `coverage`); `usage`: the usage rows (`namespace`, `pod`, `node`,
    `gpu_seconds`); `dcgm_counts`: DCGM samples per (namespace, pod)."""
    parts: list[pd.Series] = []
    if len(allocation):
        sums = allocation.groupby("node")[["present", "live"]].sum()
        parts.append((sums["present"] / sums["live"].where(sums["live"] > 0)).rename("allocation"))
    if len(capacity):
        parts.append(capacity.set_index("node")["coverage"].rename("capacity"))
    if len(usage):
        expected = usage["gpu_seconds"].to_numpy(dtype=float) / interval
        index = pd.MultiIndex.from_arrays([usage["namespace"], usage["pod"]])
        found = dcgm_counts.reindex(index).fillna(0.0).to_numpy(dtype=float)
        per_pod = pd.DataFrame(
            {
                "node": usage["node"].to_numpy(),
                "found": np.minimum(found, expected),
                "expected": expected,
            }
        )
        sums = per_pod.groupby("node")[["found", "expected"]].sum()
        parts.append(
            (sums["found"] / sums["expected"].where(sums["expected"] > 0)).rename("utilization")
        )
    if not parts:
        return pd.DataFrame(
            {c: pd.Series(dtype="object" if c == "node" else "float64") for c in NODE_COVERAGE_OUT}
        )
    table = pd.concat(parts, axis=1).reindex(columns=NODE_COVERAGE_OUT[1:])
    table = table.clip(upper=1.0).astype("float64")
    table.index.name = "node"
    return table.reset_index()[NODE_COVERAGE_OUT]


def source_coverage(table: pd.DataFrame) -> dict[str, float | None]:
    """Mean coverage per source over the nodes that expected samples of it."""
    out: dict[str, float | None] = {}
    for source in NODE_COVERAGE_OUT[1:]:
        values = table[source].dropna() if source in table else pd.Series(dtype=float)
        out[source] = float(values.mean()) if len(values) else None
    return out
