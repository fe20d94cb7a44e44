"""Turning one hour's Prometheus answers into ledger rows (pure; no I/O).

Sources, in order of trust:
1. fairpool's ``fairpool_pod_gpu_allocation`` gauge (GPUs held by the pod while it
   runs), integrated on the scrape grid;
2. for pods fairpool never reported (another scheduler placed them), kube-state-metrics:
   GPU requests x the time the pod ran, from its start/completion timestamps when both
   are known (a pod shorter than a scrape interval is billed its real duration), else
   from the grid points where its phase was Running.
Utilization is the DCGM exporter's mean over the pod's samples in the hour.
Coverage compares samples present with samples expected; an hour with no series at all
has no rows and is left pending by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from reports.costmodel.usage_row import USAGE_COLUMNS

UNASSIGNED = "unassigned"
UNKNOWN_MODEL = "unknown"

USAGE_OUT = [c for c in USAGE_COLUMNS if c != "hour"]
"""An hour's usage rows: the usage row without its hour (the ledger adds it)."""
CAPACITY_OUT = ["node", "owner", "gpu_model", "gpu_seconds_available", "coverage"]
RECLAIM_OUT = ["member", "gpu_model", "gpu_seconds_lost"]


@dataclass
class HourInputs:
    """Prometheus answers for one hour (frames already limited to that hour)."""

    hour: datetime
    interval: float
    fairpool_mean: pd.DataFrame
    fairpool_live: pd.DataFrame
    fairpool_present: pd.DataFrame
    fairpool_uids_around: set[str]
    ksm_requests: pd.DataFrame
    ksm_start: pd.DataFrame
    ksm_completion: pd.DataFrame
    ksm_info: pd.DataFrame
    ksm_running_sum: pd.DataFrame
    ksm_running_present: pd.DataFrame
    node_labels: pd.DataFrame
    capacity_mean: pd.DataFrame
    capacity_live: pd.DataFrame
    capacity_present: pd.DataFrame
    dcgm_engine_active: pd.DataFrame
    dcgm_gpu_util: pd.DataFrame
    reclaim_lost: dict[tuple[str, str], float] = field(default_factory=dict)


@dataclass
class HourRows:
    usage: pd.DataFrame
    capacity: pd.DataFrame
    reclaim_lost: pd.DataFrame
    coverage: float
    has_data: bool
    present: float
    expected: float


