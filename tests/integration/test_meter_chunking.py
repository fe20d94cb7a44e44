"""An hour's rows do not depend on the chunk it is metered in, on a real Prometheus.

The data are complete in Prometheus before either run: metering the hours one by one and
as one chunk must store the same rows (docs/reports.md, "Chunks")."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from policies.loader import load_policy
from reports.ledger import Ledger
from reports.metering.meter import Meter, MeterConfig
from reports.metering.prom_source import PromSource
from tests.promtest import PrometheusServer, Scenario, create_blocks
from tests.promtest.scenario import Series, ts

pytestmark = pytest.mark.integration

H100 = "NVIDIA-H100-80GB-HBM3"


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 10, 5, hour, minute, tzinfo=UTC)


@pytest.fixture(scope="module")
def late_report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Pod `late` (4 GPUs) ran 09:00-11:00 as kube-state-metrics saw it; fairpool's gauge
    reports it only from 10:30 (its leader started then). Pod `steady` ran 08:00-12:00,
    reported by both throughout."""
    s = Scenario(interval=30)
    node = s.node("gpu-a", "uni-north", H100, 8, at(8), at(12))
    s.pod("lab-bio", "late", node, 4, at(9), at(11), utilization=None)
    s.pod("physics", "steady", node, 2, at(8), at(12), utilization=None)
    for series in s.series:
        if series.family == "fairpool_pod_gpu_allocation" and series.labels["pod"] == "late":
            series.samples = [(t, v) for t, v in series.samples if t >= ts(at(10, 30))]
    folder = tmp_path_factory.mktemp("chunking")
    create_blocks(s.write_openmetrics(folder / "scenario.om"), folder / "blocks")
    shutil.copytree(folder / "blocks", folder / "data")
    with PrometheusServer(folder / "data") as server:
        yield server


@pytest.mark.parametrize("remote_read", [True, False])
def test_an_hour_metered_alone_or_in_a_chunk_gets_the_same_rows(
    late_report: PrometheusServer, tmp_path: Path, remote_read: bool
) -> None:
    """In a day's chunk, `late` was billed nothing for 09:00-10:00: fairpool reported it
    somewhere in the chunk, so kube-state-metrics billed it in none of the chunk's hours;
    the hour metered alone billed it 4 GPU-hours from kube-state-metrics."""
    frames = []
    for chunk_hours in (24, 1):
        ledger = Ledger(f"sqlite:///{tmp_path}/ledger-{chunk_hours}.db")
        config = MeterConfig(chunk_hours=chunk_hours, remote_read=remote_read)
        meter = Meter(PromSource(late_report.url), ledger, load_policy(None), config)
        assert meter.meter_range(at(8), at(12)).hours_ok == 4
        frames.append(ledger.usage_frame(at(8), at(12)).drop(columns="metered_at", errors="ignore"))
    pd.testing.assert_frame_equal(frames[0], frames[1])
    late = frames[0][frames[0]["pod"] == "late"].set_index("hour")["gpu_seconds"]
    assert late[pd.Timestamp(at(9))] == 4 * 3600.0
    # 10:30-11:00 from fairpool's gauge, billed once (not also from kube-state-metrics).
    assert late[pd.Timestamp(at(10))] == 4 * 1800.0
    steady = frames[0][frames[0]["pod"] == "steady"]["gpu_seconds"]
    assert steady.tolist() == [2 * 3600.0] * 4


@pytest.fixture(scope="module")
def relabelled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Node gpu-a's `fairpool.io/owner` label changes from uni-north to lab-bio at 10:00
    (the node moved to another owner); pod `ksm-only` (2 GPUs, 09:00-11:00) is seen by
    kube-state-metrics alone, so its owner is the node's label."""
    s = Scenario(interval=30)
    node = s.node("gpu-a", "uni-north", H100, 8, at(8), at(12))
    s.pod("misc", "ksm-only", node, 2, at(9), at(11), fairpool=False, utilization=None)
    for series in list(s.series):
        if series.family == "kube_node_labels":
            after = [(t, v) for t, v in series.samples if t >= ts(at(10))]
            series.samples = [(t, v) for t, v in series.samples if t < ts(at(10))]
            moved = {**series.labels, "label_fairpool_io_owner": "lab-bio"}
            s.series.append(Series(series.family, series.kind, moved, after))
    folder = tmp_path_factory.mktemp("relabelled")
    create_blocks(s.write_openmetrics(folder / "scenario.om"), folder / "blocks")
    shutil.copytree(folder / "blocks", folder / "data")
    with PrometheusServer(folder / "data") as server:
        yield server


