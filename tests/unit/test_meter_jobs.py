"""The hourly metering job: schedule, and a run that never raises."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler

from policies.loader import load_policy
from reports.ledger import Ledger
from reports.metering.jobs import METERING_JOB_ID, add_metering_job, meter_due_hours
from reports.metering.meter import Meter, RunSummary
from reports.metering.prom_source import PromSource
from tests.promtest import free_port


def make_meter(tmp_path: Path) -> Meter:
    source = PromSource(f"http://127.0.0.1:{free_port()}", timeout=2, retries=1, backoff=0.1)
    return Meter(source, Ledger(f"sqlite:///{tmp_path / 'l.db'}"), load_policy(None))


def test_job_runs_hourly_after_the_look_ahead(tmp_path: Path) -> None:
    scheduler = BackgroundScheduler()
    job = add_metering_job(scheduler, make_meter(tmp_path), run_now=False)
    assert job.id == METERING_JOB_ID
    fields = {f.name: str(f) for f in job.trigger.fields}
    assert fields["minute"] == "6"  # 5 minutes of look-ahead, then one to spare
    assert fields["hour"] == "*"


def test_a_failed_run_marks_the_hour_pending_and_returns(tmp_path: Path) -> None:
    meter = make_meter(tmp_path)
    seen: list[RunSummary] = []
    summary = meter_due_hours(meter, seen.append)
    assert summary is not None and seen == [summary]
    assert summary.hours_pending == 1
    assert meter.ledger.pending_hours() == [summary.outcomes[0].hour]


def test_hours_no_run_recorded_are_metered_by_the_next_run(tmp_path: Path) -> None:
    """A run that could not even mark its hour pending (the ledger's database was down)
    leaves no trace: the next hourly run still takes every hour since the latest one
    the ledger knows, as well as the pending ones."""
    meter = make_meter(tmp_path)
    first = meter.meter_due(now=datetime(2026, 10, 5, 9, 10, tzinfo=UTC))
    assert [o.hour for o in first.outcomes] == [datetime(2026, 10, 5, 8, tzinfo=UTC)]
    # The runs at 10:10, 11:10 and 12:10 left nothing; the one at 13:10 catches up.
    later = meter.meter_due(now=datetime(2026, 10, 5, 13, 10, tzinfo=UTC))
    assert [o.hour.hour for o in later.outcomes] == [8, 9, 10, 11, 12]
    assert meter.ledger.latest_attempted_hour() == datetime(2026, 10, 5, 12, tzinfo=UTC)


def test_a_new_ledger_starts_at_the_last_closed_hour(tmp_path: Path) -> None:
    meter = make_meter(tmp_path)
    assert meter.ledger.latest_attempted_hour() is None
    summary = meter.meter_due(now=datetime(2026, 10, 5, 13, 10, tzinfo=UTC))
    assert [o.hour.hour for o in summary.outcomes] == [12]
