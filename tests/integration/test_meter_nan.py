"""A NaN sample in Prometheus, metered on both read paths (PromQL, remote read).

One NaN sample makes its hour's `avg_over_time` NaN. The meter filled a NaN mean with 0,
as it fills the mean of a series with no sample in the hour, and stored the pod's hour as
nothing used, or the node's as no GPUs, with full coverage. Here Prometheus (promtool's
blocks, from OpenMetrics with `NaN` samples) answers NaN, and the hour stays pending
naming the series and the hour; the hours around it are metered exactly.

The same for the pods kube-state-metrics bills (a NaN sum of Running samples was 0 and
the hour billed as not run; a NaN GPU request, and the pod was never billed), and for the
reclaim-lost counter, whose NaN sample is skipped as no reading: the hour it fell in kept
nothing of its loss, and the next hour counted the counter's whole total as a reset.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from policies.loader import load_policy
from reports.ledger import Ledger
from reports.metering import promql
from reports.metering.meter import Meter, MeterConfig
from reports.metering.prom_source import PromSource
from tests.promtest import PrometheusServer, Scenario, Series, create_blocks

pytestmark = pytest.mark.integration

H100 = "NVIDIA-H100-80GB-HBM3"
HOUR = timedelta(hours=1)


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 10, 9, hour, minute, tzinfo=UTC)


def one_sample_nan(series: Series, when: datetime) -> None:
    """The sample of `series` scraped at `when` reads NaN (a broken exporter)."""
    t = when.timestamp()
    assert any(s == t for s, _ in series.samples)
    series.samples = [(s, math.nan if s == t else v) for s, v in series.samples]


def nan_scenario() -> Scenario:
    """gpu-a (8 GPUs) and two pods on it, 08:00-12:00; train-1's allocation reads NaN at
    09:15, the node's allocatable GPUs at 10:40."""
    s = Scenario(interval=30)
    node = s.node("gpu-a", "uni-north", H100, 8, at(8), at(12))
    s.pod("lab-bio", "train-1", node, 2, at(8), at(12), utilization=None)
    s.pod("physics", "infer-1", node, 1, at(8), at(12), utilization=None)
    for series in s.series:
        if series.family == "fairpool_pod_gpu_allocation" and series.labels["pod"] == "train-1":
            one_sample_nan(series, at(9, 15))
        if series.family == "kube_node_status_allocatable":
            one_sample_nan(series, at(10, 40))
    return s


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    folder = tmp_path_factory.mktemp("nan")
    data = nan_scenario().write_openmetrics(folder / "scenario.om")
    assert " NaN " in data.read_text()
    create_blocks(data, folder / "blocks")
    shutil.copytree(folder / "blocks", folder / "data")
    with PrometheusServer(folder / "data") as server:
        yield server


def test_prometheus_answers_nan_for_the_hours_mean(prometheus: PrometheusServer) -> None:
    """The premise: one NaN sample, and the hour's mean is NaN (not the other samples')."""
    queries = promql.MeteringQueries()
    source = PromSource(prometheus.url)
    pods = source.hourly(queries.mean(promql.FAIRPOOL_ALLOCATION, ("pod",)), at(8), at(11))
    train = pods[pods["pod"] == "train-1"].set_index("hour")["value"]
    assert [math.isnan(v) for v in train] == [False, True, False, False]
    nodes = source.hourly(queries.mean(promql.KSM_ALLOCATABLE, ("node",)), at(8), at(11))
    assert [math.isnan(v) for v in nodes["value"]] == [False, False, True, False]


@pytest.mark.parametrize("remote_read", [True, False], ids=["remote-read", "promql"])
def test_an_hour_with_a_nan_sample_stays_pending_on_both_read_paths(
    prometheus: PrometheusServer, tmp_path: Path, remote_read: bool
) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    meter = Meter(
        PromSource(prometheus.url), ledger, load_policy(None), MeterConfig(remote_read=remote_read)
    )
    summary = meter.meter_range(at(8), at(12))
    assert meter._remote_read_works is (True if remote_read else None)
    assert [o.status for o in summary.outcomes] == ["metered", "pending", "pending", "metered"]
    pod, node = summary.outcomes[1].error or "", summary.outcomes[2].error or ""
    assert pod.startswith(
        "Prometheus returned NaN for fairpool_pod_gpu_allocation of pod lab-bio/train-1 "
        "in the hour 2026-10-09T09:00Z:"
    )
    assert node.startswith(
        'Prometheus returned NaN for kube_node_status_allocatable{resource="nvidia_com_gpu"} '
        "of node gpu-a in the hour 2026-10-09T10:00Z:"
    )
    assert ledger.pending_hours() == [at(9), at(10)]
    # Nothing of the pending hours is stored; the others are whole and exact.
    usage = ledger.usage_frame(at(8), at(12))
    assert sorted(set(usage["hour"])) == [pd.Timestamp(at(8)), pd.Timestamp(at(11))]
    per_hour = usage.groupby("hour")["gpu_seconds"].sum()
    assert per_hour.tolist() == [3 * 3600.0, 3 * 3600.0]
    assert usage["coverage"].tolist() == [1.0] * 4
    capacity = ledger.capacity_frame(at(8), at(12))
    assert capacity["gpu_seconds_available"].tolist() == [8 * 3600.0, 8 * 3600.0]


