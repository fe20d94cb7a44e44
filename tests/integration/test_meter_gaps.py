"""A pod's allocation series with a gap longer than `max_gap`, on a real Prometheus: the
gap is not billed (docs/reports.md, "Gaps longer than max_gap") and the meter says which
pod and when."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from policies.loader import load_policy
from reports.ledger import Ledger
from reports.metering.meter import Meter, MeterConfig
from reports.metering.prom_source import PromSource
from tests.promtest import PrometheusServer, Scenario, create_blocks
from tests.promtest.scenario import ts

pytestmark = pytest.mark.integration

H100 = "NVIDIA-H100-80GB-HBM3"


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 10, 5, hour, minute, tzinfo=UTC)


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Pod `train` (4 GPUs, 09:00-11:00): fairpool's gauge is not scraped 09:30-09:50
    (kube-state-metrics is). Pod `steady` (1 GPU) misses 09:30-09:34:30, under max_gap."""
    s = Scenario(interval=30)
    node = s.node("gpu-a", "uni-north", H100, 8, at(8), at(12))
    s.pod("lab-bio", "train", node, 4, at(9), at(11), utilization=None)
    s.pod("physics", "steady", node, 1, at(9), at(11), utilization=None)
    holes = {"train": (at(9, 30), at(9, 50)), "steady": (at(9, 30), at(9, 34))}
    for series in s.series:
        if series.family == "fairpool_pod_gpu_allocation":
            lo, hi = holes[series.labels["pod"]]
            series.samples = [(t, v) for t, v in series.samples if not ts(lo) <= t < ts(hi)]
    folder = tmp_path_factory.mktemp("gaps")
    create_blocks(s.write_openmetrics(folder / "scenario.om"), folder / "blocks")
    shutil.copytree(folder / "blocks", folder / "data")
    with PrometheusServer(folder / "data") as server:
        yield server


def test_a_gap_longer_than_max_gap_is_not_billed_and_is_named(
    outage: PrometheusServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing was said: the hour's coverage stayed 1 (the gap's grid points are not live,
    so no sample was expected there) and 20 minutes of 4 GPUs went unbilled unnoticed."""
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    with caplog.at_level(logging.WARNING, logger="reports.metering.meter"):
        summary = Meter(PromSource(outage.url), ledger, load_policy(None)).meter_range(
            at(9), at(11)
        )
    assert summary.hours_ok == 2
    usage = ledger.usage_frame(at(9), at(11)).set_index(["hour", "pod"])["gpu_seconds"]
    # The documented rule: one scrape interval per sample, the gap itself not billed.
    assert usage[(at(9), "train")] == 4 * (3600.0 - 20 * 60)
    # Under max_gap the gap is bridged: billed whole, and nothing to say.
    assert usage[(at(9), "steady")] == 3600.0
    said = [r.getMessage() for r in caplog.records if "max_gap" in r.getMessage()]
    assert said == [
        "pod lab-bio/train (uid uid-lab-bio-train): no fairpool_pod_gpu_allocation sample "
        "from 2026-10-05 09:29:30 to 2026-10-05 09:50:00 UTC, longer than max_gap (300 s): "
        "1200 s of it are not billed (the pod is billed one scrape interval per sample, and "
        "a gap bridged only up to max_gap)"
    ]


def test_a_gap_longer_than_max_gap_is_named_on_the_promql_path_too(
    outage: PrometheusServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server without remote read gets the live points from PromQL: nothing was said
    there, and the hour with 20 minutes of 4 GPUs unbilled was metered as covered."""
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    meter = Meter(PromSource(outage.url), ledger, load_policy(None), MeterConfig(remote_read=False))
    with caplog.at_level(logging.WARNING, logger="reports.metering.meter"):
        summary = meter.meter_range(at(9), at(11))
    assert summary.hours_ok == 2
    usage = ledger.usage_frame(at(9), at(11)).set_index(["hour", "pod"])["gpu_seconds"]
    assert usage[(at(9), "train")] == 4 * (3600.0 - 20 * 60)
    said = [r.getMessage() for r in caplog.records if "max_gap" in r.getMessage()]
    assert said == [
        "pod lab-bio/train (uid uid-lab-bio-train): at least 1200 s of the hour 2026-10-05 09:00 "
        "UTC fall in gaps longer than max_gap (300 s) between its fairpool_pod_gpu_allocation "
        "samples and are not billed (the pod is billed one scrape interval per sample, and "
        "a gap bridged only up to max_gap)"
    ]
