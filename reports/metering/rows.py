"""Turning Prometheus answers about consecutive hours into ledger rows (pure; no I/O).

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
has no rows and is left pending by the caller. A figure Prometheus answers NaN is no
figure either (one NaN sample in the hour makes its `avg_over_time` or `sum_over_time`
NaN, and a last value NaN is NaN): a pod's allocation, a node's allocatable GPUs, and for
a pod kube-state-metrics bills its GPU request or, billed from its Running samples, their
sum. The series is named in `HourRows.not_a_number`, and the caller leaves that hour
pending too.

A chunk of hours is built at once (`build_chunk`): every figure is grouped by hour and
pod or node, so an hour's rows are exactly those it gives alone (`build_hour`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from reports.costmodel.usage_row import USAGE_COLUMNS
from reports.metering.attribution import (
    attribute,
    capacity_attributes,
    hour_node_key,
    node_labels_by_hour,
    text,
)
from reports.metering.coverage import NODE_COVERAGE_OUT, node_coverage
from reports.metering.promql import (
    FAIRPOOL_ALLOCATION,
    KSM_ALLOCATABLE,
    KSM_REQUESTS,
    KSM_RUNNING,
    RECLAIM_LOST,
)

USAGE_OUT = [c for c in USAGE_COLUMNS if c != "hour"]
"""An hour's usage rows: the usage row without its hour (the ledger adds it)."""
CAPACITY_OUT = ["node", "owner", "gpu_model", "gpu_seconds_available", "coverage"]
RECLAIM_OUT = ["member", "gpu_model", "cause", "gpu_seconds_lost"]
LostKey = tuple[str, str, str]
"""(member, GPU model, cause) of GPU-seconds lost to reclaim ("" when the counter had no
cause: written before fairpool recorded it)."""


HOURLY = (
    "fairpool_mean",
    "fairpool_live",
    "fairpool_present",
    "ksm_running_sum",
    "ksm_running_present",
    "capacity_mean",
    "capacity_live",
    "capacity_present",
    "capacity_not_ready",
    "dcgm_engine_active",
    "dcgm_gpu_util",
    "dcgm_engine_count",
    "dcgm_util_count",
)
"""The answers that hold one figure per series and hour (the rest are chunk-wide)."""

H0 = "h0"
"""Internal column: the start of the row's hour, Unix seconds."""

_NO_ANSWER = pd.DataFrame({"value": pd.Series([], dtype=float)})
"""An hourly answer without any series."""

InForce = Callable[[datetime], tuple[Callable[[str], str | None], int]]
"""The policy in force at an hour: its member for a namespace, and its version."""


@dataclass
class ChunkInputs:
    """Prometheus answers for consecutive hours: the hourly frames carry an `hour`
    column (UTC start), the pods' attributes cover the whole chunk."""

    hours: list[datetime]
    interval: float
    fairpool_mean: pd.DataFrame
    fairpool_live: pd.DataFrame
    fairpool_present: pd.DataFrame
    fairpool_uids_by_hour: dict[datetime, set[str]]
    """The pods fairpool reported around each hour (a sample in (h - max_gap, h + 1h +
    max_gap]): kube-state-metrics bills a pod in the hours fairpool did not report it,
    whatever it reported in the chunk's other hours."""
    ksm_requests: pd.DataFrame
    ksm_start: pd.DataFrame
    ksm_completion: pd.DataFrame
    ksm_info: pd.DataFrame
    ksm_running_sum: pd.DataFrame
    ksm_running_present: pd.DataFrame
    node_labels_by_hour: pd.DataFrame
    """The nodes' labels as they were around each hour (an hourly answer): a node's owner
    and GPU model label in an hour are those around that hour, as for a chunk of that
    hour alone."""
    capacity_mean: pd.DataFrame
    capacity_live: pd.DataFrame
    capacity_present: pd.DataFrame
    dcgm_engine_active: pd.DataFrame
    dcgm_gpu_util: pd.DataFrame
    dcgm_engine_count: pd.DataFrame
    dcgm_util_count: pd.DataFrame
    reclaim_lost: dict[datetime, dict[LostKey, float]] = field(default_factory=dict)
    capacity_not_ready: pd.DataFrame = field(default_factory=lambda: _NO_ANSWER.copy())
    """Each node's live grid points in which kube-state-metrics said it was NotReady
    (`MeteringQueries.zero_points`): none for a node without a Ready series."""
    kube_state_uids_by_hour: dict[datetime, set[str]] | None = None
    """The pods whose GPU request series kube-state-metrics reported around each hour (as
    `fairpool_uids_by_hour`). Given, it bills a pod only in those hours: in the chunk,
    the pod's start and completion times, read around the whole chunk, billed it in an
    hour Prometheus holds nothing of (all scrapes failed), which alone stays pending."""

    def fairpool_reported(self) -> set[str]:
        """The pods kube-state-metrics bills in none of the chunk's hours."""
        found = [self.fairpool_uids_by_hour.get(h, set()) for h in self.hours]
        return set.intersection(*found) if found else set()


