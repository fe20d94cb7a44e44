"""Live grid points from raw samples (`reports.metering.grid`) and the remote-read sample
decoder (`reports.metering.remote_read`).

The grid figures are checked against a direct reading of the PromQL they replace: at
each grid point of the hour, is there a sample in the selector's range? (the integration
test `test_meter_remote_read` checks both against a real Prometheus)."""

from __future__ import annotations

import http.server
import math
import random
import threading
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from proto.prometheus import remote_read_pb2 as pb
from reports.metering import promql
from reports.metering.grid import Gap, gaps, grid_answers, read_span
from reports.metering.remote_read import (
    STALE_NAN_BITS,
    RawSeries,
    RemoteReadUnsupported,
    decode_samples,
    is_stale,
    read_samples,
)

H0 = datetime(2026, 10, 7, 8, tzinfo=UTC)
HOUR_MS = 3_600_000
BY = promql.FAIRPOOL_LABELS


def encoded(samples: list[tuple[int, float]]) -> list[bytes]:
    return [pb.Sample(timestamp=t, value=v).SerializeToString() for t, v in samples]


def test_decode_samples_matches_the_protobuf_library() -> None:
    rng = random.Random(3)
    samples = [(1_791_360_000_000 + i * 30_000 + rng.randint(-999, 999), 4.0) for i in range(500)]
    # Fields at their zero value are left out of the encoding; varints of every length.
    samples += [(0, 0.0), (5, 0.0), (0, 2.5), (-3, 1.0), (2**62, -0.0), (1, math.inf)]
    samples += [(7, float("nan")), (2**40, 1e-300), (127, 0.5), (128, 0.5)]
    times, values = decode_samples(encoded(samples))
    assert times.tolist() == [t for t, _ in samples]
    expected = np.array([v for _, v in samples])
    assert np.array_equal(values.view(np.uint64), expected.view(np.uint64))


def test_decode_samples_in_another_field_order_falls_back_to_protobuf() -> None:
    value = np.array([2.5]).tobytes()
    swapped = b"\x10\x05" + b"\x09" + value  # timestamp first, then value
    times, values = decode_samples([*encoded([(9, 1.0)]), swapped])
    assert times.tolist() == [9, 5]
    assert values.tolist() == [1.0, 2.5]


def test_decode_no_samples() -> None:
    times, values = decode_samples([])
    assert len(times) == 0 and len(values) == 0


def test_stale_markers_are_recognised_and_plain_nan_is_not() -> None:
    stale = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]
    _, values = decode_samples(encoded([(1, stale), (2, float("nan")), (3, 1.0)]))
    assert is_stale(values).tolist() == [True, False, False]


# ---- grid points against the PromQL they stand for ---------------------------------


def in_range(samples: list[int], lo: int, hi: int) -> bool:
    return any(lo <= s <= hi for s in samples)


def promql_counts(
    samples: list[int], hour_ms: int, step: int, gap: int, interval: float, max_gap: float
) -> tuple[int, int, int, int]:
    """`x[R] offset O` at t holds [t - O - R, t - O]; the subquery's grid points of the
    hour are the multiples of the interval in [h, h + 1h)."""
    either = round(2 * max_gap * 1000)
    fresh = round((max_gap + interval - 0.001) * 1000)
    grid = range(hour_ms, hour_ms + HOUR_MS, step)
    behind = sum(in_range(samples, t - gap, t) for t in grid)
    around = sum(in_range(samples, t + gap - either, t + gap) for t in grid)
    ahead = sum(in_range(samples, t + gap - fresh, t + gap) for t in grid)
    end = hour_ms + HOUR_MS - 1
    present = sum(end - HOUR_MS <= s <= end for s in samples)
    return behind, around, ahead, present