def test_a_node_s_owner_in_an_hour_does_not_depend_on_the_chunk(
    relabelled: PrometheusServer, tmp_path: Path
) -> None:
    """In a day's chunk the node's labels were those around the whole day (the largest
    owner of the two): 11:00's capacity went to uni-north, which it gave to lab-bio
    metered alone."""
    usage, capacity = [], []
    for chunk_hours in (24, 1):
        ledger = Ledger(f"sqlite:///{tmp_path}/ledger-{chunk_hours}.db")
        config = MeterConfig(chunk_hours=chunk_hours)
        meter = Meter(PromSource(relabelled.url), ledger, load_policy(None), config)
        assert meter.meter_range(at(8), at(12)).hours_ok == 4
        usage.append(ledger.usage_frame(at(8), at(12)).drop(columns="metered_at", errors="ignore"))
        capacity.append(ledger.capacity_frame(at(8), at(12)))
    pd.testing.assert_frame_equal(usage[0], usage[1])
    pd.testing.assert_frame_equal(capacity[0], capacity[1])
    owners = capacity[0].set_index("hour")["owner"]
    assert owners[pd.Timestamp(at(8))] == "uni-north"
    assert owners[pd.Timestamp(at(11))] == "lab-bio"


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """No scrape at all succeeds 09:50-11:10: Prometheus holds nothing of 10:00. Pod
    `ksm-only` (2 GPUs, 09:00-13:00) is seen by kube-state-metrics alone, pod `both`
    (1 GPU, same times) by fairpool too."""
    s = Scenario(interval=30)
    node = s.node("gpu-a", "uni-north", H100, 8, at(8), at(14))
    s.pod("misc", "ksm-only", node, 2, at(9), at(13), fairpool=False, utilization=None)
    s.pod("lab-bio", "both", node, 1, at(9), at(13), utilization=None)
    s.gap(at(9, 50), at(11, 10))
    folder = tmp_path_factory.mktemp("outage")
    create_blocks(s.write_openmetrics(folder / "scenario.om"), folder / "blocks")
    shutil.copytree(folder / "blocks", folder / "data")
    with PrometheusServer(folder / "data") as server:
        yield server


def test_an_hour_prometheus_holds_nothing_of_is_pending_in_a_chunk_as_alone(
    outage: PrometheusServer, tmp_path: Path
) -> None:
    """In a chunk, the pods' start and completion times, read around the whole chunk,
    billed `ksm-only` for 10:00 (and `both` too, once fairpool's hours were per hour),
    which metered alone has no data and stays pending. (The hours around the outage
    still differ for `ksm-only`: a chunk bills them from its start and completion times,
    alone from its Running samples, the completion not being seen yet.)"""
    frames = []
    for chunk_hours in (24, 1):
        ledger = Ledger(f"sqlite:///{tmp_path}/ledger-{chunk_hours}.db")
        config = MeterConfig(chunk_hours=chunk_hours)
        meter = Meter(PromSource(outage.url), ledger, load_policy(None), config)
        summary = meter.meter_range(at(9), at(13))
        assert [o.status for o in summary.outcomes] == ["metered", "pending", "metered", "metered"]
        usage = ledger.usage_frame(at(9), at(13))
        assert at(10) not in set(usage["hour"])
        frames.append(usage[usage["pod"] == "both"].drop(columns="metered_at", errors="ignore"))
    pd.testing.assert_frame_equal(frames[0], frames[1])
