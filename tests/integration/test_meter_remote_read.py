"""The pods' live points from remote-read raw samples against PromQL, on a real Prometheus.

`Meter` works the allocation gauge's live grid points and samples present out of
its raw samples (`reports.metering.grid`) where PromQL subqueries would give them; both
are asked here about the same blocks and must give the same frames (row order
included) and the same ledger rows. The series are irregular on purpose: scrape jitter
in milliseconds, two samples in one grid interval, gaps just under, at and over the
bridged limit, samples on and one millisecond before an hour, replicas that differ only
in an exporter label, exported_* pod labels, a series without uid, and one that lives
only in the look-ahead after the chunk.
"""

from __future__ import annotations

import http.server
import random
import shutil
import socket
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cramjam
import pandas as pd
import pytest

from policies.loader import load_policy
from reports.ledger import Ledger
from reports.metering import promql
from reports.metering.grid import read_span
from reports.metering.meter import Meter, MeterConfig
from reports.metering.prom_source import RETRIES, PromSource
from reports.metering.remote_read import RemoteReadUnsupported
from tests.integration import prometheus_fixtures as fixtures
from tests.promtest import PrometheusServer, Scenario, create_blocks

pytestmark = pytest.mark.integration

metering_scenario = fixtures.metering_scenario
metering_tsdb = fixtures.metering_tsdb
prometheus = fixtures.prometheus

HOUR = timedelta(hours=1)
DAY0 = datetime(2026, 10, 7, tzinfo=UTC)
H100 = "NVIDIA-H100-80GB-HBM3"


def t(hour: int, minute: int = 0, second: float = 0.0) -> datetime:
    return DAY0 + timedelta(hours=hour, minutes=minute, seconds=second)


def pod_labels(name: str, **extra: str) -> dict[str, str]:
    labels = {
        "namespace": "lab-bio",
        "pod": name,
        "uid": f"uid-{name}",
        "member": "lab-bio",
        "owner": "uni-north",
        "gpu_model": H100,
        "node": "gpu-a",
    }
    return {**labels, **extra}


def irregular_scenario(seed: int = 11) -> Scenario:
    rng = random.Random(seed)
    s = Scenario(interval=30)
    node = s.node("gpu-a", "uni-north", H100, 8, t(8), t(14))
    family = promql.FAIRPOOL_ALLOCATION

    def every(start: datetime, end: datetime, jitter: float = 0.0) -> list[datetime]:
        out, at = [], start
        while at < end:
            out.append(at + timedelta(milliseconds=round(rng.uniform(-jitter, jitter) * 1000)))
            at += timedelta(seconds=30)
        return out

    # Jittered scrapes with gaps of 290 s, 300 s and 300.001 s (the limit is 300 s).
    jittered = every(t(8, 10), t(9, 0), jitter=2.0)
    jittered += [t(9, 4, 50), t(9, 9, 50), t(9, 14, 50.001)]
    jittered += every(t(9, 15), t(10, 30), jitter=0.5)
    s.add_points(family, pod_labels("jitter"), [(at, 2) for at in jittered])
    # Two samples inside one 30 s grid interval, and samples on an hour and just before.
    dense = [t(8, 59, 59.999), t(9), t(9, 0, 10), t(9, 0, 20), t(9, 0, 25), t(9, 1)]
    dense += every(t(9, 1, 30), t(9, 59, 59.999))
    s.add_points(family, pod_labels("dense"), [(at, 1) for at in dense])
    # Replicas: the same pod from two exporters, one missing a stretch.
    for instance, holes in (("a", ()), ("b", ((t(10, 5), t(10, 25)),))):
        points = [
            (at, 4)
            for at in every(t(9, 30), t(11, 45), jitter=1.0)
            if not any(lo <= at < hi for lo, hi in holes)
        ]
        s.add_points(family, pod_labels("replicated", instance=instance), points)
    # Scraped without honor_labels: the pod's own labels under exported_*.
    exported = pod_labels("exp", exported_namespace="physics", exported_pod="exp")
    exported |= {"namespace": "fairpool-system", "pod": "fairpool-0"}
    s.add_points(family, exported, [(at, 1) for at in every(t(10, 40), t(12, 20))])
    # No uid, and a pod seen only after the chunk (within the look-ahead).
    no_uid = {k: v for k, v in pod_labels("anonymous").items() if k != "uid"}
    s.add_points(family, no_uid, [(at, 1) for at in every(t(11), t(11, 30))])
    s.add_points(family, pod_labels("late"), [(at, 1) for at in every(t(13, 2), t(13, 20))])
    # A short pod on the grid, and a regular one crossing every hour of the chunk.
    s.pod("lab-bio", "short", node, 1, t(9, 12, 5), t(9, 12, 17))
    s.pod("lab-bio", "long", node, 1, t(8), t(14))
    return s


