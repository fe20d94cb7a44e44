"""Metering against a real Prometheus loaded with a known scenario (see prometheus_fixtures)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from policies.loader import load_policy
from policies.model import Policy
from reports.ledger import Ledger
from reports.metering.meter import HourOutcome, Meter, MeterConfig
from reports.metering.prom_source import PromSource
from tests.integration import prometheus_fixtures as fixtures
from tests.integration.prometheus_fixtures import A100, H100, at
from tests.promtest import PrometheusServer, Scenario

pytestmark = pytest.mark.integration

# The shared Prometheus fixtures, made visible to pytest in this module.
metering_scenario = fixtures.metering_scenario
metering_tsdb = fixtures.metering_tsdb
prometheus = fixtures.prometheus
fresh_prometheus = fixtures.fresh_prometheus

HOUR = timedelta(hours=1)
START, END = at(8), at(14)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(None)


@pytest.fixture(scope="module")
def metered(
    prometheus: PrometheusServer, policy: Policy, tmp_path_factory: pytest.TempPathFactory
) -> Ledger:
    ledger = Ledger(f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'ledger.db'}")
    summary = Meter(PromSource(prometheus.url), ledger, policy).meter_range(START, END)
    assert summary.hours_ok == 6, summary.outcomes
    return ledger


def usage(ledger: Ledger, hour: int) -> pd.DataFrame:
    return ledger.usage_frame(at(hour), at(hour) + HOUR).set_index("pod_uid")


def test_exact_gpu_seconds_per_pod_and_hour(metered: Ledger, metering_scenario: Scenario) -> None:
    for hour in range(8, 14):
        frame = usage(metered, hour)
        expected = metering_scenario.pod_gpu_seconds(at(hour), at(hour) + HOUR)
        assert frame["gpu_seconds"].to_dict() == pytest.approx(expected), hour
    total = metered.usage_frame(START, END)["gpu_seconds"].sum()
    assert total == pytest.approx(metering_scenario.gpu_seconds(START, END))
    # 14400 + 7200 + 12 + 2380 (the other scheduler's pod from 10:40:10) + 10
    assert usage(metered, 10)["gpu_seconds"].sum() == pytest.approx(24002.0)


def test_labels_member_owner_model_and_sources(metered: Ledger, policy: Policy) -> None:
    frame = usage(metered, 11)
    train = frame.loc["uid-lab-bio-train-1"]
    assert (train["member"], train["owner"], train["gpu_model"], train["node"]) == (
        "lab-bio",
        "uni-north",
        H100,
        "gpu-a",
    )
    assert train["source"] == "fairpool"
    assert train["policy_version"] == policy.version
    ext = frame.loc["uid-ai-startup-x-ext"]
    assert ext["source"] == "kube-state-metrics"
    assert (ext["member"], ext["owner"], ext["gpu_model"]) == ("ai-startup", "uni-north", H100)
    # Pods that map to no member are kept, visibly unattributed.
    assert frame.loc["uid-misc-stray", "member"] == "unattributed"
    assert frame.loc["uid-misc-stray", "gpu_seconds"] == pytest.approx(1800.0)


def test_utilization_from_both_dcgm_metrics_and_label_styles(metered: Ledger) -> None:
    frame = usage(metered, 10)
    assert frame.loc["uid-lab-bio-train-1", "utilization"] == pytest.approx(0.5)
    assert frame.loc["uid-physics-infer-1", "utilization"] == pytest.approx(0.8)
    # No DCGM sample for a 12-second pod: unknown, never zero.
    assert pd.isna(frame.loc["uid-lab-bio-short", "utilization"])


def test_pod_shorter_than_a_scrape_is_billed_its_real_duration(metered: Ledger) -> None:
    frame = usage(metered, 10)
    # Seen by no scrape while running: kube-state-metrics' start and completion times.
    assert frame.loc["uid-lab-bio-short", "gpu_seconds"] == pytest.approx(12.0)
    assert frame.loc["uid-lab-bio-short", "source"] == "kube-state-metrics"
    # One fairpool sample (worth a whole interval), clipped to its 10 s of running.
    assert frame.loc["uid-lab-bio-blip", "gpu_seconds"] == pytest.approx(10.0)
    assert frame.loc["uid-lab-bio-blip", "source"] == "fairpool"


def test_missing_scrapes_lower_coverage_but_not_usage(metered: Ledger) -> None:
    status = metered.hour_status(START, END).set_index("hour")
    assert status.loc[pd.Timestamp(at(10)), "coverage"] < 1.0
    assert status.loc[pd.Timestamp(at(10)), "coverage"] > 0.9
    assert status.loc[pd.Timestamp(at(9)), "coverage"] == pytest.approx(1.0)
    frame = usage(metered, 10)
    # 4 of 120 scrapes missing, bridged: the pod still ran the whole hour.
    assert frame.loc["uid-lab-bio-train-1", "coverage"] == pytest.approx(116 / 120)
    assert frame.loc["uid-lab-bio-train-1", "gpu_seconds"] == pytest.approx(4 * 3600.0)
    capacity = metered.capacity_frame(at(10), at(11)).set_index("node")
    assert capacity.loc["gpu-a", "coverage"] == pytest.approx(116 / 120)


def test_counter_reset_counts_from_zero(metered: Ledger) -> None:
    """And each cause keeps its own row: hour 10 is 150 s of reclaims within an
    entitlement and 40 s of moves (one leader's counter, counted once however often it
    is scraped); in hour 11 the old leader's last 10 s and the next leader's 20 s add up
    (they were collapsed with max: 20 s)."""
    lost = metered.reclaim_lost_frame(START, END)
    by_hour = lost.groupby(["hour", "cause"])["gpu_seconds_lost"].sum()
    assert by_hour[(pd.Timestamp(at(10)), "entitlement")] == pytest.approx(150.0)
    assert by_hour[(pd.Timestamp(at(10)), "consolidation")] == pytest.approx(40.0)
    assert by_hour[(pd.Timestamp(at(11)), "entitlement")] == pytest.approx(60.0)
    assert by_hour[(pd.Timestamp(at(11)), "consolidation")] == pytest.approx(30.0)
    assert len(lost) == 4
    assert set(lost["member"]) == {"physics"}
    assert set(lost["gpu_model"]) == {A100}


def test_two_kube_state_metrics_replicas_are_not_double_billed(
    metered: Ledger, metering_scenario: Scenario
) -> None:
    assert metering_scenario.ksm_replicas == 2
    capacity = metered.capacity_frame(START, END)
    assert capacity["gpu_seconds_available"].sum() == pytest.approx(
        metering_scenario.capacity_gpu_seconds(START, END)
    )
    cap = capacity.set_index(["hour", "node"])["gpu_seconds_available"]
    assert cap[(pd.Timestamp(at(9)), "gpu-a")] == pytest.approx(8 * 3600.0)
    assert set(capacity["owner"]) == {"uni-north", "lab-bio"}
    assert usage(metered, 11).loc["uid-ai-startup-x-ext", "gpu_seconds"] == pytest.approx(
        2 * 1220.0
    )


def test_rerun_is_idempotent(prometheus: PrometheusServer, metered: Ledger, policy: Policy) -> None:
    before = metered.usage_frame(START, END)
    Meter(PromSource(prometheus.url), metered, policy).meter_range(at(10), at(12))
    after = metered.usage_frame(START, END)
    pd.testing.assert_frame_equal(before, after)
    attempts = metered.hour_status(START, END).set_index("hour")["attempts"]
    assert attempts[pd.Timestamp(at(10))] == 2
    assert attempts[pd.Timestamp(at(9))] == 1


def test_hour_without_data_stays_pending(
    prometheus: PrometheusServer, policy: Policy, tmp_path: Path
) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    summary = Meter(PromSource(prometheus.url), ledger, policy).meter_range(at(20), at(21))
    assert [o.status for o in summary.outcomes] == ["pending"]
    assert ledger.pending_hours() == [at(20)]
    assert len(ledger.usage_frame(at(20), at(21))) == 0


def test_prometheus_down_mid_run_then_back(
    fresh_prometheus: PrometheusServer, metered: Ledger, policy: Policy, tmp_path: Path
) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    meter = Meter(
        PromSource(fresh_prometheus.url, timeout=5), ledger, policy, MeterConfig(chunk_hours=1)
    )
    seen: list[HourOutcome] = []

    def stop_after_first(outcome: HourOutcome) -> None:
        seen.append(outcome)
        if len(seen) == 2:
            fresh_prometheus.stop()

    first = meter.meter_range(START, END, progress=stop_after_first)
    statuses = [o.status for o in first.outcomes]
    # The next hour may have been fetched before the stop; every later one is pending.
    done = statuses.count("metered")
    assert done in (2, 3)
    assert statuses == ["metered"] * done + ["pending"] * (6 - done)
    pending = [at(h) for h in range(8 + done, 14)]
    assert ledger.pending_hours() == pending
    assert "unavailable" in str(ledger.hour_status(at(13), at(14))["last_error"].iloc[0])
    runs = ledger.metering_runs()
    assert runs["hours_pending"].tolist() == [6 - done]

    fresh_prometheus.start()
    # The hourly job at 14:10 meters the last closed hour (13:00) and retries the pending.
    second = meter.meter_due(now=at(14, 10))
    assert sorted(o.hour for o in second.outcomes) == pending
    assert ledger.pending_hours() == []
    filled = ledger.usage_frame(START, END)
    reference = metered.usage_frame(START, END)
    assert len(filled) == len(reference)
    assert not filled.duplicated(["hour", "pod_uid"]).any()
    assert filled["gpu_seconds"].sum() == pytest.approx(reference["gpu_seconds"].sum())
    assert ledger.metering_runs()["hours_ok"].tolist() == [done, 6 - done]