def _col(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame:
        return frame[name].fillna("").astype(str)
    return pd.Series([""] * len(frame), index=frame.index, dtype=str)


def _own_pod_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """`namespace`/`pod` from `exported_namespace`/`exported_pod` where those are set."""
    if "exported_namespace" not in frame and "exported_pod" not in frame:
        return frame
    frame = frame.copy()
    for label in ("namespace", "pod"):
        exported = _col(frame, f"exported_{label}")
        frame[label] = exported.where(exported != "", _col(frame, label))
    return frame


def _keyed(frame: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    out = pd.DataFrame({k: _col(frame, k) for k in keys})
    out[value] = frame["value"].astype(float) if "value" in frame else []
    return out


def build_hour(
    inputs: HourInputs,
    member_for_namespace: Callable[[str], str | None],
    policy_version: int,
) -> HourRows:
    interval = inputs.interval
    expected_node = 3600.0 / interval

    # ---- fairpool ------------------------------------------------------------------
    fp_keys = ["namespace", "pod", "uid", "member", "owner", "gpu_model", "node"]
    fp = _keyed(_own_pod_labels(inputs.fairpool_live), fp_keys, "live")
    for frame, name in ((inputs.fairpool_mean, "mean"), (inputs.fairpool_present, "present")):
        fp = fp.merge(_keyed(_own_pod_labels(frame), fp_keys, name), on=fp_keys, how="left")
    fp = fp.fillna({"mean": 0.0, "live": 0.0, "present": 0.0})
    fp["steps"] = fp["live"] * fp["mean"]
    fp = fp[fp["live"] > 0]
    fp_present, fp_expected = (
        float(fp["present"].clip(upper=fp["live"]).sum()),
        float(fp["live"].sum()),
    )
    fp = fp[fp["steps"] > 0]
    fp_rows = pd.DataFrame()
    if len(fp):
        fp = fp.assign(gpu_seconds=fp["steps"] * interval)
        grouped = fp.groupby("uid", sort=True)
        fp_rows = grouped.agg(
            namespace=("namespace", "first"),
            pod=("pod", "first"),
            member=("member", "first"),
            owner=("owner", "first"),
            gpu_model=("gpu_model", "first"),
            node=("node", "first"),
            gpu_seconds=("gpu_seconds", "sum"),
            present=("present", "sum"),
            live=("live", "sum"),
        ).reset_index()
        fp_rows["coverage"] = (fp_rows["present"] / fp_rows["live"]).clip(upper=1.0)
        fp_rows["source"] = "fairpool"
        fp_rows = _clip_to_runtime(fp_rows, inputs)

    # ---- kube-state-metrics fallback -----------------------------------------------
    pod_keys = ["namespace", "pod", "uid"]
    requests = _keyed(inputs.ksm_requests, pod_keys, "gpus")
    requests = requests[(requests["gpus"] > 0) & ~requests["uid"].isin(inputs.fairpool_uids_around)]
    ksm_present = ksm_expected = 0.0
    ksm_rows = pd.DataFrame()
    if len(requests):
        k = requests.merge(_keyed(inputs.ksm_start, pod_keys, "start"), on=pod_keys, how="left")
        k = k.merge(_keyed(inputs.ksm_completion, pod_keys, "completion"), on=pod_keys, how="left")
        k = k.merge(_keyed(inputs.ksm_running_sum, pod_keys, "steps"), on=pod_keys, how="left")
        k = k.merge(
            _keyed(inputs.ksm_running_present, pod_keys, "present"), on=pod_keys, how="left"
        )
        info = _keyed(inputs.ksm_info, [*pod_keys, "node"], "one").drop(columns="one")
        info = info[info["node"] != ""].drop_duplicates("uid")
        k = k.merge(info[["uid", "node"]], on="uid", how="left")
        k = k.fillna({"steps": 0.0, "present": 0.0, "node": ""})
        h0 = inputs.hour.timestamp()
        h1 = h0 + 3600.0
        exact = k["start"].notna() & k["completion"].notna() & (k["completion"] > k["start"])
        overlap = (
            np.minimum(k["completion"].fillna(h0), h1) - np.maximum(k["start"].fillna(h0), h0)
        ).clip(lower=0.0)
        # Without a completion time the Running samples decide (one interval each). A
        # start inside the hour adds the part before the first scrape (the pod ran from
        # its start, not from the scrape that first saw it); nothing is billed before it.
        start_in_hour = k["start"].where((k["start"] >= h0) & (k["start"] < h1))
        lead = (np.ceil(start_in_hour / interval) * interval - start_in_hour).fillna(0.0)
        by_steps = k["steps"] * interval + lead.where(k["steps"] > 0, 0.0)
        since_start = (h1 - np.maximum(k["start"].fillna(h0), h0)).clip(lower=0.0)
        # Samples expected from its start (or the hour's) to the end of the hour.
        k["live"] = np.ceil(since_start / interval)
        seconds = np.where(exact, overlap, np.minimum(by_steps, since_start))
        k = k.assign(gpu_seconds=seconds * k["gpus"])
        k["coverage"] = np.where(
            exact, 1.0, (k["present"] / k["live"].where(k["live"] > 0)).clip(upper=1.0)
        )
        k = k[k["gpu_seconds"] > 0].copy()
        k["coverage"] = k["coverage"].fillna(0.0)
        inexact = k[~exact.loc[k.index]]
        ksm_present = float(inexact["present"].clip(upper=inexact["live"]).sum())
        ksm_expected = float(inexact["live"].sum())
        labels = _keyed(
            inputs.node_labels,
            ["node", "label_fairpool_io_owner", "label_nvidia_com_gpu_product"],
            "one",
        ).drop_duplicates("node")
        k = k.merge(labels, on="node", how="left")
        k["owner"] = k["label_fairpool_io_owner"].fillna("").replace("", UNASSIGNED)
        k["gpu_model"] = k["label_nvidia_com_gpu_product"].fillna("").replace("", UNKNOWN_MODEL)
        k["member"] = ""
        k["source"] = "kube-state-metrics"
        ksm_rows = k.drop_duplicates("uid")

    usage = (
        pd.concat([f for f in (fp_rows, ksm_rows) if len(f)], ignore_index=True)
        if (len(fp_rows) or len(ksm_rows))
        else pd.DataFrame(columns=[*USAGE_OUT, "uid"])
    )
    if len(usage):
        usage = usage.rename(columns={"uid": "pod_uid"})
        usage["member"] = [
            m if m else (member_for_namespace(ns) or UNASSIGNED)
            for m, ns in zip(usage["member"].fillna(""), usage["namespace"], strict=True)
        ]
        usage["job_id"] = ""
        usage["policy_version"] = policy_version
        usage["utilization"] = _utilization(inputs, usage)
        usage = usage[USAGE_OUT].sort_values("pod_uid").reset_index(drop=True)
    else:
        usage = pd.DataFrame(columns=USAGE_OUT)

    # ---- capacity ------------------------------------------------------------------
    cap = _keyed(inputs.capacity_live, ["node"], "live")
    cap = cap.merge(_keyed(inputs.capacity_mean, ["node"], "mean"), on="node", how="left")
    cap["steps"] = cap["live"] * cap["mean"].fillna(0.0)
    cap = cap.groupby("node", as_index=False)["steps"].max()
    present = _keyed(inputs.capacity_present, ["node"], "present")
    present = present.groupby("node", as_index=False)["present"].max()
    cap = cap.merge(present, on="node", how="outer").fillna({"steps": 0.0, "present": 0.0})
    labels = _keyed(
        inputs.node_labels,
        ["node", "label_fairpool_io_owner", "label_nvidia_com_gpu_product"],
        "one",
    ).drop_duplicates("node")
    cap = cap.merge(labels, on="node", how="left")
    cap_present = float(cap["present"].clip(upper=expected_node).sum())
    cap_expected = expected_node * len(cap)
    capacity = pd.DataFrame(
        {
            "node": cap["node"],
            "owner": cap["label_fairpool_io_owner"].fillna("").replace("", UNASSIGNED),
            "gpu_model": cap["label_nvidia_com_gpu_product"].fillna("").replace("", UNKNOWN_MODEL),
            "gpu_seconds_available": cap["steps"] * interval,
            "coverage": (cap["present"] / expected_node).clip(upper=1.0),
        },
        columns=CAPACITY_OUT,
    )

    # ---- reclaim lost --------------------------------------------------------------
    reclaim = pd.DataFrame(
        [(m, g, v) for (m, g), v in sorted(inputs.reclaim_lost.items())],
        columns=RECLAIM_OUT,
    )

    present_total = fp_present + ksm_present + cap_present
    expected_total = fp_expected + ksm_expected + cap_expected
    has_data = expected_total > 0 or len(usage) > 0
    coverage = min(1.0, present_total / expected_total) if expected_total > 0 else 1.0
    return HourRows(usage, capacity, reclaim, coverage, has_data, present_total, expected_total)


def _clip_to_runtime(rows: pd.DataFrame, inputs: HourInputs) -> pd.DataFrame:
    """A pod shorter than a scrape interval holds one sample worth a whole interval;
    when kube-state-metrics knows its start and completion, bill no more than that."""
    times = _keyed(inputs.ksm_start, ["uid"], "start").groupby("uid")["start"].max()
    ends = _keyed(inputs.ksm_completion, ["uid"], "completion").groupby("uid")["completion"].max()
    start = rows["uid"].map(times)
    completion = rows["uid"].map(ends)
    known = start.notna() & completion.notna() & (completion > start)
    if not known.any():
        return rows
    h0 = inputs.hour.timestamp()
    overlap = (np.minimum(completion, h0 + 3600.0) - np.maximum(start, h0)).clip(lower=0.0)
    gpus = rows["gpu_seconds"] / (rows["live"] * inputs.interval)
    limit = overlap * gpus
    rows = rows.copy()
    rows.loc[known, "gpu_seconds"] = np.minimum(rows["gpu_seconds"], limit)[known]
    return rows[rows["gpu_seconds"] > 0]


def _utilization(inputs: HourInputs, usage: pd.DataFrame) -> pd.Series:
    """Mean DCGM utilization (0..1) per pod; NaN when the exporter has nothing."""
    means: list[pd.Series] = []
    for frame, scale in ((inputs.dcgm_engine_active, 1.0), (inputs.dcgm_gpu_util, 100.0)):
        if not len(frame):
            means.append(pd.Series(dtype=float))
            continue
        own = _own_pod_labels(frame)
        values = pd.DataFrame(
            {
                "namespace": _col(own, "namespace"),
                "pod": _col(own, "pod"),
                "value": frame["value"].astype(float) / scale,
            }
        )
        values = values[values["pod"] != ""]
        means.append(values.groupby(["namespace", "pod"])["value"].mean())
    engine, util = means
    combined = engine.combine_first(util) if len(engine) else util
    index = pd.MultiIndex.from_arrays([usage["namespace"], usage["pod"]])
    if not len(combined):
        return pd.Series(np.nan, index=usage.index)
    return pd.Series(combined.reindex(index).to_numpy(), index=usage.index).clip(0.0, 1.0)


def counter_increase(
    samples: list[tuple[float, float]], hours: list[datetime], baseline_before: float
) -> dict[datetime, float]:
    """Reset-aware increase of one counter, assigned to the hour of each later sample.

    A drop means the counter restarted from zero, so the new value is the increase
    (Prometheus' ``increase()`` semantics, without its extrapolation: exact sums). A
    first sample with no predecessor since `baseline_before` counts from zero (the
    series was born)."""
    out = {h: 0.0 for h in hours}
    bounds = [(h.timestamp(), (h + timedelta(hours=1)).timestamp(), h) for h in hours]
    previous: float | None = None
    for t, v in sorted(samples):
        if previous is None:
            delta = v if t >= baseline_before else None
        else:
            delta = v - previous if v >= previous else v
        previous = v
        if delta is None:
            continue
        for lo, hi, hour in bounds:
            if lo <= t < hi:
                out[hour] += delta
                break
    return out
