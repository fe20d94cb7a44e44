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

import random
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from policies.loader import load_policy
from reports.ledger import Ledger
from reports.metering import promql
from reports.metering.grid import read_span
from reports.metering.meter import Meter, MeterConfig
from reports.metering.prom_source import PromSource
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
