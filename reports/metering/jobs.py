"""Scheduled accounting jobs (apscheduler), in one scheduler the daemon or
`fairpool meter --watch` runs.

- `add_metering_job`: every hour, a few minutes after the hour closes (the look-ahead
  that bridges missing scrapes needs `max_gap` of newer samples), meter the last closed
  hour and retry every pending hour. Also runs once at start-up to catch up.
- The monthly report job (the policy's time zone) lives in `reports.sources.monthly_job`;
  `schedule_monthly_report(scheduler, ledger_url, policy, reports_dir)` registers it on
  the same scheduler (`fairpool meter --watch --reports-dir DIR` does both).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.job import Job
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from reports.metering.meter import Meter, RunSummary

log = logging.getLogger(__name__)

METERING_JOB_ID = "fairpool-hourly-metering"


def build_scheduler() -> BlockingScheduler:
    """A blocking scheduler in UTC: one run of a job at a time, missed runs coalesced."""
    return BlockingScheduler(
        timezone=UTC,
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
    )


def meter_due_hours(
    meter: Meter,
    on_summary: Callable[[RunSummary], None] | None = None,
    on_failure: Callable[[], None] | None = None,
) -> RunSummary | None:
    """One run of the hourly job: the last closed hour plus the pending ones. Errors are
    logged, never raised, so the scheduler keeps running."""
    try:
        summary = meter.meter_due(datetime.now(UTC))
    except Exception:
        log.exception("hourly metering failed")
        if on_failure is not None:
            on_failure()
        return None
    log.info(
        "metered %d hour(s), %d pending, mean coverage %s",
        summary.hours_ok,
        summary.hours_pending,
        "n/a" if summary.mean_coverage is None else f"{summary.mean_coverage:.3f}",
    )
    if on_summary is not None:
        on_summary(summary)
    return summary


def add_metering_job(
    scheduler: BaseScheduler,
    meter: Meter,
    on_summary: Callable[[RunSummary], None] | None = None,
    run_now: bool = True,
    on_failure: Callable[[], None] | None = None,
) -> Job:
    """Register the hourly metering job on `scheduler`."""
    minute = min(59, math.ceil(meter.config.max_gap / 60) + 1)
    return scheduler.add_job(
        meter_due_hours,
        CronTrigger(minute=minute, timezone=UTC),
        args=[meter, on_summary, on_failure],
        id=METERING_JOB_ID,
        name="meter the last closed hour and retry pending hours",
        replace_existing=True,
        next_run_time=datetime.now(UTC) if run_now else None,
    )
