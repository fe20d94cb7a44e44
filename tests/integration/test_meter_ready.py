"""A node kube-state-metrics reports NotReady, on a real Prometheus: its GPUs are no
capacity in those grid points (docs/glossary.md, contribution: present and Ready), on
both read paths; a cordoned but Ready node, and a node without any Ready series, still
count; use on the NotReady node is still billed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from policies.loader import load_policy
from reports.ledger import Ledger
from reports.metering.meter import Meter, MeterConfig
from reports.metering.prom_source import PromSource
from tests.promtest import PrometheusServer, Scenario, create_blocks

pytestmark = pytest.mark.integration

H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-80GB"
HOUR = timedelta(hours=1)


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 10, 5, hour, minute, tzinfo=UTC)


@pytest.fixture(scope="module")
def not_ready(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """08:00-14:00, two kube-state-metrics replicas. gpu-a (uni-north, 8 x H100) NotReady
    10:00-12:20, pod lab-bio/train (2 GPUs) on it 09:30-11:30; no scrape succeeds
    11:10-11:12 (bridged). gpu-b (lab-bio, 4 x A100): no Ready series at all. gpu-c
    (lab-bio, 4 x H100): Ready, cordoned all day. gpu-d (lab-bio, 2 x H100): NotReady
    from 12:30, deleted at 12:50."""
    s = Scenario(interval=30, ksm_replicas=2)
    a = s.node("gpu-a", "uni-north", H100, 8, at(8), at(14))
    s.node_ready(a, [(at(10), at(12, 20))])
    s.node("gpu-b", "lab-bio", A100, 4, at(8), at(14))
    c = s.node("gpu-c", "lab-bio", H100, 4, at(8), at(14))
    s.node_ready(c)
    s.add_series(
        "kube_node_spec_unschedulable",
        {"job": "kube-state-metrics", "instance": "10.0.0.10:8080", "node": "gpu-c"},
        at(8),
        at(14),
        1,
    )
    s.pod("lab-bio", "train", a, 2, at(9, 30), at(11, 30), utilization=None)
    d = s.node("gpu-d", "lab-bio", H100, 2, at(8), at(12, 50))
    s.node_ready(d, [(at(12, 30), at(12, 50))])
    s.gap(at(11, 10), at(11, 12))
    folder = tmp_path_factory.mktemp("ready")
    create_blocks(s.write_openmetrics(folder / "scenario.om"), folder / "blocks")
    shutil.copytree(folder / "blocks", folder / "data")
    with PrometheusServer(folder / "data") as server:
        yield server


def metered(server: PrometheusServer, tmp_path: Path, remote_read: bool) -> Ledger:
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger-{remote_read}.db")
    meter = Meter(
        PromSource(server.url), ledger, load_policy(None), MeterConfig(remote_read=remote_read)
    )
    assert meter.meter_range(at(8), at(14)).hours_ok == 6
    return ledger


@pytest.mark.parametrize("remote_read", [True, False])
def test_a_not_ready_node_contributes_no_capacity(
    not_ready: PrometheusServer, tmp_path: Path, remote_read: bool
) -> None:
    """gpu-a's 8 GPUs were capacity all day, NotReady hours included: with
    `idleCost: by-contribution` the other members paid for a broken node's hours."""
    ledger = metered(not_ready, tmp_path, remote_read)
    capacity = ledger.capacity_frame(at(8), at(14)).set_index(["hour", "node"])
    available = capacity["gpu_seconds_available"]
    hours = [at(8) + HOUR * i for i in range(6)]
    ready_seconds = [3600.0, 3600.0, 0.0, 0.0, 2400.0, 3600.0]
    assert [available[(h, "gpu-a")] for h in hours] == [8 * s for s in ready_seconds]
    # No Ready series: counted as before. Cordoned but Ready: still contributes.
    assert [available[(h, "gpu-b")] for h in hours] == [4 * 3600.0] * 6
    assert [available[(h, "gpu-c")] for h in hours] == [4 * 3600.0] * 6
    # NotReady, then gone: Ready until 12:30 only, not a max_gap more or less.
    assert [available.get((h, "gpu-d")) for h in hours] == [2 * 3600.0] * 4 + [2 * 1800.0, None]
    # A NotReady node's samples were scraped: its hours are covered, not missing.
    covered = capacity.xs("gpu-a", level="node")["coverage"]
    assert [covered[h] for h in hours if h != at(11)] == [1.0] * 5
    # Use on the NotReady node (its pod still reported running) is still billed.
    usage = ledger.usage_frame(at(8), at(14)).set_index(["hour", "pod"])["gpu_seconds"]
    assert usage[(at(10), "train")] == 2 * 3600.0
    assert usage[(at(11), "train")] == 2 * 1800.0


def test_both_read_paths_agree_on_a_not_ready_node(
    not_ready: PrometheusServer, tmp_path: Path
) -> None:
    frames = [
        metered(not_ready, tmp_path, remote_read).capacity_frame(at(8), at(14))
        for remote_read in (True, False)
    ]
    pd.testing.assert_frame_equal(frames[0], frames[1])
