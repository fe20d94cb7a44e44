"""The hourly usage row, defined once: GPU-seconds of one pod within one UTC hour.

It is the grain the meter writes (`reports.metering.rows`), the ledger stores
(`reports.ledger.schema.usage_table`), the simulator writes (`usage.parquet`) and the
cost model bills (`reports.costmodel.frames`); each of them takes its columns from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

_REQUIRED = object()


@dataclass(frozen=True)
class UsageField:
    name: str
    kind: type
    """datetime (a UTC hour start), str, float or int."""
    doc: str
    key: bool = False
    """Part of the row's key (hour, pod)."""
    billed: bool = False
    """The cost model cannot bill without it."""
    default: Any = _REQUIRED
    """What a writer that leaves the column out gets (None: unknown)."""
    max_length: int = 253

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


USAGE_ROW: tuple[UsageField, ...] = (
    UsageField("hour", datetime, "start of the UTC hour", key=True, billed=True),
    UsageField("pod_uid", str, "the pod's UID", key=True, max_length=128),
    UsageField("namespace", str, "the pod's namespace"),
    UsageField("pod", str, "the pod's name", default=""),
    UsageField("job_id", str, "the job (gang) it belongs to", default=""),
    UsageField("member", str, "the member whose pod it is", billed=True),
    UsageField("owner", str, "the owner of the node it ran on", billed=True),
    UsageField("gpu_model", str, "the node's GPU model", billed=True),
    UsageField("node", str, "the node it ran on"),
    UsageField("gpu_seconds", float, "GPUs held x seconds within the hour", billed=True),
    UsageField("utilization", float, "GPU activity 0..1 (None: unknown)", default=None),
    UsageField("coverage", float, "share of the hour's expected samples found, 0..1"),
    UsageField("policy_version", int, "the policy version in force"),
    UsageField(
        "source",
        str,
        '"fairpool", "kube-state-metrics" or "simulation"',
        default="fairpool",
        max_length=32,
    ),
)

USAGE_COLUMNS = [f.name for f in USAGE_ROW]
BILLED_USAGE_COLUMNS = tuple(f.name for f in USAGE_ROW if f.billed)
USAGE_DEFAULTS: dict[str, Any] = {f.name: f.default for f in USAGE_ROW if not f.required}
USAGE_SOURCES = ("fairpool", "kube-state-metrics", "simulation")

_DTYPES = {datetime: "datetime64[ns, UTC]", str: "object", float: "float64", int: "int64"}
USAGE_DTYPES = {f.name: _DTYPES[f.kind] for f in USAGE_ROW}


def usage_frame(frame: pd.DataFrame, **defaults: Any) -> pd.DataFrame:
    """`frame` with exactly the usage row's columns, in order and typed; a missing column
    takes `defaults`, else the row's default (a required column cannot be missing)."""
    missing = [c for c in USAGE_COLUMNS if c not in frame and c not in defaults]
    required = [c for c in missing if c not in USAGE_DEFAULTS]
    if required:
        raise ValueError(f"usage rows lack column(s) {', '.join(required)}")
    frame = frame.assign(
        **{c: defaults.get(c, USAGE_DEFAULTS.get(c)) for c in USAGE_COLUMNS if c not in frame}
    )
    return frame[USAGE_COLUMNS].astype(USAGE_DTYPES)