@dataclass
class HourInputs:
    """Prometheus answers for one hour (frames already limited to that hour)."""

    hour: datetime
    interval: float
    fairpool_mean: pd.DataFrame
    fairpool_live: pd.DataFrame
    fairpool_present: pd.DataFrame
    fairpool_uids_around: set[str]
    """The pods fairpool reported around the hour."""
    ksm_requests: pd.DataFrame
    ksm_start: pd.DataFrame
    ksm_completion: pd.DataFrame
    ksm_info: pd.DataFrame
    ksm_running_sum: pd.DataFrame
    ksm_running_present: pd.DataFrame
    node_labels: pd.DataFrame
    """The nodes' labels around the hour."""
    capacity_mean: pd.DataFrame
    capacity_live: pd.DataFrame
    capacity_present: pd.DataFrame
    dcgm_engine_active: pd.DataFrame
    dcgm_gpu_util: pd.DataFrame
    reclaim_lost: dict[LostKey, float] = field(default_factory=dict)
    dcgm_engine_count: pd.DataFrame = field(default_factory=pd.DataFrame)
    """DCGM samples per GPU series in the hour (for the utilization coverage)."""
    dcgm_util_count: pd.DataFrame = field(default_factory=pd.DataFrame)
    capacity_not_ready: pd.DataFrame = field(default_factory=lambda: _NO_ANSWER.copy())

    def as_chunk(self) -> ChunkInputs:
        """The same answers as a chunk of this one hour."""
        frames = {
            name: getattr(self, name).drop(columns="hour", errors="ignore").assign(hour=self.hour)
            for name in (*HOURLY, "node_labels")
        }
        chunk_wide = {
            name: getattr(self, name)
            for name in ("ksm_requests", "ksm_start", "ksm_completion", "ksm_info")
        }
        return ChunkInputs(
            hours=[self.hour],
            interval=self.interval,
            fairpool_uids_by_hour={self.hour: self.fairpool_uids_around},
            node_labels_by_hour=frames.pop("node_labels"),
            reclaim_lost={self.hour: self.reclaim_lost},
            **frames,
            **chunk_wide,
        )


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
    not_a_number: list[str] = field(default_factory=list)
    """The series whose figure for the hour Prometheus answered NaN (a mean, a sum, a
    GPU request, a counter's increase), each named with the hour, sorted: their
    GPU-seconds are unknown (not 0), so the hour's rows are not the hour's use."""