def random_series(
    rng: random.Random, start: int, end: int, step: int, gap: int, jitter: bool
) -> list[int]:
    """Scrapes (on the grid, or with jitter), missed scrapes, bursts, and gaps just
    under, at and just over `gap`."""
    out, t = [], start if not jitter else start + rng.randrange(0, step)
    while t < end:
        roll = rng.random()
        if roll < 0.08:
            t += rng.choice([gap - 1, gap, gap + 1, gap - step, 4 * gap])
        elif roll < 0.12:
            out.append(t + rng.randrange(1, step // 2))
        if t < end:
            out.append(t + (rng.randint(-step // 10, step // 10) if jitter else 0))
        t += step
    return sorted(set(out))


@pytest.mark.parametrize(
    ("interval", "max_gap", "seed"),
    [
        (30.0, 300.0, 1),
        (30.0, 300.0, 2),
        (15.0, 60.0, 3),
        (60.0, 299.0, 4),
        (30.0, 30.0, 5),
        (7.2, 60.0, 6),  # a step --scrape-interval takes since it is checked in decimal
    ],
)
def test_grid_counts_match_the_promql_semantics(interval: float, max_gap: float, seed: int) -> None:
    rng = random.Random(seed)
    step, gap = round(interval * 1000), round(max_gap * 1000)
    hours = [H0 + timedelta(hours=i) for i in range(3)]
    first = round(H0.timestamp() * 1000)
    lo, hi = read_span(hours, max_gap)
    series: list[RawSeries] = []
    for i in range(12):
        # Some series start on the grid, or one millisecond before an hour.
        start = first + rng.randrange(-2 * HOUR_MS // 3, 3 * HOUR_MS) // step * step
        start -= 1 if i % 4 == 1 else 0
        end = start + rng.randrange(step, 2 * HOUR_MS)
        jitter = i % 4 == 3
        times = [t for t in random_series(rng, start, end, step, gap, jitter) if lo <= t <= hi]
        # Samples on an hour, one millisecond before and after it.
        times = sorted({*times, *(first + HOUR_MS * (i % 3) + d for d in (-1, 0, 1))})
        # Every third series is a replica of the one before (an exporter label apart).
        name = f"p{i - 1 if i % 3 == 2 else i}"
        labels = {"__name__": promql.FAIRPOOL_ALLOCATION, "namespace": "ns", "pod": name}
        labels |= {"uid": f"u-{name}", "instance": str(i)}
        series.append(RawSeries(labels, np.array(times, dtype=np.int64), np.ones(len(times))))
    answers = grid_answers(series, hours, interval, max_gap, BY, live_hours=2)

    expected_live: dict[tuple[str, float], float] = {}
    expected_present: dict[tuple[str, float], float] = {}
    for index, hour in enumerate(hours):
        hour_ms = first + index * HOUR_MS
        by_pod: dict[str, list[tuple[int, int, int, int]]] = {}
        for s in series:
            counts = promql_counts(s.times.tolist(), hour_ms, step, gap, interval, max_gap)
            by_pod.setdefault(s.labels["pod"], []).append(counts)
        for pod, rows in by_pod.items():
            # max by (labels): each count's largest over the replicas, then matched.
            behind, around, ahead, present = (max(c) for c in zip(*rows, strict=True))
            key = (pod, hour.timestamp())
            if behind and around and ahead:
                expected_live[key] = float(behind - around + ahead)
            if present:
                expected_present[key] = float(present)

    def as_dict(frame: object) -> dict[tuple[str, float], float]:
        rows = frame.itertuples()  # type: ignore[attr-defined]
        return {(r.pod, r.hour.timestamp()): r.value for r in rows}

    assert as_dict(answers.live) == expected_live
    assert as_dict(answers.present) == expected_present
    assert expected_live, "the random series never met the chunk"


def test_no_series_gives_empty_answers() -> None:
    answers = grid_answers([], [H0], 30.0, 300.0, BY, live_hours=4)
    assert len(answers.live) == 0 and len(answers.present) == 0


# ---- a server without remote read --------------------------------------------------


def test_a_server_without_remote_read_is_told_apart(tmp_path: Path) -> None:
    """An HTTP server with no /api/v1/read (404) is not a failure of Prometheus: the
    meter falls back to PromQL for it."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            with pytest.raises(RemoteReadUnsupported, match="api/v1/read"):
                read_samples(url, promql.FAIRPOOL_ALLOCATION, 0, 1000, timeout=10)
        finally:
            server.shutdown()


def test_gaps_longer_than_max_gap_are_named_per_pod() -> None:
    start = int(H0.timestamp() * 1000)

    def every(lo_s: int, hi_s: int) -> np.ndarray:
        return np.arange(start + lo_s * 1000, start + hi_s * 1000, 30_000, dtype=np.int64)

    def pod(name: str, times: np.ndarray, **extra: str) -> RawSeries:
        labels = {"namespace": "lab-bio", "pod": name, "uid": f"uid-{name}", **extra}
        return RawSeries(labels, times, np.ones(len(times)))

    series = [
        # 09:29:30 -> 09:50:00 (1230 s): a gap.
        pod("outage", np.concatenate([every(0, 1800), every(3000, 3600)])),
        # Exactly max_gap (300 s) apart: bridged, no gap.
        pod("bridged", np.concatenate([every(0, 1200), every(1470, 3600)])),
        # One replica misses 10 minutes, the other reports them: no gap.
        pod("replica-a", np.concatenate([every(0, 600), every(1200, 3600)]), instance="a"),
        # A gap wholly after the hours asked about is not theirs.
        pod("later", np.concatenate([every(0, 3630), every(4500, 5000)])),
    ]
    series.append(pod("replica-a", every(0, 3600), instance="b"))
    by = ("namespace", "pod", "uid")
    found = gaps(series, [H0], 300.0, by)
    assert found == [Gap("lab-bio", "outage", "uid-outage", start + 1_770_000, start + 3_000_000)]
    # The pod's own labels under exported_* name it.
    exported = RawSeries(
        {
            "namespace": "fairpool-system",
            "pod": "fairpool-0",
            "exported_namespace": "physics",
            "exported_pod": "infer",
            "uid": "u",
        },
        np.array([start, start + 600_000]),
        np.ones(2),
    )
    named = gaps([exported], [H0], 300.0, (*by, "exported_namespace", "exported_pod"))
    assert [(g.namespace, g.pod) for g in named] == [("physics", "infer")]
