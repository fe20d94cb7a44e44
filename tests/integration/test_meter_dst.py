"""Metering across time: the Europe/Paris DST change (2026-10-25 03:00 CEST -> 02:00 CET:
the ledger's hours are UTC, so the local 25-hour day has 25 metered hours, none twice),
and a counter across a scrape gap longer than `max_gap`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from policies.loader import load_policy
from reports.ledger import Ledger
from reports.metering.meter import Meter, MeterConfig
from reports.metering.prom_source import PromSource
from tests.promtest import PrometheusServer, Scenario, create_blocks

pytestmark = pytest.mark.integration

PARIS = ZoneInfo("Europe/Paris")
HOUR = timedelta(hours=1)


def test_local_day_with_dst_change_has_25_metered_hours(tmp_path: Path) -> None:
    day_start = datetime(2026, 10, 25, tzinfo=PARIS).astimezone(UTC)  # 24th 22:00 UTC
    day_end = datetime(2026, 10, 26, tzinfo=PARIS).astimezone(UTC)  # 25th 23:00 UTC
    assert day_end - day_start == timedelta(hours=25)
    s = Scenario(interval=30)
    node = s.node("gpu-a", "physics", "NVIDIA-H100-80GB-HBM3", 8, day_start, day_end)
    s.pod("physics", "long", node, 8, day_start + timedelta(minutes=30), day_end)
    create_blocks(s.write_openmetrics(tmp_path / "dst.om"), tmp_path / "data")
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    with PrometheusServer(tmp_path / "data") as prom:
        summary = Meter(PromSource(prom.url), ledger, load_policy(None)).meter_range(
            day_start, day_end
        )
    assert summary.hours_ok == 25
    usage = ledger.usage_frame(day_start, day_end)
    assert usage["hour"].nunique() == 25
    assert usage["gpu_seconds"].sum() == pytest.approx(s.gpu_seconds(day_start, day_end))
    assert usage["gpu_seconds"].sum() == pytest.approx(8 * (25 * 3600 - 1800))
    capacity = ledger.capacity_frame(day_start, day_end)
    assert capacity["gpu_seconds_available"].sum() == pytest.approx(8 * 25 * 3600)


def test_a_counter_seen_again_after_a_long_scrape_gap_counts_only_its_increase(
    tmp_path: Path,
) -> None:
    """The reclaim-lost counter of one daemon, 5,000 GPU-seconds already when the day
    starts, rises by 10 every 30 s; no scrape succeeds from 10:40 to 11:20, longer than
    `max_gap` (5 min). Metered an hour at a time (as the hourly job does), hour 11's first
    sample has no predecessor in its read window: it counts from the counter's last value
    before the gap, not from zero (which counted the whole 5,000 + in that hour)."""
    start = datetime(2026, 10, 5, 8, tzinfo=UTC)
    s = Scenario(interval=30)
    node = s.node("gpu-a", "physics", "NVIDIA-H100-80GB-HBM3", 8, start, start + 6 * HOUR)
    s.pod("physics", "long", node, 8, start, start + 6 * HOUR)
    steps = [start + timedelta(seconds=30 * k) for k in range(6 * 120)]
    labels = {"member": "physics", "gpu_model": "NVIDIA-H100-80GB-HBM3", "cause": "fair_share"}
    s.add_points(
        "fairpool_reclaim_lost_gpu_seconds",
        {**labels, "instance": "leader"},
        [(t, 5000.0 + 10 * k) for k, t in enumerate(steps)],
        kind="counter",
    )
    s.gap(start + timedelta(hours=2, minutes=40), start + timedelta(hours=3, minutes=20))
    create_blocks(s.write_openmetrics(tmp_path / "gap.om"), tmp_path / "data")
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    with PrometheusServer(tmp_path / "data") as prom:
        meter = Meter(PromSource(prom.url), ledger, load_policy(None), MeterConfig(chunk_hours=1))
        summary = meter.meter_range(start, start + 6 * HOUR)
    assert summary.hours_ok == 6
    lost = ledger.reclaim_lost_frame(start, start + 6 * HOUR)
    by_hour = lost.groupby("hour")["gpu_seconds_lost"].sum()
    # Hour 8 counts from zero: the series is born at its first sample. Each later hour
    # gains 10 per 30 s, but the gap's gain goes to the hour of the first sample after
    # it: hour 10 ends at its 10:39:30 sample (800), hour 11 gains from then (1,600).
    expected = {8: 5000.0 + 10 * 119, 9: 1200.0, 10: 800.0, 11: 1600.0, 12: 1200.0, 13: 1200.0}
    assert {h.hour: v for h, v in by_hour.items()} == pytest.approx(expected)
    assert lost["gpu_seconds_lost"].sum() == pytest.approx(5000.0 + 10 * (6 * 120 - 1))
