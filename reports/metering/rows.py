"""Turning one hour's Prometheus answers into ledger rows (pure; no I/O).

Sources, in order of trust:
1. fairpool's ``fairpool_pod_gpu_allocation`` gauge (GPUs held by the pod while it
   runs), integrated on the scrape grid;
2. for pods fairpool never reported (another scheduler placed them), kube-state-metrics:
   GPU requests x the time the pod ran, from its start/completion timestamps when both
   are known (a pod shorter than a scrape interval is billed its real duration), else
   from the grid points where its phase was Running.
Node, owner, GPU model and member come from every source that carries them, in the
order `reports.metering.attribution` documents; what none gives is `unattributed`.
Utilization is the DCGM exporter's mean over the pod's samples in the hour.
Coverage compares samples present with samples expected; an hour with no series at all
has no rows and is left pending by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

import numpy as np
import pandas as pd

from reports.costmodel.usage_row import USAGE_COLUMNS
from reports.metering.attribution import attribute, capacity_attributes, node_labels
from reports.metering.coverage import node_coverage

T = TypeVar("T")

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
    shared: dict[str, Any] = field(default_factory=dict)
    """What is computed from the chunk-wide frames (pod and node attributes), once for
    all the hours of a chunk: the meter passes the same dict to each of them."""
    dcgm_engine_count: pd.DataFrame = field(default_factory=pd.DataFrame)
    """DCGM samples per GPU series in the hour (for the utilization coverage)."""
    dcgm_util_count: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass
class HourRows:
    usage: pd.DataFrame
    capacity: pd.DataFrame
    reclaim_lost: pd.DataFrame
    coverage: float
    has_data: bool
    present: float
    expected: float
    node_coverage: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per node: allocation, capacity and utilization coverage (`reports.metering.coverage`)."""


