"""The hourly metering job: schedule, and a run that never raises."""

from __future__ import annotations

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