def _col(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame:
        column = frame[name]
        if name == H0:
            return column
        if pd.api.types.is_string_dtype(column) and not column.hasnans:
            return column  # already text (Prometheus labels): no copy
        return column.fillna("").astype(str)
    return pd.Series([""] * len(frame), index=frame.index, dtype=str)


def _own_pod_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """`namespace`/`pod` from `exported_namespace`/`exported_pod` where those are set;
    `exporter`: the scraped replica's pod then ('' otherwise), which tells apart the
    series of two replicas that each reported the same pod (a leader change)."""
    if "exported_namespace" not in frame and "exported_pod" not in frame:
        return frame.assign(exporter="")
    frame = frame.copy()
    exported_pod = _col(frame, "exported_pod")
    frame["exporter"] = _col(frame, "pod").where(exported_pod != "", "")
    for label in ("namespace", "pod"):
        exported = _col(frame, f"exported_{label}")
        frame[label] = exported.where(exported != "", _col(frame, label))
    return frame


def _keyed(frame: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    out = pd.DataFrame({k: _col(frame, k) for k in keys})
    out[value] = frame["value"].astype(float) if "value" in frame else []
    return out


SAID_NAN = "said_nan"
"""Internal column: Prometheus answered NaN for the row's mean."""


def _keyed_mean(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """`_keyed` of a mean's answer (`mean`), with `said_nan`. Merged onto the live
    points, a NaN answer and a series absent from the answer (no sample in the hour,
    live from the last one before it) are both a missing mean: only the answer tells
    them apart."""
    out = _keyed(frame, keys, "mean")
    out[SAID_NAN] = out["mean"].isna()
    return out


def _said_nan(merged: pd.DataFrame) -> pd.Series:
    """Which rows of a frame `_keyed_mean` was merged onto (`how="left"`) had a NaN
    mean, and so count: with live points in the hour (rows the mean's answer lacks are
    NaN there, not True)."""
    return merged.pop(SAID_NAN).eq(True) & (merged["live"].fillna(0.0) > 0)


def _not_a_number(h0: pd.Series, series: pd.Series) -> pd.DataFrame:
    """`h0` and `series`, the description of each series whose hour's mean was NaN."""
    return pd.DataFrame({H0: h0.to_numpy(dtype=float), "series": series.to_numpy(dtype=object)})


_NO_NAN = pd.DataFrame({H0: pd.Series([], dtype=float), "series": pd.Series([], dtype=object)})


def _hour_seconds(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with `h0`, its `hour` as Unix seconds (one number per row is cheaper to
    group and compute with than a timestamp)."""
    if "hour" not in frame:
        return frame.assign(**{H0: pd.Series([], dtype=float)}) if not len(frame) else frame
    seconds = (pd.to_datetime(frame["hour"], utc=True) - _EPOCH) / pd.Timedelta(seconds=1)
    return frame.assign(**{H0: seconds.astype(float)})


_EPOCH = pd.Timestamp(0, tz="UTC")


@dataclass
class _Sampled:
    """Rows from one source and how many of the samples they expect were present, per
    hour (`h0`)."""

    rows: pd.DataFrame
    present: pd.Series
    expected: pd.Series
    not_a_number: pd.DataFrame = field(default_factory=_NO_NAN.copy)
    """The series whose figure Prometheus answered NaN, per hour (`_not_a_number`)."""


def _per_hour(values: pd.Series, hours: pd.Series) -> pd.Series:
    """Sum of `values` per hour (`h0`)."""
    if not len(values):
        return pd.Series(dtype=float)
    return values.astype(float).groupby(hours.to_numpy()).sum()


def build_hour(
    inputs: HourInputs,
    member_for_namespace: Callable[[str], str | None],
    policy_version: int,
) -> HourRows:
    """The ledger rows of one hour (a chunk of one hour)."""
    built = build_chunk(inputs.as_chunk(), lambda hour: (member_for_namespace, policy_version))
    return built[inputs.hour]


def build_chunk(inputs: ChunkInputs, in_force: InForce) -> dict[datetime, HourRows]:
    """The ledger rows of every hour of the chunk, computed for all its hours at once
    (grouped by hour and pod, node...): each hour's rows are exactly those the hour
    alone would give."""
    inputs = replace(inputs, **{name: _hour_seconds(getattr(inputs, name)) for name in HOURLY})
    known = node_labels_by_hour(_hour_seconds(inputs.node_labels_by_hour), H0)
    fairpool = _fairpool_rows(inputs)
    fallback = _kube_state_rows(inputs)
    usage = _usage(fairpool.rows, fallback.rows, inputs, known, in_force)
    capacity = _capacity_rows(inputs, known)
    per_node = node_coverage(
        _allocation_samples(fairpool.rows, fallback.rows, usage),
        capacity.rows,
        usage,
        _dcgm_counts(inputs),
        inputs.interval,
    )
    usage_by, capacity_by, coverage_by = (
        _split(usage, USAGE_OUT),
        _split(capacity.rows, CAPACITY_OUT),
        _split(per_node, NODE_COVERAGE_OUT),
    )
    present = fairpool.present.add(fallback.present, fill_value=0.0).add(
        capacity.present, fill_value=0.0
    )
    said_nan = pd.concat(
        [
            fairpool.not_a_number,
            fallback.not_a_number,
            capacity.not_a_number,
            _reclaim_not_a_number(inputs.reclaim_lost),
        ],
        ignore_index=True,
    )
    nan_by = {float(h0): set(part["series"]) for h0, part in said_nan.groupby(H0, sort=False)}
    expected = fairpool.expected.add(fallback.expected, fill_value=0.0).add(
        capacity.expected, fill_value=0.0
    )
    out: dict[datetime, HourRows] = {}
    for hour in inputs.hours:
        h0 = hour.timestamp()
        hour_usage = usage_by(h0)
        present_total = float(present.get(h0, 0.0))
        expected_total = float(expected.get(h0, 0.0))
        coverage = min(1.0, present_total / expected_total) if expected_total > 0 else 1.0
        out[hour] = HourRows(
            hour_usage,
            capacity_by(h0),
            _reclaim_rows(inputs.reclaim_lost.get(hour, {})),
            coverage,
            # A series answered NaN is a series Prometheus holds for the hour: the hour
            # is pending for its NaN, not for having no series.
            expected_total > 0 or len(hour_usage) > 0 or h0 in nan_by,
            present_total,
            expected_total,
            coverage_by(h0),
            [f"{s} in the hour {hour:%Y-%m-%dT%H:%MZ}" for s in sorted(nan_by.get(h0, ()))],
        )
    return out


def _split(frame: pd.DataFrame, columns: list[str]) -> Callable[[float], pd.DataFrame]:
    """The rows of one hour (`h0`) of `frame`, as `columns`, indexed from 0."""
    if not len(frame):
        empty = frame.reindex(columns=columns)
        return lambda h0: empty.copy()
    parts = {
        float(h0): part[columns].reset_index(drop=True)
        for h0, part in frame.groupby(H0, sort=False)
    }
    empty = frame[columns].iloc[0:0].reset_index(drop=True)
    return lambda h0: parts.get(h0, empty.copy())


def _allocation_samples(
    fairpool: pd.DataFrame, kube_state: pd.DataFrame, usage: pd.DataFrame
) -> pd.DataFrame:
    """`h0`, `node`, `present`, `live` per billed pod and hour (its node as attributed);
    a pod billed from exact start and completion times is fully covered."""
    parts = []
    if len(fairpool):
        parts.append(fairpool[[H0, "uid", "present", "live"]])
    if len(kube_state):
        exact = (
            kube_state["start"].notna()
            & kube_state["completion"].notna()
            & (kube_state["completion"] > kube_state["start"])
        )
        live = kube_state["live"].where(~exact, 1.0)
        present = kube_state["present"].where(~exact, 1.0).clip(upper=live)
        parts.append(
            pd.DataFrame(
                {H0: kube_state[H0], "uid": kube_state["uid"], "present": present, "live": live}
            )
        )
    if not parts or not len(usage):
        return pd.DataFrame(columns=[H0, "node", "present", "live"])
    samples = pd.concat(parts, ignore_index=True)
    # A pod both sources billed: the node of its last usage row, as a dict would keep.
    billed = usage.drop_duplicates([H0, "pod_uid"], keep="last")
    node_of = pd.Series(
        billed["node"].to_numpy(),
        index=pd.MultiIndex.from_arrays([billed[H0], billed["pod_uid"]]),
    )
    keys = pd.MultiIndex.from_arrays([samples[H0], samples["uid"]])
    samples["node"] = node_of.reindex(keys).to_numpy()
    samples["present"] = samples["present"].clip(upper=samples["live"])
    return samples.dropna(subset=["node"])[[H0, "node", "present", "live"]]


def _pod_sample_frame(frame: pd.DataFrame, scale: float = 1.0) -> pd.DataFrame:
    """`h0`, `namespace`, `pod`, `value` of a DCGM answer (the pod's own labels), pods only."""
    own = _own_pod_labels(frame)
    values = pd.DataFrame(
        {
            H0: frame[H0],
            "namespace": _col(own, "namespace"),
            "pod": _col(own, "pod"),
            "value": frame["value"].astype(float) / scale,
        }
    )
    return values[values["pod"] != ""]


def _dcgm_counts(inputs: ChunkInputs) -> pd.Series:
    """DCGM samples per (h0, namespace, pod), summed over its GPUs; the larger of the two
    metrics when an exporter publishes both."""
    counts: list[pd.Series] = []
    for frame in (inputs.dcgm_engine_count, inputs.dcgm_util_count):
        if not len(frame) or "value" not in frame:
            continue
        values = _pod_sample_frame(frame)
        counts.append(values.groupby([H0, "namespace", "pod"])["value"].sum())
    if not counts:
        return pd.Series(dtype=float)
    return pd.concat(counts, axis=1).max(axis=1)


def _fairpool_rows(inputs: ChunkInputs) -> _Sampled:
    """Pods fairpool reported: its allocation gauge integrated on the scrape grid."""
    # Per exporter: in an hour with a leader change (or a redeploy), the pod's series
    # from the two replicas are the same pod's, each live part of the hour; merged on
    # the pod's labels alone, their rows multiplied (4 GPU-hours for each one used).
    fp_keys = [H0, "namespace", "pod", "uid", "member", "owner", "gpu_model", "node", "exporter"]
    fp = _keyed(_own_pod_labels(inputs.fairpool_live), fp_keys, "live")
    fp = fp.merge(
        _keyed_mean(_own_pod_labels(inputs.fairpool_mean), fp_keys), on=fp_keys, how="left"
    )
    fp = fp.merge(
        _keyed(_own_pod_labels(inputs.fairpool_present), fp_keys, "present"),
        on=fp_keys,
        how="left",
    )
    # A NaN mean, filled with 0 below as a missing one is, billed the pod's hour as
    # nothing used, at full coverage: named, its hour stays pending.
    said_nan = _said_nan(fp)
    not_a_number = _not_a_number(
        fp.loc[said_nan, H0],
        f"{FAIRPOOL_ALLOCATION} of pod "
        + fp.loc[said_nan, "namespace"]
        + "/"
        + fp.loc[said_nan, "pod"],
    )
    fp = fp.fillna({"mean": 0.0, "live": 0.0, "present": 0.0})
    fp["steps"] = fp["live"] * fp["mean"]
    fp = _one_layout(fp[fp["live"] > 0])
    fp_present = _per_hour(fp["present"].clip(upper=fp["live"]), fp[H0])
    fp_expected = _per_hour(fp["live"], fp[H0])
    fp = fp[fp["steps"] > 0]
    if not len(fp):
        return _Sampled(pd.DataFrame(), fp_present, fp_expected, not_a_number)
    fp = fp.assign(gpu_seconds=fp["steps"] * inputs.interval)
    grouped = fp.groupby([H0, "uid"], sort=True)
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
    # Replicas that reported the same pod at once (a brief overlap at a handover) count
    # no more than the hour's grid.
    over = (fp_rows["live"] / (3600.0 / inputs.interval)).clip(lower=1.0)
    fp_rows["gpu_seconds"] = fp_rows["gpu_seconds"] / over
    fp_rows["live"] = fp_rows["live"] / over
    fp_rows["present"] = fp_rows["present"] / over
    fp_rows["coverage"] = (fp_rows["present"] / fp_rows["live"]).clip(upper=1.0)
    fp_rows["source"] = "fairpool"
    return _Sampled(_clip_to_runtime(fp_rows, inputs), fp_present, fp_expected, not_a_number)


def _one_layout(fp: pd.DataFrame) -> pd.DataFrame:
    """Of a pod's series in an hour, those of one label layout: the gauge scraped both
    with honor_labels (the pod's own `namespace`/`pod`, no exporter) and without
    (`exported_*`, the replica in `exporter`) is the same reporting twice, not two
    replicas' parts. The layout with more live points is kept (its GPU-seconds were
    added to the other's: a pod that started in the hour, its completion not yet known,
    was billed twice its use)."""
    named = fp["exporter"] != ""
    if not len(fp) or named.all() or not named.any():
        return fp
    live = fp.groupby([fp[H0], fp["uid"], named])["live"].sum().unstack(fill_value=0.0)
    keep_named = live.get(True, 0.0) >= live.get(False, 0.0)
    keys = pd.MultiIndex.from_arrays([fp[H0], fp["uid"]])
    wanted = keep_named.reindex(keys).to_numpy(dtype=bool)
    return fp[named.to_numpy() == wanted]


_POD_KEYS = ["namespace", "pod", "uid"]


def _kube_state_rows(inputs: ChunkInputs) -> _Sampled:
    """Pods fairpool never reported: GPU requests x the time kube-state-metrics saw them run."""
    base = _kube_state_base(inputs)
    if not len(base):
        return _Sampled(pd.DataFrame(), pd.Series(dtype=float), pd.Series(dtype=float))
    k = _kube_state_pods(base, inputs)
    exact = k["start"].notna() & k["completion"].notna() & (k["completion"] > k["start"])
    k, not_a_number = _kube_state_seconds(k, exact, inputs)
    inexact = k[~exact.loc[k.index]]
    ksm_present = _per_hour(inexact["present"].clip(upper=inexact["live"]), inexact[H0])
    ksm_expected = _per_hour(inexact["live"], inexact[H0])
    k["owner"] = ""
    k["gpu_model"] = ""
    k["member"] = ""
    k["source"] = "kube-state-metrics"
    return _Sampled(k.drop_duplicates([H0, "uid"]), ksm_present, ksm_expected, not_a_number)


def _pod_requests(frame: pd.DataFrame) -> pd.DataFrame:
    """GPUs each pod requests and the node its request series names ('' if none): a pod
    scheduled after it was created has a series without and one with its node."""
    requests = _keyed(frame, [*_POD_KEYS, "node"], "gpus")
    return requests.groupby(_POD_KEYS, as_index=False).agg(
        gpus=("gpus", "max"), node=("node", "max")
    )


def _kube_state_requests(ksm_requests: pd.DataFrame, fairpool_uids: set[str]) -> pd.DataFrame:
    """The pods that requested GPUs and that fairpool never reported. A request
    Prometheus answers NaN for (no series of the pod gives a number) is kept: the pod
    has a GPU request series, so it may have held GPUs; dropped with those asking for
    none, its hours were billed nothing, with nothing said."""
    requests = _pod_requests(ksm_requests)
    gpus = requests["gpus"]
    return requests[((gpus > 0) | gpus.isna()) & ~requests["uid"].isin(fairpool_uids)]


def kube_state_uids(ksm_requests: pd.DataFrame, fairpool_uids: set[str]) -> set[str]:
    """The uids of the pods kube-state-metrics bills: only their phase series count."""
    return set(_kube_state_requests(ksm_requests, fairpool_uids)["uid"])


def _kube_state_base(inputs: ChunkInputs) -> pd.DataFrame:
    """The chunk's pods that requested GPUs and that fairpool never reported, with their
    start, completion and node (the request's own node label first, then
    kube_pod_info's)."""
    requests = _kube_state_requests(inputs.ksm_requests, inputs.fairpool_reported())
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


def _by_hour_and_uid(frame: pd.DataFrame, value: str) -> pd.Series:
    """The largest `value` per (h0, uid) of an hourly answer."""
    return _keyed(frame, [H0, "uid"], value).groupby([H0, "uid"])[value].max()


def _pairs(by_hour: dict[datetime, set[str]]) -> set[tuple[float, str]]:
    """(hour start in Unix seconds, uid) of each uid of each hour."""
    return {(h.timestamp(), uid) for h, uids in by_hour.items() for uid in uids}


def _kube_state_pods(base: pd.DataFrame, inputs: ChunkInputs) -> pd.DataFrame:
    """Each requesting pod in each hour, with its start, completion, node and Running
    samples that hour."""
    hours = pd.DataFrame({H0: [h.timestamp() for h in inputs.hours]})
    k = hours.merge(base, how="cross")
    # Not in the hours fairpool reported the pod: billed from both, they would count
    # twice. In the others, only kube-state-metrics saw it run.
    reported = _pairs(inputs.fairpool_uids_by_hour)
    if reported:
        pairs = zip(k[H0].tolist(), k["uid"].tolist(), strict=True)
        keep = np.array([pair not in reported for pair in pairs], dtype=bool)
        k = k[keep].reset_index(drop=True)
    if inputs.kube_state_uids_by_hour is not None:
        seen = _pairs(inputs.kube_state_uids_by_hour)
        pairs = zip(k[H0].tolist(), k["uid"].tolist(), strict=True)
        # A mask, not a list: an empty list would select no columns.
        k = k[np.array([pair in seen for pair in pairs], dtype=bool)].reset_index(drop=True)
    keys = pd.MultiIndex.from_arrays([k[H0], k["uid"]])
    for name, frame in (("steps", inputs.ksm_running_sum), ("present", inputs.ksm_running_present)):
        found = _by_hour_and_uid(frame, name)
        if name == "steps":
            # A pod without Running samples in the hour is absent from the answer (0
            # steps); one NaN sample makes the sum NaN, which only the answer tells apart.
            said = found.isna()
            k[SAID_NAN] = said.reindex(keys, fill_value=False).to_numpy() if len(said) else False
        k[name] = found.reindex(keys).to_numpy() if len(found) else np.nan
        k[name] = k[name].fillna(0.0).astype(float)
    return k


def _kube_state_seconds(
    k: pd.DataFrame, exact: pd.Series, inputs: ChunkInputs
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """GPU-seconds and coverage of each pod and hour: exact from its start and completion
    times when both are known, else from its Running samples; pods that used nothing
    dropped. With them, the pods and hours whose GPU-seconds are unknown because
    Prometheus answered NaN (`_not_a_number`): a Running sum the pod is billed from, or a
    GPU request for an hour it ran."""
    interval = inputs.interval
    h0 = k[H0]
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
    # Filled with 0 as an absent sum is, a NaN Running sum billed the pod's hour as not
    # run, at full coverage (its samples are present); the sum is not used when the
    # pod's start and completion times are both known.
    running_nan = k.pop(SAID_NAN).astype(bool) & ~exact
    # A NaN request made the pod's GPU-seconds NaN, dropped below as nothing used.
    request_nan = k["gpus"].isna() & (seconds > 0)
    names = " of pod " + k["namespace"] + "/" + k["pod"]
    not_a_number = pd.concat(
        [
            _not_a_number(k.loc[running_nan, H0], KSM_RUNNING + names[running_nan]),
            _not_a_number(k.loc[request_nan, H0], KSM_REQUESTS + names[request_nan]),
        ],
        ignore_index=True,
    )
    k = k.assign(gpu_seconds=seconds * k["gpus"])
    k["coverage"] = np.where(
        exact, 1.0, (k["present"] / k["live"].where(k["live"] > 0)).clip(upper=1.0)
    )
    k = k[k["gpu_seconds"] > 0].copy()
    k["coverage"] = k["coverage"].fillna(0.0)
    return k, not_a_number


def _usage(
    fp_rows: pd.DataFrame,
    ksm_rows: pd.DataFrame,
    inputs: ChunkInputs,
    known: pd.DataFrame,
    in_force: InForce,
) -> pd.DataFrame:
    """Both sources' pods as usage rows (with their `h0`), each charged to its member
    under the policy version in force that hour."""
    if not (len(fp_rows) or len(ksm_rows)):
        return pd.DataFrame(columns=[H0, *USAGE_OUT])
    usage = pd.concat([f for f in (fp_rows, ksm_rows) if len(f)], ignore_index=True)
    usage = usage.rename(columns={"uid": "pod_uid"})
    # Hours under the same policy version are attributed together.
    versions: dict[int, tuple[Callable[[str], str | None], list[float]]] = {}
    for hour in inputs.hours:
        member_for_namespace, version = in_force(hour)
        versions.setdefault(version, (member_for_namespace, []))[1].append(hour.timestamp())
    parts = []
    for version, (member_for_namespace, starts) in versions.items():
        rows = usage if len(versions) == 1 else usage[usage[H0].isin(starts)]
        part = attribute(rows, known, member_for_namespace, _label_keys(rows))
        part["policy_version"] = version
        parts.append(part)
    usage = parts[0] if len(parts) == 1 else pd.concat(parts)
    usage["job_id"] = ""
    usage["utilization"] = _utilization(inputs, usage)
    usage = usage.sort_values([H0, "pod_uid"], kind="stable")
    return usage[[H0, *USAGE_OUT]].reset_index(drop=True)


def _label_keys(rows: pd.DataFrame) -> pd.Series:
    """What each row's node labels are looked up by: its hour and node."""
    return hour_node_key(rows[H0], text(rows, "node"))


def _capacity_rows(inputs: ChunkInputs, known: pd.DataFrame) -> _Sampled:
    """GPU-seconds each node had available per hour, from its capacity gauge."""
    expected_node = 3600.0 / inputs.interval
    keys = [H0, "node"]
    cap = _keyed(inputs.capacity_live, keys, "live")
    cap = cap.merge(_keyed_mean(inputs.capacity_mean, keys), on=keys, how="left")
    # As a pod's: a NaN mean filled with 0 was a node without GPUs, fully covered.
    said_nan = _said_nan(cap)
    not_a_number = _not_a_number(
        cap.loc[said_nan, H0], f"{KSM_ALLOCATABLE} of node " + cap.loc[said_nan, "node"]
    )
    # A NotReady node contributes nothing in those points (docs/glossary.md,
    # contribution); one with no Ready series at all counts live, as before the meter
    # read readiness (an old kube-state-metrics, or the series not scraped).
    not_ready = _keyed(inputs.capacity_not_ready, keys, "not_ready")
    not_ready = not_ready.groupby(keys, as_index=False)["not_ready"].max()
    if len(not_ready) and len(cap):
        cap = cap.merge(not_ready, on=keys, how="left")
    ready = cap["live"] - cap.get("not_ready", pd.Series(0.0, index=cap.index)).fillna(0.0)
    cap["steps"] = ready.clip(lower=0.0) * cap["mean"].fillna(0.0)
    cap = cap.groupby(keys, as_index=False)["steps"].max()
    present = _keyed(inputs.capacity_present, keys, "present")
    present = present.groupby(keys, as_index=False)["present"].max()
    if len(cap) and len(present):
        cap = cap.merge(present, on=keys, how="outer")
    else:  # (pandas cannot outer-merge empty text keys on two columns)
        cap = pd.concat([cap, present], ignore_index=True) if len(present) else cap
        cap = cap.reindex(columns=[*keys, "steps", "present"])
    cap = cap.fillna({"steps": 0.0, "present": 0.0})
    cap = cap.join(capacity_attributes(_label_keys(cap), known))
    cap_present = _per_hour(cap["present"].clip(upper=expected_node), cap[H0])
    cap_expected = _per_hour(pd.Series(expected_node, index=cap.index), cap[H0])
    capacity = pd.DataFrame(
        {
            H0: cap[H0],
            "node": cap["node"],
            "owner": cap["owner"],
            "gpu_model": cap["gpu_model"],
            "gpu_seconds_available": cap["steps"] * inputs.interval,
            "coverage": (cap["present"] / expected_node).clip(upper=1.0),
        },
        columns=[H0, *CAPACITY_OUT],
    )
    return _Sampled(capacity, cap_present, cap_expected, not_a_number)


def _reclaim_not_a_number(lost: dict[datetime, dict[LostKey, float]]) -> pd.DataFrame:
    """`_not_a_number` of the reclaim-lost series whose increase in an hour is unknown
    (NaN, `counter_increase`): the hour's figure would be a guess, 0 or the total."""
    unknown = [
        (hour.timestamp(), f'{RECLAIM_LOST}{{member="{m}",gpu_model="{g}",cause="{c}"}}')
        for hour, per_key in lost.items()
        for (m, g, c), value in per_key.items()
        if math.isnan(value)
    ]
    if not unknown:
        return _NO_NAN.copy()
    h0, series = zip(*unknown, strict=True)
    return _not_a_number(pd.Series(h0, dtype=float), pd.Series(series, dtype=object))


def _reclaim_rows(lost: dict[LostKey, float]) -> pd.DataFrame:
    return pd.DataFrame(
        [(m, g, c, v) for (m, g, c), v in sorted(lost.items())],
        columns=RECLAIM_OUT,
    )


def _clip_to_runtime(rows: pd.DataFrame, inputs: ChunkInputs) -> pd.DataFrame:
    """A pod shorter than a scrape interval holds one sample worth a whole interval;
    when kube-state-metrics knows its start and completion, bill no more than that."""
    times, ends = _pod_times(inputs)
    start = rows["uid"].map(times)
    completion = rows["uid"].map(ends)
    known = start.notna() & completion.notna() & (completion > start)
    if not known.any():
        return rows
    h0 = rows[H0]
    overlap = (np.minimum(completion, h0 + 3600.0) - np.maximum(start, h0)).clip(lower=0.0)
    gpus = rows["gpu_seconds"] / (rows["live"] * inputs.interval)
    limit = overlap * gpus
    rows = rows.copy()
    rows.loc[known, "gpu_seconds"] = np.minimum(rows["gpu_seconds"], limit)[known]
    return rows[rows["gpu_seconds"] > 0]


def _pod_times(inputs: ChunkInputs) -> tuple[pd.Series, pd.Series]:
    """Start and completion time of each pod uid kube-state-metrics knows."""
    times = _keyed(inputs.ksm_start, ["uid"], "start").groupby("uid")["start"].max()
    ends = _keyed(inputs.ksm_completion, ["uid"], "completion").groupby("uid")["completion"].max()
    return times, ends


def _utilization(inputs: ChunkInputs, usage: pd.DataFrame) -> pd.Series:
    """Mean DCGM utilization (0..1) per pod and hour; NaN when the exporter has nothing."""
    means: list[pd.Series] = []
    for frame, scale in ((inputs.dcgm_engine_active, 1.0), (inputs.dcgm_gpu_util, 100.0)):
        if not len(frame):
            means.append(pd.Series(dtype=float))
            continue
        values = _pod_sample_frame(frame, scale)
        means.append(values.groupby([H0, "namespace", "pod"])["value"].mean())
    engine, util = means
    combined = engine.combine_first(util) if len(engine) else util
    index = pd.MultiIndex.from_arrays([usage[H0], usage["namespace"], usage["pod"]])
    if not len(combined):
        return pd.Series(np.nan, index=usage.index)
    return pd.Series(combined.reindex(index).to_numpy(), index=usage.index).clip(0.0, 1.0)


def counter_increase(
    samples: list[tuple[float, float]],
    hours: list[datetime],
    baseline_before: float,
    previous: float | None = None,
) -> dict[datetime, float]:
    """Reset-aware increase of one counter, assigned to the hour of each later sample.

    A drop means the counter restarted from zero, so the new value is the increase
    (Prometheus' ``increase()`` semantics, without its extrapolation: exact sums). The
    first sample counts from `previous` (the series' value before `samples`), else,
    when it is at or after `baseline_before`, from zero (the series was born).

    A sample that is no number (NaN, or infinite) is no reading: skipped, as a missed
    scrape, the next number counts from the last one (a counter carries its increase, so
    nothing is lost). Taken as a reading, it made its hour NaN or infinite and the next
    sample, "below" it, a reset counted whole. When the last number is unknown
    (`previous` no number, or the series' only earlier samples none), the next sample's
    increase is too: its hour is NaN, for the caller to name."""
    out = {h: 0.0 for h in hours}
    bounds = [(h.timestamp(), (h + timedelta(hours=1)).timestamp(), h) for h in hours]
    if previous is not None and not math.isfinite(previous):
        previous = math.nan
    for t, v in sorted(samples):
        if not math.isfinite(v):
            # Before any number, the series existed, at a value no one knows.
            previous = math.nan if previous is None else previous
            continue
        if previous is None:
            delta = v if t >= baseline_before else None
        elif math.isnan(previous):
            delta = math.nan
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
