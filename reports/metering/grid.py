"""The pods' live grid points and samples present, from raw samples (pure).

The same figures `reports.metering.promql` asks Prometheus for (`live_points`,
`present`), worked out here from the allocation gauge's raw samples, read once
per chunk (`reports.metering.remote_read`): Prometheus' subqueries walk every grid
point of every series, which costs it more than sending the samples.

A range selector ``x[R] offset O`` evaluated at t holds the samples in [t - O - R, t - O]
(both bounds included, in milliseconds). So a sample at s is seen at the grid points t in
[s + O, s + O + R]; a series' grid points with some sample in range are the union of
those intervals, one per sample, which merge wherever consecutive samples are no more
than R apart. Each count is then the grid points of that union inside the hour, the
grid being the multiples of the scrape interval since the epoch, as in a subquery. Every
figure goes through the same ``max by`` and vector matching as the PromQL, and the
frames come out as Prometheus' answers would (`prom_source.matrix_frame`), row order
included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from reports.metering.prom_source import concat_answers, matrix_frame
from reports.metering.remote_read import RawSeries

HOUR_MS = 3_600_000


def ms(seconds: float) -> int:
    """Whole milliseconds, rounded as `promql.duration` writes them."""
    return round(seconds * 1000)


@dataclass(frozen=True)
class GridAnswers:
    live: pd.DataFrame
    """As the range query of `MeteringQueries.live_points` (parts of `live_hours`)."""
    present: pd.DataFrame
    """As the range query of `MeteringQueries.present`."""


@dataclass(frozen=True)
class Gap:
    """A stretch with no sample of a pod's allocation series longer than `max_gap`,
    between two samples (Unix ms): not bridged, so not billed."""

    namespace: str
    pod: str
    uid: str
    last_ms: int
    """The last sample before the gap."""
    next_ms: int
    """The first sample after it."""


def gaps(
    series: Sequence[RawSeries], hours: Sequence[datetime], max_gap: float, by: tuple[str, ...]
) -> list[Gap]:
    """The gaps longer than `max_gap` in the series grouped by `by` (replicas of one pod
    fill each other's holes, as in the live points) that reach into `hours`, in time
    order. Only gaps between two samples read are seen: not one that begins before the
    samples' span (`read_span`) or ends after it."""
    times: dict[tuple[str, ...], list[np.ndarray]] = {}
    for s in series:
        times.setdefault(tuple(s.labels.get(label, "") for label in by), []).append(
            np.asarray(s.times, dtype=np.int64)
        )
    first = ms(hours[0].timestamp())
    end = ms((hours[-1] + timedelta(hours=1)).timestamp())
    found: list[Gap] = []
    for key, parts in times.items():
        t = np.unique(np.concatenate(parts))
        at = np.flatnonzero((np.diff(t) > ms(max_gap)) & (t[1:] > first) & (t[:-1] < end))
        labels = dict(zip(by, key, strict=True))
        namespace = labels.get("exported_namespace") or labels.get("namespace", "")
        pod = labels.get("exported_pod") or labels.get("pod", "")
        for i in at.tolist():
            found.append(Gap(namespace, pod, labels.get("uid", ""), int(t[i]), int(t[i + 1])))
    return sorted(found, key=lambda g: (g.last_ms, g.namespace, g.pod, g.uid))


def read_span(hours: Sequence[datetime], max_gap: float) -> tuple[int, int]:
    """The samples the chunk's figures depend on, [first - max_gap, end + max_gap] (ms)."""
    first = ms(hours[0].timestamp())
    end = ms((hours[-1] + timedelta(hours=1)).timestamp())
    return first - ms(max_gap), end + ms(max_gap)


def grid_answers(
    series: Sequence[RawSeries],
    hours: Sequence[datetime],
    interval: float,
    max_gap: float,
    by: tuple[str, ...],
    live_hours: int,
) -> GridAnswers:
    """The live points and samples present per hour of `hours` (consecutive), grouped by
    the labels `by`, from the chunk's raw samples (`read_span`)."""
    step, gap = ms(interval), ms(max_gap)
    hour_ms = np.array([ms(h.timestamp()) for h in hours], dtype=np.int64)
    keys = [tuple(s.labels.get(label, "") for label in by) for s in series]
    times = [np.asarray(s.times, dtype=np.int64) for s in series]
    # (offset, range) of the three selectors of `MeteringQueries.live_points`.
    behind = _grid_counts(times, hour_ms, step, 0, gap)
    around = _grid_counts(times, hour_ms, step, -gap, ms(2 * max_gap))
    ahead = _grid_counts(times, hour_ms, step, -gap, ms(max_gap + interval - 0.001))
    present = _window_counts(times, hour_ms, 1, HOUR_MS)
    groups = sorted(set(keys))
    index = {key: i for i, key in enumerate(groups)}
    member = np.array([index[key] for key in keys], dtype=np.int64)
    live_max = [_group_max(c, member, len(groups)) for c in (behind, around, ahead)]
    exists = (live_max[0] > 0) & (live_max[1] > 0) & (live_max[2] > 0)
    live = live_max[0] - live_max[1] + live_max[2]
    present_max = _group_max(present, member, len(groups))
    parts = [
        (lo, min(lo + live_hours, len(hours))) for lo in range(0, len(hours), max(1, live_hours))
    ]
    labels = [_label_order(by, key) for key in groups]
    order = sorted(range(len(groups)), key=labels.__getitem__)
    # One answer per part, put together as the meter puts the parts' answers together.
    live_frame = concat_answers(
        [
            matrix_frame(_matrix(labels, order, live[:, lo:hi], exists[:, lo:hi], hour_ms[lo:hi]))
            for lo, hi in parts
        ]
    )
    present_result = _matrix(labels, order, present_max, present_max > 0, hour_ms)
    return GridAnswers(
        live_frame,
        matrix_frame(present_result),
    )


def _grid_counts(
    times: list[np.ndarray], hour_ms: np.ndarray, step: int, offset: int, span: int
) -> np.ndarray:
    """Per series and hour: the grid points t of the hour at which `x[span] offset
    offset` holds a sample, i.e. t in [s + offset, s + offset + span] for a sample s."""
    out = np.zeros((len(times), len(hour_ms)), dtype=np.int64)
    lengths = np.array([len(t) for t in times], dtype=np.int64)
    if not lengths.sum():
        return out
    t = np.concatenate(times)
    row = np.repeat(np.arange(len(times)), lengths)
    # Runs of overlapping intervals: a new one starts after a gap longer than span, or
    # with the next series.
    new = np.ones(len(t), dtype=bool)
    new[1:] = (np.diff(t) > span) | (row[1:] != row[:-1])
    first = np.flatnonzero(new)
    last = np.concatenate((first[1:] - 1, [len(t) - 1]))
    # Grid indices (multiples of step) inside each run, cut to the chunk's hours.
    per_hour = HOUR_MS // step
    chunk_lo = hour_ms[0] // step
    chunk_hi = (hour_ms[-1] + HOUR_MS) // step - 1
    k_lo = np.maximum(-(-(t[first] + offset) // step), chunk_lo)
    k_hi = np.minimum((t[last] + offset + span) // step, chunk_hi)
    keep = k_hi >= k_lo
    run_row, k_lo, k_hi = row[first][keep], k_lo[keep], k_hi[keep]
    # Each run split at the hours it crosses.
    h_lo, h_hi = k_lo // per_hour, k_hi // per_hour
    pieces = h_hi - h_lo + 1
    piece_row = np.repeat(run_row, pieces)
    hour = np.repeat(h_lo, pieces) + (
        np.arange(pieces.sum()) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    )
    lo = np.maximum(np.repeat(k_lo, pieces), hour * per_hour)
    hi = np.minimum(np.repeat(k_hi, pieces), (hour + 1) * per_hour - 1)
    np.add.at(out, (piece_row, hour - hour_ms[0] // HOUR_MS), hi - lo + 1)
    return out


def _window_counts(
    times: list[np.ndarray], hour_ms: np.ndarray, offset: int, span: int
) -> np.ndarray:
    """Per series and hour h: samples in [h + 1h - offset - span, h + 1h - offset]."""
    ends = hour_ms + HOUR_MS - offset
    out = np.zeros((len(times), len(hour_ms)), dtype=np.int64)
    for row, t in enumerate(times):
        if len(t):
            out[row] = np.searchsorted(t, ends, "right") - np.searchsorted(t, ends - span, "left")
    return out


def _group_max(counts: np.ndarray, member: np.ndarray, groups: int) -> np.ndarray:
    """``max by``: the largest count per group and hour (0 where no series has any)."""
    out = np.zeros((groups, counts.shape[1]), dtype=np.int64)
    np.maximum.at(out, member, counts)
    return out


def _label_order(by: tuple[str, ...], key: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Prometheus' order of label sets: by (name, value) pairs, names sorted, empty
    labels absent."""
    return tuple(sorted((name, value) for name, value in zip(by, key, strict=True) if value))


def _matrix(
    labels: list[tuple[tuple[str, str], ...]],
    order: list[int],
    values: np.ndarray,
    exists: np.ndarray,
    hour_ms: np.ndarray,
) -> list[dict[str, object]]:
    """A range query's result (as the JSON API gives it): each group's points in
    Prometheus' order of label sets, the point of hour h stamped at its end."""
    stamps = ((hour_ms + HOUR_MS) / 1000).tolist()
    result: list[dict[str, object]] = []
    rows, present = values.tolist(), exists.tolist()
    for g in order:
        where = [i for i, found in enumerate(present[g]) if found]
        if where:
            points = [(stamps[i], float(rows[g][i])) for i in where]
            result.append({"metric": dict(labels[g]), "values": points})
    return result
