"""Prometheus fixtures for metering tests (import the fixtures you use into the module).

- `metering_scenario` (module): the known scenario below, as a `tests.promtest.Scenario`.
- `metering_tsdb` (module): a folder of TSDB blocks made from it by promtool.
- `prometheus` (module): a real Prometheus serving those blocks on loopback.
- `fresh_prometheus` (function): a private Prometheus with its own copy of the blocks,
  for tests that stop and restart it.

The scenario (2026-10-05, UTC, scraped every 30 s, two kube-state-metrics replicas):
  nodes gpu-a (uni-north, 8 x H100) and gpu-b (lab-bio, 4 x A100), 08:00-14:00;
  lab-bio/train-1   4 GPUs gpu-a 09:30-11:15  fairpool, DCGM engine-active 0.5
  physics/infer-1   2 GPUs gpu-b 10:00-12:00  fairpool, DCGM GPU_UTIL 80 %, exported_*
                                              labels and lowercase `hostname`
  lab-bio/short     1 GPU  gpu-b 10:10:05-10:10:17  kube-state-metrics only (12 s)
  ai-startup-x/ext  2 GPUs gpu-a 10:40:10-11:20:20  kube-state-metrics only
  misc/stray        1 GPU  gpu-a 11:00-11:30  kube-state-metrics only, no member
  lab-bio/blip      1 GPU  gpu-b 10:29:55-10:30:05  fairpool (one scrape sees it), 10 s
  no scrape at all succeeds in 10:20-10:22 (4 scrapes missing);
  fairpool_reclaim_lost_gpu_seconds_total{member=physics, cause=entitlement}: 0 @09:50,
  60 @10:05, 120 @10:30, reset -> 30 @10:45, 90 @11:10  (hour 10: 150 s, hour 11: 60 s);
  the same with cause=consolidation from the leader (`instance` a), scraped twice (`job`
  fairpool and fairpool-again): 0 @10:00, 40 @10:50, 50 @11:05 (hour 10: 40 s, once;
  hour 11: 10 s); and from the next leader (`instance` b, after a leader change at
  11:05): 0 @11:00, 20 @11:20 (hour 11: 10 + 20 s).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.promtest import PrometheusServer, Scenario, create_blocks

H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-80GB"


def at(hour: int, minute: int = 0, second: int = 0, day: int = 5) -> datetime:
    return datetime(2026, 10, day, hour, minute, second, tzinfo=UTC)


def build_scenario() -> Scenario:
    s = Scenario(interval=30, ksm_replicas=2)
    a = s.node("gpu-a", "uni-north", H100, 8, at(8), at(14))
    b = s.node("gpu-b", "lab-bio", A100, 4, at(8), at(14))
    s.pod("lab-bio", "train-1", a, 4, at(9, 30), at(11, 15), utilization=0.5)
    s.pod(
        "physics",
        "infer-1",
        b,
        2,
        at(10),
        at(12),
        utilization=0.8,
        dcgm_metric="DCGM_FI_DEV_GPU_UTIL",
        dcgm_host_label="hostname",
        dcgm_exported=True,
    )
    s.pod("lab-bio", "short", b, 1, at(10, 10, 5), at(10, 10, 17), fairpool=False)
    s.pod("ai-startup-x", "ext", a, 2, at(10, 40, 10), at(11, 20, 20), fairpool=False)
    s.pod("misc", "stray", a, 1, at(11), at(11, 30), fairpool=False, utilization=None)
    s.pod("lab-bio", "blip", b, 1, at(10, 29, 55), at(10, 30, 5), utilization=None)
    s.gap(at(10, 20), at(10, 22))
    s.add_points(
        "fairpool_reclaim_lost_gpu_seconds",
        {"member": "physics", "gpu_model": A100, "cause": "entitlement"},
        [(at(9, 50), 0), (at(10, 5), 60), (at(10, 30), 120), (at(10, 45), 30), (at(11, 10), 90)],
        kind="counter",
    )
    moves = {"member": "physics", "gpu_model": A100, "cause": "consolidation"}
    for job in ("fairpool", "fairpool-again"):
        s.add_points(
            "fairpool_reclaim_lost_gpu_seconds",
            {**moves, "instance": "a", "job": job},
            [(at(10), 0), (at(10, 50), 40), (at(11, 5), 50)],
            kind="counter",
        )
    s.add_points(
        "fairpool_reclaim_lost_gpu_seconds",
        {**moves, "instance": "b", "job": "fairpool"},
        [(at(11), 0), (at(11, 20), 20)],
        kind="counter",
    )
    return s


@pytest.fixture(scope="module")
def metering_scenario() -> Scenario:
    return build_scenario()


@pytest.fixture(scope="module")
def metering_tsdb(metering_scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("promtsdb")
    data = metering_scenario.write_openmetrics(folder / "scenario.om")
    create_blocks(data, folder / "blocks")
    return folder / "blocks"


@pytest.fixture(scope="module")
def prometheus(
    metering_tsdb: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    folder = tmp_path_factory.mktemp("prometheus")
    shutil.copytree(metering_tsdb, folder / "data")
    with PrometheusServer(folder / "data") as server:
        yield server


@pytest.fixture
def fresh_prometheus(metering_tsdb: Path, tmp_path: Path) -> Iterator[PrometheusServer]:
    shutil.copytree(metering_tsdb, tmp_path / "data")
    server = PrometheusServer(tmp_path / "data").start()
    try:
        yield server
    finally:
        server.stop()