def _col(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame:
        column = frame[name]
        if pd.api.types.is_string_dtype(column) and not column.hasnans:
            return column  # already text (Prometheus labels): no copy
        return column.fillna("").astype(str)
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


@dataclass
class _Sampled:
    """Rows from one source and how many of the samples they expect were present."""

    rows: pd.DataFrame
    present: float
    expected: float
    node_coverage: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per node: allocation, capacity and utilization coverage (`reports.metering.coverage`)."""


def build_hour(
    inputs: HourInputs,
    member_for_namespace: Callable[[str], str | None],
    policy_version: int,
) -> HourRows:
    fairpool = _fairpool_rows(inputs)
    fallback = _kube_state_rows(inputs)
    usage = _usage(fairpool.rows, fallback.rows, inputs, member_for_namespace, policy_version)
    capacity = _capacity_rows(inputs)
    reclaim = _reclaim_rows(inputs)
    present_total = fairpool.present + fallback.present + capacity.present
    expected_total = fairpool.expected + fallback.expected + capacity.expected
    has_data = expected_total > 0 or len(usage) > 0
    coverage = min(1.0, present_total / expected_total) if expected_total > 0 else 1.0
    per_node = node_coverage(
        _allocation_samples(fairpool.rows, fallback.rows, usage),
        capacity.rows,
        usage,
        _dcgm_counts(inputs),
        inputs.interval,
    )
    return HourRows(
        usage,
        capacity.rows,
        reclaim,
        coverage,
        has_data,
        present_total,
        expected_total,
        per_node,
    )


def _allocation_samples(
    fairpool: pd.DataFrame, kube_state: pd.DataFrame, usage: pd.DataFrame
) -> pd.DataFrame:
    """`node`, `present`, `live` per billed pod (its node as attributed); a pod billed
    from exact start and completion times is fully covered."""
    parts = []
    if len(fairpool):
        parts.append(fairpool[["uid", "present", "live"]])
    if len(kube_state):
        exact = (
            kube_state["start"].notna()
            & kube_state["completion"].notna()
            & (kube_state["completion"] > kube_state["start"])
        )
        live = kube_state["live"].where(~exact, 1.0)
        present = kube_state["present"].where(~exact, 1.0).clip(upper=live)
        parts.append(pd.DataFrame({"uid": kube_state["uid"], "present": present, "live": live}))
    if not parts or not len(usage):
        return pd.DataFrame(columns=["node", "present", "live"])
    samples = pd.concat(parts, ignore_index=True)
    node_of = dict(zip(usage["pod_uid"], usage["node"], strict=True))
    samples["node"] = samples["uid"].map(node_of)
    samples["present"] = samples["present"].clip(upper=samples["live"])
    return samples.dropna(subset=["node"])[["node", "present", "live"]]


def _dcgm_counts(inputs: HourInputs) -> pd.Series:
    """DCGM samples per (namespace, pod) in the hour, summed over its GPUs; the larger of
    the two metrics when an exporter publishes both."""
    counts: list[pd.Series] = []
    for frame in (inputs.dcgm_engine_count, inputs.dcgm_util_count):
        if not len(frame) or "value" not in frame:
            continue
        own = _own_pod_labels(frame)
        values = pd.DataFrame(
            {
                "namespace": _col(own, "namespace"),
                "pod": _col(own, "pod"),
                "value": frame["value"].astype(float),
            }
        )
        counts.append(values[values["pod"] != ""].groupby(["namespace", "pod"])["value"].sum())
    if not counts:
        return pd.Series(dtype=float)
    return pd.concat(counts, axis=1).max(axis=1)


def _fairpool_rows(inputs: HourInputs) -> _Sampled:
    """Pods fairpool reported: its allocation gauge integrated on the scrape grid."""
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
    if not len(fp):
        return _Sampled(pd.DataFrame(), fp_present, fp_expected)
    fp = fp.assign(gpu_seconds=fp["steps"] * inputs.interval)
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
    return _Sampled(_clip_to_runtime(fp_rows, inputs), fp_present, fp_expected)


_POD_KEYS = ["namespace", "pod", "uid"]


def _once(inputs: HourInputs, key: str, compute: Callable[[], T]) -> T:
    """`compute()` once per chunk (the hours of a chunk share `inputs.shared`)."""
    if key not in inputs.shared:
        inputs.shared[key] = compute()
    return cast(T, inputs.shared[key])


def _known_nodes(inputs: HourInputs) -> pd.DataFrame:
    return _once(inputs, "node_labels", lambda: node_labels(inputs.node_labels).set_index("node"))


def _kube_state_rows(inputs: HourInputs) -> _Sampled:
    """Pods fairpool never reported: GPU requests x the time kube-state-metrics saw them run."""
    base = _once(inputs, "kube_state_pods", lambda: _kube_state_base(inputs))
    if not len(base):
        return _Sampled(pd.DataFrame(), 0.0, 0.0)
    k = _kube_state_pods(base, inputs)
    exact = k["start"].notna() & k["completion"].notna() & (k["completion"] > k["start"])
    k = _kube_state_seconds(k, exact, inputs)
    inexact = k[~exact.loc[k.index]]
    ksm_present = float(inexact["present"].clip(upper=inexact["live"]).sum())
    ksm_expected = float(inexact["live"].sum())
    k["owner"] = ""
    k["gpu_model"] = ""
    k["member"] = ""
    k["source"] = "kube-state-metrics"
    return _Sampled(k.drop_duplicates("uid"), ksm_present, ksm_expected)


def _pod_requests(frame: pd.DataFrame) -> pd.DataFrame:
    """GPUs each pod requests and the node its request series names ('' if none): a pod
    scheduled after it was created has a series without and one with its node."""
    requests = _keyed(frame, [*_POD_KEYS, "node"], "gpus")
    return requests.groupby(_POD_KEYS, as_index=False).agg(
        gpus=("gpus", "max"), node=("node", "max")
    )


def _kube_state_base(inputs: HourInputs) -> pd.DataFrame:
    """The chunk's pods that requested GPUs and that fairpool never reported, with their
    start, completion and node (the request's own node label first, then
    kube_pod_info's)."""
    requests = _pod_requests(inputs.ksm_requests)
    requests = requests[(requests["gpus"] > 0) & ~requests["uid"].isin(inputs.fairpool_uids_around)]
    if not len(requests):
        return requests
    k = requests.merge(_keyed(inputs.ksm_start, _POD_KEYS, "start"), on=_POD_KEYS, how="left")
    k = k.merge(_keyed(inputs.ksm_completion, _POD_KEYS, "completion"), on=_POD_KEYS, how="left")
    info = _keyed(inputs.ksm_info, [*_POD_KEYS, "node"], "one").drop(columns="one")
    info = info[info["node"] != ""].drop_duplicates("uid")
    k = k.merge(info[["uid", "node"]].rename(columns={"node": "info_node"}), on="uid", how="left")
    k["info_node"] = k["info_node"].fillna("")
    k["node"] = k["node"].where(k["node"] != "", k.pop("info_node"))
    return k


def _kube_state_pods(base: pd.DataFrame, inputs: HourInputs) -> pd.DataFrame:
    """Each requesting pod with its start, completion, node and Running samples this hour."""
    steps = _keyed(inputs.ksm_running_sum, ["uid"], "steps").groupby("uid")["steps"].max()
    present = _keyed(inputs.ksm_running_present, ["uid"], "present")
    present = present.groupby("uid")["present"].max()
    k = base.copy()
    k["steps"] = k["uid"].map(steps).fillna(0.0).astype(float)
    k["present"] = k["uid"].map(present).fillna(0.0).astype(float)
    return k


def _kube_state_seconds(k: pd.DataFrame, exact: pd.Series, inputs: HourInputs) -> pd.DataFrame:
    """GPU-seconds and coverage of each pod: exact from its start and completion times
    when both are known, else from its Running samples; pods that used nothing dropped."""
    interval = inputs.interval
    h0 = inputs.hour.timestamp()
    h1 = h0 + 3600.0
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
    return k


def _usage(
    fp_rows: pd.DataFrame,
    ksm_rows: pd.DataFrame,
    inputs: HourInputs,
    member_for_namespace: Callable[[str], str | None],
    policy_version: int,
) -> pd.DataFrame:
    """Both sources' pods as usage rows, each charged to its member."""
    if not (len(fp_rows) or len(ksm_rows)):
        return pd.DataFrame(columns=USAGE_OUT)
    usage = pd.concat([f for f in (fp_rows, ksm_rows) if len(f)], ignore_index=True)
    usage = attribute(
        usage.rename(columns={"uid": "pod_uid"}), _known_nodes(inputs), member_for_namespace
    )
    usage["job_id"] = ""
    usage["policy_version"] = policy_version
    usage["utilization"] = _utilization(inputs, usage)
    return usage[USAGE_OUT].sort_values("pod_uid").reset_index(drop=True)


def _capacity_rows(inputs: HourInputs) -> _Sampled:
    """GPU-seconds each node had available, from its capacity gauge."""
    expected_node = 3600.0 / inputs.interval
    cap = _keyed(inputs.capacity_live, ["node"], "live")
    cap = cap.merge(_keyed(inputs.capacity_mean, ["node"], "mean"), on="node", how="left")
    cap["steps"] = cap["live"] * cap["mean"].fillna(0.0)
    cap = cap.groupby("node", as_index=False)["steps"].max()
    present = _keyed(inputs.capacity_present, ["node"], "present")
    present = present.groupby("node", as_index=False)["present"].max()
    cap = cap.merge(present, on="node", how="outer").fillna({"steps": 0.0, "present": 0.0})
    cap = cap.join(capacity_attributes(cap["node"], _known_nodes(inputs)))
    cap_present = float(cap["present"].clip(upper=expected_node).sum())
    cap_expected = expected_node * len(cap)
    capacity = pd.DataFrame(
        {
            "node": cap["node"],
            "owner": cap["owner"],
            "gpu_model": cap["gpu_model"],
            "gpu_seconds_available": cap["steps"] * inputs.interval,
            "coverage": (cap["present"] / expected_node).clip(upper=1.0),
        },
        columns=CAPACITY_OUT,
    )
    return _Sampled(capacity, cap_present, cap_expected)


def _reclaim_rows(inputs: HourInputs) -> pd.DataFrame:
    return pd.DataFrame(
        [(m, g, v) for (m, g), v in sorted(inputs.reclaim_lost.items())],
        columns=RECLAIM_OUT,
    )


def _clip_to_runtime(rows: pd.DataFrame, inputs: HourInputs) -> pd.DataFrame:
    """A pod shorter than a scrape interval holds one sample worth a whole interval;
    when kube-state-metrics knows its start and completion, bill no more than that."""
    times, ends = _once(inputs, "pod_times", lambda: _pod_times(inputs))
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


def _pod_times(inputs: HourInputs) -> tuple[pd.Series, pd.Series]:
    """Start and completion time of each pod uid kube-state-metrics knows."""
    times = _keyed(inputs.ksm_start, ["uid"], "start").groupby("uid")["start"].max()
    ends = _keyed(inputs.ksm_completion, ["uid"], "completion").groupby("uid")["completion"].max()
    return times, ends


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
