"""fairpool's allocation gauge in Prometheus twice, against a real Prometheus: scraped by
the chart's PodMonitor (without honor_labels: the replica in `pod`, the billed pod in
`exported_pod`) and by another job with honor_labels (the pod's own labels).

Scenario (2026-10-08, UTC, scraped every 30 s): node gpu-a (uni-north, 8 x H100) from
08:00 to 14:00; lab-bio/train on 2 of its GPUs from 10:30 to 12:00, reported by the
leader fairpool-0 and seen in both layouts.
"""

from __future__ import annotations

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

pytestmark = pytest.mark.integration

H100 = "NVIDIA-H100-80GB-HBM3"


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 10, 8, hour, minute, tzinfo=UTC)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    s = Scenario(interval=30, ksm_replicas=1)
    a = s.node("gpu-a", "uni-north", H100, 8, at(8), at(14))
    train = s.pod("lab-bio", "train", a, 2, at(10, 30), at(12))
    labels = {"uid": train.uid, "member": "lab-bio", "owner": "uni-north", "gpu_model": H100}
    s.add_series(
        "fairpool_pod_gpu_allocation",
        {
            **labels,
            "node": "gpu-a",
            "namespace": "fairpool-system",
            "pod": "fairpool-0",
            "exported_namespace": "lab-bio",
            "exported_pod": "train",
        },
        at(10, 30),
        at(12),
        2,
    )
    folder = tmp_path_factory.mktemp("scraped-twice")
    create_blocks(s.write_openmetrics(folder / "scenario.om"), folder / "blocks")
    shutil.copytree(folder / "blocks", folder / "data")
    with PrometheusServer(folder / "data") as server:
        yield server


@pytest.mark.parametrize("remote_read", [True, False])
def test_a_pod_seen_in_both_label_layouts_is_billed_once(
    prometheus: PrometheusServer, tmp_path: Path, remote_read: bool
) -> None:
    """The hourly job meters 10:00 before the pod's completion is known: its half hour
    on 2 GPUs is 3,600 GPU-seconds (it was 7,200, the two layouts added up)."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    config = MeterConfig(remote_read=remote_read)
    meter = Meter(PromSource(prometheus.url), ledger, load_policy(None), config)
    meter.meter_range(at(10), at(11))
    meter.meter_range(at(11), at(12))
    usage = ledger.usage_frame(at(10), at(12))
    assert usage["pod"].tolist() == ["train", "train"]
    assert usage["namespace"].tolist() == ["lab-bio", "lab-bio"]
    assert usage["gpu_seconds"].tolist() == [3600.0, 7200.0]
    assert usage["coverage"].tolist() == [1.0, 1.0]