@pytest.fixture(scope="module")
def irregular(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    folder = tmp_path_factory.mktemp("remote-read")
    data = irregular_scenario().write_openmetrics(folder / "scenario.om")
    create_blocks(data, folder / "blocks")
    shutil.copytree(folder / "blocks", folder / "data")
    with PrometheusServer(folder / "data") as server:
        yield server


def meter(server: PrometheusServer, tmp: str, **config: object) -> Meter:
    ledger = Ledger(f"sqlite:///{tmp}/ledger.db")
    return Meter(PromSource(server.url), ledger, load_policy(None), MeterConfig(**config))  # type: ignore[arg-type]


def assert_same_answers(
    server: PrometheusServer, tmp_path: object, chunk: list[datetime], **config: object
) -> None:
    m = meter(server, str(tmp_path), **config)
    by_promql = m._query(chunk, raw_samples=False)
    by_samples = m._query(chunk, raw_samples=True)
    for name in ("fairpool_live", "fairpool_present"):
        pd.testing.assert_frame_equal(by_samples.hourly[name], by_promql.hourly[name])
    rows_promql, rows_samples = m.build(chunk, by_promql), m.build(chunk, by_samples)
    for hour in chunk:
        a, b = rows_promql[hour], rows_samples[hour]
        for part in ("usage", "capacity", "node_coverage", "reclaim_lost"):
            pd.testing.assert_frame_equal(getattr(b, part), getattr(a, part))
        assert (b.coverage, b.present, b.expected) == (a.coverage, a.present, a.expected)


def hours(first: datetime, count: int) -> list[datetime]:
    return [first + HOUR * i for i in range(count)]


@pytest.mark.parametrize(
    ("first", "count", "config"),
    [
        (t(8), 6, {}),
        (t(8), 5, {"live_hours": 2}),
        (t(9), 2, {"max_gap": 60.0}),
        (t(10), 3, {"interval": 15.0, "max_gap": 300.0, "live_hours": 1}),
        (t(7), 8, {"max_gap": 299.0}),
    ],
)
def test_raw_samples_give_the_promql_answers_on_irregular_series(
    irregular: PrometheusServer,
    tmp_path: object,
    first: datetime,
    count: int,
    config: dict[str, object],
) -> None:
    assert_same_answers(irregular, tmp_path, hours(first, count), **config)


def test_raw_samples_give_the_promql_answers_on_the_metering_scenario(
    prometheus: PrometheusServer, tmp_path: object
) -> None:
    assert_same_answers(prometheus, tmp_path, hours(fixtures.at(7), 8))


def test_both_ways_meter_the_same_ledger(prometheus: PrometheusServer, tmp_path: Path) -> None:
    frames = []
    for remote_read in (True, False):
        folder = tmp_path / str(remote_read)
        folder.mkdir()
        m = meter(prometheus, str(folder), remote_read=remote_read)
        summary = m.meter_range(fixtures.at(8), fixtures.at(14))
        assert summary.hours_ok == 6
        frames.append(m.ledger.usage_frame(fixtures.at(8), fixtures.at(14)))
    pd.testing.assert_frame_equal(frames[0], frames[1])


@pytest.fixture(scope="module")
def limited(
    metering_tsdb: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    """The metering scenario on a Prometheus that sends at most 100 samples per remote read."""
    data = tmp_path_factory.mktemp("limited") / "data"
    shutil.copytree(metering_tsdb, data)
    with PrometheusServer(data, flags=("--storage.remote.read-sample-limit=100",)) as server:
        yield server


def test_over_the_remote_read_limit_the_meter_asks_promql(
    limited: PrometheusServer, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    with pytest.raises(RemoteReadUnsupported, match="limit"):
        PromSource(limited.url).samples(
            promql.FAIRPOOL_ALLOCATION, *read_span(hours(fixtures.at(8), 6), 300.0)
        )
    frames, meters = [], []
    for server, name in ((limited, "limited"), (prometheus, "full")):
        (tmp_path / name).mkdir()
        m = meter(server, str(tmp_path / name))
        assert m.meter_range(fixtures.at(8), fixtures.at(14)).hours_ok == 6
        frames.append(m.ledger.usage_frame(fixtures.at(8), fixtures.at(14)))
        meters.append(m)
    # The limited server's meter asked PromQL; the other read the raw samples.
    assert [m._remote_read_works for m in meters] == [False, True]
    pd.testing.assert_frame_equal(frames[0], frames[1])


class SpoilingProxy:
    """A loopback proxy in front of a real Prometheus whose remote-read answers are
    spoiled: the first `times` of them are replaced by what `spoil` makes of them."""

    def __init__(self, upstream: str, spoil: str, times: int) -> None:
        self.upstream, self.spoil, self.times, self.reads = upstream, spoil, times, 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length")
                }
                request = urllib.request.Request(
                    proxy.upstream + self.path,
                    data=body or None,
                    method=self.command,
                    headers=headers,
                )
                with urllib.request.urlopen(request) as answer:
                    status, data = answer.status, answer.read()
                    kind = answer.headers.get("Content-Type", "")
                    encoding = answer.headers.get("Content-Encoding")
                if self.path.startswith("/api/v1/read"):
                    proxy.reads += 1
                    if proxy.reads <= proxy.times:
                        if proxy.spoil == "reset":
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        status, data, kind = {
                            "garbage": (200, b"\x00\xffno snappy", kind),
                            "truncated": (200, data[: len(data) // 2], kind),
                            "not protobuf": (
                                200,
                                bytes(cramjam.snappy.compress_raw(b"\xff" * 64)),
                                kind,
                            ),
                            "503": (503, b"overloaded", "text/plain"),
                        }[proxy.spoil]
                self.send_response(status)
                self.send_header("Content-Type", kind)
                if encoding:
                    self.send_header("Content-Encoding", encoding)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> SpoilingProxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("spoil", ["garbage", "truncated", "not protobuf"])
def test_a_remote_read_answer_that_cannot_be_decoded_leaves_the_hours_pending_naming_it(
    prometheus: PrometheusServer, tmp_path: Path, spoil: str
) -> None:
    """It raised cramjam's or protobuf's error out of the run: a traceback, no hour
    marked pending, no run recorded."""
    with SpoilingProxy(prometheus.url, spoil, times=100) as proxy:
        ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
        m = Meter(PromSource(proxy.url, backoff=0), ledger, load_policy(None))
        summary = m.meter_range(fixtures.at(8), fixtures.at(14))
    assert summary.hours_pending == 6 and summary.hours_ok == 0
    error = summary.first_error or ""
    assert f"{proxy.url}/api/v1/read: an answer of" in error
    assert "no remote-read response" in error
    assert "the hours 2026-10-05 08:00..13:00 UTC" in error
    assert ledger.pending_hours() == hours(fixtures.at(8), 6)
    assert ledger.usage_frame(fixtures.at(8), fixtures.at(14)).empty
    # Read again once the answers are whole, the hours are metered as usual.
    summary = Meter(PromSource(prometheus.url), ledger, load_policy(None)).meter_due(
        fixtures.at(14, 10)
    )
    assert summary.hours_ok >= 6 and not ledger.pending_hours()


@pytest.mark.parametrize("spoil", ["503", "reset"])
def test_a_remote_read_is_retried_as_a_query_is(
    prometheus: PrometheusServer, tmp_path: Path, spoil: str
) -> None:
    """It was sent once: one 503 left the chunk pending, one reset connection ended the
    run ("cannot connect") while every PromQL query of it would have been retried."""
    expected = meter(prometheus, str(tmp_path)).meter_range(fixtures.at(8), fixtures.at(14))
    with SpoilingProxy(prometheus.url, spoil, times=1) as proxy:
        ledger = Ledger(f"sqlite:///{tmp_path}/through-proxy.db")
        m = Meter(PromSource(proxy.url, backoff=0), ledger, load_policy(None))
        summary = m.meter_range(fixtures.at(8), fixtures.at(14))
    assert proxy.reads == 2
    assert summary.hours_ok == 6, summary.first_error
    assert m._remote_read_works is True
    assert [o.gpu_seconds for o in summary.outcomes] == [o.gpu_seconds for o in expected.outcomes]


def test_remote_read_retries_are_bounded(prometheus: PrometheusServer, tmp_path: Path) -> None:
    with SpoilingProxy(prometheus.url, "503", times=100) as proxy:
        ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
        m = Meter(PromSource(proxy.url, backoff=0), ledger, load_policy(None))
        summary = m.meter_range(fixtures.at(8), fixtures.at(14))
    assert proxy.reads == 1 + RETRIES
    assert summary.hours_pending == 6
    assert "/api/v1/read" in (summary.first_error or "")
