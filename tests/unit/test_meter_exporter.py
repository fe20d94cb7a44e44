"""The meter's own metrics: exact names, values from the ledger, /healthz."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reports.ledger import USAGE_COLUMNS, Ledger
from reports.metering.exporter import MeterMetrics, serve
from reports.metering.meter import HourOutcome, RunSummary

H = datetime(2026, 10, 5, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)


def store(ledger: Ledger, hour: datetime, utilization: float) -> None:
    capacity = pd.DataFrame(
        [("n1", "uni-north", "H100", 8 * 3600.0, 1.0)],
        columns=["node", "owner", "gpu_model", "gpu_seconds_available", "coverage"],
    )
    coverage = pd.DataFrame(
        [("n1", 1.0, 0.9, utilization)],
        columns=["node", "allocation", "capacity", "utilization"],
    )
    usage = pd.DataFrame(columns=USAGE_COLUMNS)
    ledger.replace_hour(hour, usage, capacity, None, 1.0, node_coverage=coverage)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def summary(pending: int) -> RunSummary:
    outcomes = [HourOutcome(H, "pending", None, 0.0, 0, "x")] * pending
    return RunSummary(H, H, H, H + HOUR, outcomes=outcomes)


def test_metrics_and_healthz(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    store(ledger, H, 0.4)
    store(ledger, H + HOUR, 0.8)
    store(ledger, H - 30 * HOUR, 0.0)  # more than a day before: not in the ratio
    ledger.mark_pending(H + 2 * HOUR, "prometheus unavailable: cannot connect")
    metrics = MeterMetrics()
    metrics.observe(ledger, summary(pending=1))
    metrics.observe(ledger, summary(pending=0))
    server = serve(metrics, 0, "127.0.0.1")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        values = scrape(f"{base}/metrics")
        assert values[("fairpool_meter_last_metered_hour_timestamp_seconds", ())] == (
            (H + HOUR).timestamp()
        )
        assert values[("fairpool_meter_pending_hours", ())] == 1.0
        ratio = "fairpool_meter_coverage_ratio"
        assert values[(ratio, (("source", "utilization"),))] == pytest.approx(0.6)
        assert values[(ratio, (("source", "capacity"),))] == pytest.approx(0.9)
        assert values[(ratio, (("source", "allocation"),))] == pytest.approx(1.0)
        runs = "fairpool_meter_runs_total"
        assert values[(runs, (("result", "pending"),))] == 1.0
        assert values[(runs, (("result", "ok"),))] == 1.0
        assert values[(runs, (("result", "error"),))] == 0.0
        assert urllib.request.urlopen(f"{base}/healthz", timeout=10).status == 200

        metrics.observe(ledger, None)
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(f"{base}/healthz", timeout=10)
        assert failed.value.code == 503
        # Alive all the same: the liveness probe asks /livez, so a failed run (Prometheus
        # down) does not get the meter restarted.
        assert urllib.request.urlopen(f"{base}/livez", timeout=10).status == 200
        assert scrape(f"{base}/metrics")[(runs, (("result", "error"),))] == 1.0
    finally:
        server.shutdown()
        server.server_close()
        ledger.close()


class _WatchedLedger(Ledger):
    """A ledger that notes the runs counted when the gauges read it, or cannot be read."""

    def __init__(self, url: str, metrics: MeterMetrics, broken: bool = False) -> None:
        super().__init__(url)
        self.metrics, self.broken = metrics, broken
        self.counted_at_read: list[float] = []

    def pending_hours(self) -> list[datetime]:
        counted = sum(
            s.value
            for family in self.metrics.registry.collect()
            for s in family.samples
            if s.name == "fairpool_meter_runs_total"
        )
        self.counted_at_read.append(counted)
        if self.broken:
            raise OSError("the ledger's database went away")
        return super().pending_hours()


def test_a_run_is_counted_after_the_gauges_it_left(tmp_path: Path) -> None:
    # A scrape between the two would otherwise see a pending run and no pending hour.
    metrics = MeterMetrics()
    ledger = _WatchedLedger(f"sqlite:///{tmp_path / 'l.db'}", metrics)
    ledger.mark_pending(H, "prometheus unavailable: cannot connect")
    metrics.observe(ledger, summary(pending=1))
    assert ledger.counted_at_read == [0.0]
    ledger.close()


def test_a_failed_run_is_counted_when_the_ledger_cannot_be_read(tmp_path: Path) -> None:
    metrics = MeterMetrics()
    ledger = _WatchedLedger(f"sqlite:///{tmp_path / 'l.db'}", metrics, broken=True)
    with pytest.raises(OSError):
        metrics.observe(ledger, None)
    errors = metrics.registry.get_sample_value("fairpool_meter_runs_total", {"result": "error"})
    assert errors == 1.0 and not metrics.healthy
    ledger.close()
