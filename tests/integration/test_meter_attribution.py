"""Attribution and pending hours against a real Prometheus (promtool-loaded blocks).

Scenario (2026-10-06, UTC, scraped every 30 s): node gpu-a (uni-north, 8 x H100) from
08:00 to 12:00;
  lab-bio/train   2 GPUs gpu-a 09:00-11:00  fairpool
  misc/orphan     1 GPU  gpu-a 09:00-09:00:20  kube-state-metrics only, no kube_pod_info
                                              (its GPU request names the node)
  misc/ghost      1 GPU  on a node with no kube_node_labels 10:00-10:30 (no GPU model)
Before 08:00 Prometheus has no node at all: the cluster did not exist yet.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from policies.loader import load_policy
from policies.model import Policy
from reports.ledger import Ledger
from reports.metering.meter import Meter
from reports.metering.prom_source import PromSource
from reports.sources.monthly_job import ledger_month_report
from tests.promtest import Node, PrometheusServer, Scenario, create_blocks

pytestmark = pytest.mark.integration

H100 = "NVIDIA-H100-80GB-HBM3"
HOUR = timedelta(hours=1)


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 10, 6, hour, minute, second, tzinfo=UTC)


def build_scenario() -> Scenario:
    s = Scenario(interval=30, ksm_replicas=1)
    a = s.node("gpu-a", "uni-north", H100, 8, at(8), at(12))
    ghost = Node("ghost", "", "", 1, at(10), at(11))  # no labels, no capacity series
    s.pod("lab-bio", "train", a, 2, at(9), at(11))
    s.pod("misc", "orphan", a, 1, at(9), at(9, 0, 20), fairpool=False, pod_info=False)
    s.pod("misc", "ghost", ghost, 1, at(10), at(10, 30), fairpool=False, utilization=None)
    return s


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    folder = tmp_path_factory.mktemp("attribution")
    data = build_scenario().write_openmetrics(folder / "scenario.om")
    create_blocks(data, folder / "blocks")
    shutil.copytree(folder / "blocks", folder / "data")
    with PrometheusServer(folder / "data") as server:
        yield server


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(None)


@pytest.fixture(scope="module")
def metered(
    prometheus: PrometheusServer, policy: Policy, tmp_path_factory: pytest.TempPathFactory
) -> Ledger:
    url = f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'ledger.db'}"
    ledger = Ledger(url)
    summary = Meter(PromSource(prometheus.url), ledger, policy).meter_range(at(5), at(12))
    assert summary.hours_pending == 0, summary.outcomes
    return ledger


def test_hours_before_the_cluster_existed_are_empty_not_pending(metered: Ledger) -> None:
    status = metered.hour_status(at(5), at(12)).set_index("hour")["status"]
    assert [status[pd.Timestamp(at(h))] for h in range(5, 12)] == [
        "empty",
        "empty",
        "empty",
        "metered",
        "metered",
        "metered",
        "metered",
    ]
    assert metered.pending_hours() == []
    assert len(metered.usage_frame(at(5), at(8))) == 0


def test_pod_without_pod_info_is_attributed_from_its_request(metered: Ledger) -> None:
    frame = metered.usage_frame(at(9), at(10)).set_index("pod_uid")
    orphan = frame.loc["uid-misc-orphan"]
    assert (orphan["node"], orphan["owner"], orphan["gpu_model"], orphan["member"]) == (
        "gpu-a",
        "uni-north",
        H100,
        "unattributed",
    )
    assert orphan["gpu_seconds"] == pytest.approx(20.0)


def test_dcgm_coverage_is_stored_per_node_and_source(metered: Ledger) -> None:
    coverage = metered.node_coverage_frame(at(9), at(10)).set_index("node")
    assert coverage.loc["gpu-a", "capacity"] == pytest.approx(1.0)
    assert coverage.loc["gpu-a", "allocation"] == pytest.approx(1.0)
    # train has DCGM for its 2 GPUs; the 20-second orphan has none.
    assert coverage.loc["gpu-a", "utilization"] == pytest.approx(7200 / 7220, abs=0.01)
    ghost = metered.node_coverage_frame(at(10), at(11)).set_index("node")
    assert ghost.loc["ghost", "utilization"] == 0.0


def test_a_pod_without_gpu_model_does_not_block_the_month(metered: Ledger, policy: Policy) -> None:
    report = ledger_month_report(metered.url, policy, "2026-10")
    table = report.unattributed
    assert table[["namespace", "pod"]].values.tolist() == [["misc", "ghost"]]
    assert float(table["gpu_seconds"].iloc[0]) == pytest.approx(1800.0)
    assert any("misc/ghost" in f and "2026-10-06 10:00Z" in f for f in report.flags)
    used = report.summary.set_index("member")["used_gpu_hours"]
    assert used["lab-bio"] == pytest.approx(4.0)


def test_hours_prometheus_no_longer_holds_keep_what_was_metered(
    prometheus: PrometheusServer, policy: Policy, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Past its retention Prometheus holds nothing of an hour, no node series either. An
    hour metered then (or pending: nodes existed) is not an hour before the cluster
    existed: metering the range again keeps its usage and never marks it empty."""
    folder = tmp_path_factory.mktemp("retention")
    ledger = Ledger(f"sqlite:///{folder / 'ledger.db'}")
    Meter(PromSource(prometheus.url), ledger, policy).meter_range(at(8), at(11))
    ledger.mark_pending(at(11), "Prometheus did not answer")
    before = ledger.usage_frame(at(8), at(11))
    assert len(before) and before["gpu_seconds"].sum() > 0
    with PrometheusServer(folder / "empty") as forgotten:  # all of it past the retention
        summary = Meter(PromSource(forgotten.url), ledger, policy).meter_range(at(8), at(12))
    assert {o.status for o in summary.outcomes} == {"pending"}
    status = ledger.hour_status(at(8), at(12)).set_index("hour")["status"]
    assert [status[pd.Timestamp(at(h))] for h in range(8, 12)] == ["metered"] * 3 + ["pending"]
    after = ledger.usage_frame(at(8), at(11))
    assert after["gpu_seconds"].sum() == before["gpu_seconds"].sum()


def test_a_chunk_whose_write_fails_is_metered_by_the_next_run(
    prometheus: PrometheusServer,
    policy: Policy,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hourly job takes 10:00, 11:00 (data) and 12:00 (no data yet: pending). The
    chunk's write fails (the database connection is lost): nothing of it may count as
    attempted, or the next run starts after 12:00 and never meters 10:00 and 11:00."""
    ledger = Ledger(f"sqlite:///{tmp_path_factory.mktemp('crash') / 'ledger.db'}")
    meter = Meter(PromSource(prometheus.url), ledger, policy)
    meter.meter_range(at(9), at(10))
    written = ledger.replace_hours

    def lost(*args: object) -> None:
        raise ConnectionError("the database connection was lost")

    monkeypatch.setattr(ledger, "replace_hours", lost)
    with pytest.raises(ConnectionError):
        meter.meter_due(now=at(13, 6))
    monkeypatch.setattr(ledger, "replace_hours", written)
    summary = meter.meter_due(now=at(13, 6))
    assert [(o.hour, o.status) for o in summary.outcomes] == [
        (at(10), "metered"),
        (at(11), "metered"),
        (at(12), "pending"),
    ]
