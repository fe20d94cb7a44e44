"""Raw samples from Prometheus' remote-read API (protobuf, snappy block compression).

A day of one metric is about a million samples: as JSON from the query API Prometheus
spends more CPU encoding them than evaluating PromQL over them, and Python more parsing
them. The remote-read answer is a fifth of the size and cheap for both. Its samples
arrive as one encoded `Sample` message each; they are decoded all at once with numpy
(`decode_samples`), falling back to the protobuf library for a sample in any other
layout. Stale markers (the NaN Prometheus writes when a series disappears) are dropped,
as PromQL's range selectors drop them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cramjam
import numpy as np
import requests
from google.protobuf.message import DecodeError

from proto.prometheus import remote_read_pb2 as pb

STALE_NAN_BITS = 0x7FF0000000000002
"""The bit pattern of Prometheus' stale marker."""

_VALUE_TAG = 0x09  # field 1, 64-bit
_TIMESTAMP_TAG = 0x10  # field 2, varint
_MAX_VARINT = 10
_BATCH_SAMPLES = 100_000


class RemoteReadUnsupported(RuntimeError):
    """The server has no remote-read API (another PromQL server, or it is turned off)."""


class RemoteReadUndecodable(RuntimeError):
    """The server answered, but its answer is no snappy-compressed ReadResponse (a
    truncated body, a proxy's page sent as protobuf)."""


@dataclass(frozen=True)
class RawSeries:
    """One series: its labels (with `__name__`) and its samples in time order, stale
    markers dropped; times in Unix milliseconds."""

    labels: dict[str, str]
    times: np.ndarray
    values: np.ndarray


def read_samples(
    url: str,
    metric: str,
    start_ms: int,
    end_ms: int,
    timeout: float,
    session: requests.Session | None = None,
) -> list[RawSeries]:
    """Every series of `metric` with its samples in [start_ms, end_ms] (inclusive), asked
    through `session` (its adapters' retries apply).

    Raises RemoteReadUnsupported when the server does not serve remote read,
    RemoteReadUndecodable when its answer cannot be decoded, and requests' exceptions
    when it cannot be reached or fails."""
    request = pb.ReadRequest(
        queries=[
            pb.Query(
                start_timestamp_ms=start_ms,
                end_timestamp_ms=end_ms,
                matchers=[pb.LabelMatcher(type=pb.LabelMatcher.EQ, name="__name__", value=metric)],
            )
        ],
        accepted_response_types=[pb.ReadRequest.SAMPLES],
    )
    session = session or requests.Session()
    response = session.post(
        f"{url}/api/v1/read",
        # Given per request: requests lets $REQUESTS_CA_BUNDLE override the session's.
        verify=session.verify,
        data=bytes(cramjam.snappy.compress_raw(request.SerializeToString())),
        headers={
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Read-Version": "0.1.0",
        },
        timeout=timeout,
    )
    if response.status_code in (404, 405, 501) or (
        response.ok and "protobuf" not in response.headers.get("Content-Type", "")
    ):
        raise RemoteReadUnsupported(f"{url}/api/v1/read: HTTP {response.status_code}")
    if response.status_code == 400 and "limit" in response.text:
        # More samples than the server sends at once (its remote-read sample limit):
        # PromQL can still answer.
        raise RemoteReadUnsupported(f"{url}/api/v1/read: {response.text.strip()[:200]}")
    response.raise_for_status()
    try:
        answer = pb.ReadResponse.FromString(bytes(cramjam.snappy.decompress_raw(response.content)))
        found = [series for result in answer.results for series in result.timeseries]
        out: list[RawSeries] = []
        for batch in _batches(found):
            out.extend(_decode_series(batch, start_ms, end_ms))
    except (cramjam.DecompressionError, DecodeError) as exc:
        size = len(response.content)
        raise RemoteReadUndecodable(
            f"{url}/api/v1/read: an answer of {size} bytes that is no remote-read "
            f"response ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc
    return out


def _batches(found: list[pb.TimeSeries]) -> list[list[pb.TimeSeries]]:
    """Series in groups of about `_BATCH_SAMPLES` samples: decoding all of a day at once
    would hold a few hundred MB of temporaries."""
    batches: list[list[pb.TimeSeries]] = [[]]
    size = 0
    for series in found:
        if size >= _BATCH_SAMPLES:
            batches.append([])
            size = 0
        batches[-1].append(series)
        size += len(series.samples)
    return batches


def _decode_series(batch: list[pb.TimeSeries], start_ms: int, end_ms: int) -> list[RawSeries]:
    """The series of `batch`, their samples decoded at once, then cut back apart."""
    records: list[bytes] = []
    for series in batch:
        records.extend(series.samples)
    times, values = decode_samples(records)
    del records
    keep = (times >= start_ms) & (times <= end_ms) & ~is_stale(values)
    bounds = np.cumsum([0] + [len(series.samples) for series in batch])
    out: list[RawSeries] = []
    for series, lo, hi in zip(batch, bounds[:-1], bounds[1:], strict=True):
        kept = keep[lo:hi]
        labels = {label.name: label.value for label in series.labels}
        out.append(RawSeries(labels, times[lo:hi][kept], values[lo:hi][kept]))
    return out


def is_stale(values: np.ndarray) -> np.ndarray:
    """Which values are Prometheus' stale marker (a NaN of one bit pattern)."""
    return np.asarray(values, dtype=np.float64).view(np.uint64) == STALE_NAN_BITS


def decode_samples(records: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Times (int64 ms) and values (float64) of encoded `Sample` messages.

    Prometheus writes each as an optional value (tag 0x09, 8 bytes) then an optional
    timestamp (tag 0x10, varint); a field at its zero value is left out. Records in that
    layout are decoded with numpy; if any is not, all go through the protobuf library."""
    count = len(records)
    if not count:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    lengths = np.fromiter(map(len, records), dtype=np.int64, count=count)
    data = np.frombuffer(b"".join(records), dtype=np.uint8)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    padded = np.concatenate([data, np.zeros(_MAX_VARINT + 9, dtype=np.uint8)])
    has_value = (lengths >= 9) & (padded[starts] == _VALUE_TAG)
    at = starts + 9 * has_value
    has_time = (at < ends) & (padded[at] == _TIMESTAMP_TAG)
    size = np.where(has_time, ends - at - 1, 0)
    layout_ok = np.where(has_time, (size >= 1) & (size <= _MAX_VARINT), at == ends)
    if not layout_ok.all():
        return _decode_slowly(records)
    # One pass per varint byte over all samples (not a samples x 10 matrix).
    times = np.zeros(count, dtype=np.uint64)
    for j in range(int(size.max(initial=0))):
        within = size > j
        byte = padded[at + 1 + j]
        # Every byte of a varint but its last has the continuation bit.
        if (within & (((byte & 0x80) != 0) == (size - 1 == j))).any():
            return _decode_slowly(records)
        part = (byte & 0x7F).astype(np.uint64) << np.uint64(7 * j)
        times |= np.where(within, part, np.uint64(0))
    raw = np.zeros(count, dtype=np.uint64)
    for k in range(8):
        raw |= padded[starts + 1 + k].astype(np.uint64) << np.uint64(8 * k)
    values = np.where(has_value, raw.view("<f8"), 0.0)
    return times.view(np.int64), values


def _decode_slowly(records: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    samples = [pb.Sample.FromString(record) for record in records]
    return (
        np.array([s.timestamp for s in samples], dtype=np.int64),
        np.array([s.value for s in samples], dtype=np.float64),
    )
