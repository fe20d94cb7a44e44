"""Metering across the Europe/Paris DST change (2026-10-25 03:00 CEST -> 02:00 CET):
the ledger's hours are UTC, so the local 25-hour day has 25 metered hours, none twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from policies.loader import load_policy
from reports.ledger import Ledger
from reports.metering.meter import Meter
from reports.metering.prom_source import PromSource
from tests.promtest import PrometheusServer, Scenario, create_blocks

pytestmark = pytest.mark.integration

PARIS = ZoneInfo("Europe/Paris")


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