# ---- pods kube-state-metrics bills, and the reclaim-lost counter -----------------------


def kube_state_scenario() -> Scenario:
    """gpu-a (8 GPUs) 08:00-14:00, pods only kube-state-metrics reports on it (no
    completion time before 14:00: billed from their Running samples): physics/ext-1
    (1 GPU, 08:00-14:00) whose Running phase reads NaN at 09:15, and physics/late-1 (1
    GPU, 12:00-14:00) whose GPU request reads NaN throughout. The reclaim-lost counter of
    physics: 0 @08:10, 100 @10:10, NaN @10:59:30, 110 @11:10 (hour 10: 100, hour 11: 10)."""
    s = Scenario(interval=30)
    node = s.node("gpu-a", "uni-north", H100, 8, at(8), at(14))
    s.pod("physics", "ext-1", node, 1, at(8), at(14), fairpool=False, utilization=None)
    s.pod("physics", "late-1", node, 1, at(12), at(14), fairpool=False, utilization=None)
    for series in s.series:
        pod = series.labels.get("pod")
        if series.family == "kube_pod_status_phase" and pod == "ext-1":
            one_sample_nan(series, at(9, 15))
        if series.family == "kube_pod_container_resource_requests" and pod == "late-1":
            series.samples = [(t, math.nan) for t, _ in series.samples]
    s.add_points(
        "fairpool_reclaim_lost_gpu_seconds",
        {"member": "physics", "gpu_model": H100, "cause": "entitlement", "pod": "fairpool-0"},
        [
            (at(8, 10), 0),
            (at(10, 10), 100),
            (at(10, 59) + timedelta(seconds=30), math.nan),
            (at(11, 10), 110),
        ],
        kind="counter",
    )
    return s


@pytest.fixture(scope="module")
def kube_state_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    folder = tmp_path_factory.mktemp("nan-kube-state")
    data = kube_state_scenario().write_openmetrics(folder / "scenario.om")
    create_blocks(data, folder / "blocks")
    shutil.copytree(folder / "blocks", folder / "data")
    with PrometheusServer(folder / "data") as server:
        yield server


def test_prometheus_answers_nan_for_a_running_sum_a_request_and_a_counter_sample(
    kube_state_prometheus: PrometheusServer,
) -> None:
    """The premises: the hour's Running sum is NaN, the pod's request is NaN, and the
    counter's raw samples hold the NaN."""
    queries = promql.MeteringQueries()
    source = PromSource(kube_state_prometheus.url)
    sums = source.hourly(queries.sample_sum(promql.KSM_RUNNING, promql.POD_LABELS), at(8), at(9))
    ext = sums[sums["pod"] == "ext-1"]["value"]
    assert [math.isnan(v) for v in ext] == [False, True]
    requests = source.instant(queries.pod_gpu_requests(3600.0), at(13))
    late = requests.set_index("pod")["value"]
    assert math.isnan(late["late-1"]) and late["ext-1"] == 1.0
    ((_, samples),) = source.raw(queries.counter_samples(promql.RECLAIM_LOST, 4 * 3600.0), at(12))
    assert sum(math.isnan(v) for _, v in samples) == 1


@pytest.mark.parametrize("remote_read", [True, False], ids=["remote-read", "promql"])
def test_kube_state_pods_and_the_reclaim_counter_with_a_nan_sample_on_both_read_paths(
    kube_state_prometheus: PrometheusServer, tmp_path: Path, remote_read: bool
) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    meter = Meter(
        PromSource(kube_state_prometheus.url),
        ledger,
        load_policy(None),
        MeterConfig(remote_read=remote_read),
    )
    summary = meter.meter_range(at(8), at(13))
    assert [o.status for o in summary.outcomes] == [
        "metered",
        "pending",
        "metered",
        "metered",
        "pending",
    ]
    running, request = summary.outcomes[1].error or "", summary.outcomes[4].error or ""
    assert running.startswith(
        'Prometheus returned NaN for kube_pod_status_phase{phase="Running"} of pod '
        "physics/ext-1 in the hour 2026-10-09T09:00Z:"
    )
    assert request.startswith(
        "Prometheus returned NaN for kube_pod_container_resource_requests"
        '{resource="nvidia_com_gpu"} of pod physics/late-1 in the hour 2026-10-09T12:00Z:'
    )
    assert ledger.pending_hours() == [at(9), at(12)]
    usage = ledger.usage_frame(at(8), at(13))
    assert usage.groupby("hour")["gpu_seconds"].sum().tolist() == [3600.0] * 3
    assert set(usage["pod"]) == {"ext-1"}
    # The counter's NaN sample lost nothing: each hour has what was added in it.
    lost = ledger.reclaim_lost_frame(at(8), at(13))
    assert lost.groupby("hour")["gpu_seconds_lost"].sum().to_dict() == {
        pd.Timestamp(at(10)): 100.0,
        pd.Timestamp(at(11)): 10.0,
    }
