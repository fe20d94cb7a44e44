"""A metering run stopped in the middle of a chunk, and a Prometheus answering only part
of its data, against a real Prometheus.

Scenario (2026-10-07, UTC, scraped every 30 s): node gpu-a (uni-north, 8 x H100) from
08:00 to 14:00, lab-bio/train on 2 of its GPUs from 09:00 to 13:00; no scrape at all
succeeds from 09:50 to 11:10, so Prometheus holds nothing of the hour 10:00 (pending,
nodes existed before it) and the hours around it have data.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from policies.loader import load_policy
from reports.ledger import Ledger
from reports.metering.meter import Meter
from reports.metering.prom_source import PromSource
from tests.promtest import PrometheusServer, Scenario, create_blocks

pytestmark = pytest.mark.integration


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 10, 7, hour, minute, tzinfo=UTC)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    s = Scenario(interval=30, ksm_replicas=1)
    a = s.node("gpu-a", "uni-north", "NVIDIA-H100-80GB-HBM3", 8, at(8), at(14))
    s.pod("lab-bio", "train", a, 2, at(9), at(13))
    s.gap(at(9, 50), at(11, 10))
    folder = tmp_path_factory.mktemp("interrupted")
    create_blocks(s.write_openmetrics(folder / "scenario.om"), folder / "blocks")
    shutil.copytree(folder / "blocks", folder / "data")
    with PrometheusServer(folder / "data") as server:
        yield server


def test_an_hour_without_data_is_not_lost_when_the_run_stops_after_the_chunks_rows(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    """The hourly job takes 10:00 (no data: pending), 11:00 and 12:00 (data) in one
    chunk, and the database connection is lost when 10:00 is marked pending. Its rows
    written apart before, 11:00 and 12:00 were kept, 10:00 had no row at all, and the
    next runs, which take the pending hours and those after the latest one attempted,
    never metered it nor listed it pending."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    meter = Meter(PromSource(prometheus.url), ledger, load_policy(None))
    meter.meter_range(at(8), at(10))

    def lost(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.startswith("INSERT INTO hours") and "pending" in str(params):
            raise OperationalError(statement, params, Exception("connection lost"))

    event.listen(ledger.engine, "before_cursor_execute", lost)
    with pytest.raises(OperationalError):
        meter.meter_due(now=at(13, 6))
    event.remove(ledger.engine, "before_cursor_execute", lost)
    summary = meter.meter_due(now=at(13, 6))
    assert [(o.hour, o.status) for o in summary.outcomes] == [
        (at(10), "pending"),
        (at(11), "metered"),
        (at(12), "metered"),
    ]
    assert ledger.pending_hours() == [at(10)]


def test_an_answer_prometheus_warns_is_partial_leaves_its_hours_pending(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    """A Prometheus with a remote-read storage it cannot reach answers from its own data
    alone, with a warning: the hours of such answers stay pending, naming the warning
    (they were stored as complete, and an hour only that storage held, stored short)."""
    data = Path(prometheus.data_dir)
    shutil.copytree(data, tmp_path / "data", ignore=shutil.ignore_patterns("lock", "wal"))
    remote = "remote_read:\n  - url: http://127.0.0.1:1/api/v1/read\n    read_recent: true\n"
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    with PrometheusServer(tmp_path / "data", config=remote) as warned:
        summary = Meter(PromSource(warned.url), ledger, load_policy(None)).meter_range(
            at(12), at(13)
        )
    (outcome,) = summary.outcomes
    assert outcome.status == "pending"
    assert "a partial answer, Prometheus warns: remote_read" in (outcome.error or "")
    assert ledger.pending_hours() == [at(12)]
    assert ledger.usage_frame(at(12), at(13)).empty
