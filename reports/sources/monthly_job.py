"""The monthly report job: on day 1 at 06:00 in the policy's time zone, write the
previous month's report from the usage ledger into `<reports dir>/<YYYY-MM>/`; and at
start, when that moment has passed, write it if it is missing (a process that was down
then would otherwise skip the month).

A report already written is left alone unless `overwrite` is asked (a treasurer may
have signed it); a month without any data is logged, not written as an empty report.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from policies.errors import InputError
from policies.model import Policy
from reports.costmodel import MonthReport, NoDataError, build_month_report
from reports.costmodel.months import month_bounds, previous_month
from reports.costmodel.policy_history import PolicyHistory
from reports.rendering.render import write_report

log = logging.getLogger(__name__)

RUN_DAY = 1
RUN_HOUR = 6


def ledger_month_report(
    ledger_url: str,
    policy: Policy | None,
    month: str,
    policies: Mapping[int, Policy] | None = None,
) -> MonthReport:
    """The month's report from the usage ledger at `ledger_url`, each hour priced at the
    policy version in force then (the ledger's policy history; without one, `policy`
    for every hour). Without `policy`, the newest recorded version stands for it."""
    from reports.ledger import Ledger  # the ledger pulls in SQLAlchemy: only when used

    with Ledger(ledger_url, readonly=True) as ledger:
        history = PolicyHistory.from_records(ledger.policy_records())
        if policy is None:
            if history is None:
                raise InputError(
                    f"--policy: required, since the ledger {ledger_url} has no policy history"
                )
            policy = history.latest
        start, end = month_bounds(month, policy.billing.zone)
        usage = ledger.usage_frame(start, end)
        capacity = ledger.capacity_frame(start, end)
        reclaim = ledger.reclaim_lost_frame(start, end)
        status = ledger.hour_status(start, end)
        forgotten = ledger.forgotten_ranges()
        node_coverage = ledger.node_coverage_frame(start, end)
    report = build_month_report(
        month,
        policy,
        usage,
        capacity,
        reclaim,
        status,
        policies=policies,
        source="ledger",
        history=history or PolicyHistory.only(policy),
        node_coverage=node_coverage,
    )
    report.flags.extend(_given_up_flags(forgotten, start, end))
    return report


def _given_up_flags(forgotten: pd.DataFrame, start: datetime, end: datetime) -> list[str]:
    """Who gave up on which hours of the month, when and why."""
    overlapping = forgotten[
        (forgotten["range_start"] < pd.Timestamp(end))
        & (forgotten["range_end"] > pd.Timestamp(start))
    ]
    return [
        f"hours {r.range_start:%Y-%m-%d %H:00}Z to {r.range_end:%Y-%m-%d %H:00}Z given up "
        f"by {r.forgotten_by} on {r.forgotten_at:%Y-%m-%d %H:%M}Z: {r.reason}"
        for r in overlapping.itertuples(index=False)
        if r.hours
    ]


def run_monthly_report(
    now: datetime,
    ledger_url: str,
    policy: Policy,
    reports_dir: Path,
    *,
    overwrite: bool = False,
) -> Path | None:
    """Write the report of the month before `now`; the HTML path, or None when it was
    already written (and not `overwrite`) or the month has no data."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    month = previous_month(now, policy.billing.zone)
    out_dir = Path(reports_dir) / month
    if not overwrite and (out_dir / "report.html").exists():
        log.info("report for %s already written in %s: left as it is", month, out_dir)
        return None
    try:
        report = ledger_month_report(ledger_url, policy, month)
    except NoDataError as exc:
        log.warning("monthly report %s not written: %s", month, exc)
        return None
    paths = write_report(report, out_dir, overwrite=overwrite)
    log.info(
        "monthly report %s written to %s (%s)",
        month,
        out_dir,
        "complete" if report.complete else f"incomplete: {'; '.join(report.flags[:2])}",
    )
    return paths[-1]


def monthly_trigger(policy: Policy) -> CronTrigger:
    return CronTrigger(day=RUN_DAY, hour=RUN_HOUR, minute=0, timezone=policy.billing.zone)


def monthly_when(policy: Policy) -> str:
    """When the job runs, in words: the trigger's own text names no zone."""
    return f"day {RUN_DAY} at {RUN_HOUR:02d}:00 {policy.billing.time_zone}"


def schedule_monthly_report(
    scheduler: BaseScheduler,
    ledger_url: str,
    policy: Policy,
    reports_dir: Path,
    now: datetime | None = None,
) -> None:
    """Add the monthly report job to a scheduler (the daemon's, or a blocking one), and
    its catch-up at start when the month's report is due already (`report_due`)."""

    def job() -> None:
        run_monthly_report(datetime.now(UTC), ledger_url, policy, reports_dir)

    scheduler.add_job(
        job,
        monthly_trigger(policy),
        id="fairpool-monthly-report",
        name="monthly cost report",
        replace_existing=True,
        coalesce=True,
        misfire_grace_time=6 * 3600,
    )
    now = now or datetime.now(UTC)
    if report_due(now, policy):
        # A process that was down at day 1, 06:00 (a restart, a drain, an upgrade) would
        # skip the month for good: the job writes it now, unless it is written already.
        scheduler.add_job(
            job,
            id="fairpool-monthly-report-catch-up",
            name="monthly cost report (catch-up at start)",
            replace_existing=True,
            next_run_time=now,
        )


def report_due(now: datetime, policy: Policy) -> bool:
    """The previous month's report is due at `now`: its day-1 06:00 local has passed
    (before it, the last hours of the month may not be metered yet)."""
    local = now.astimezone(policy.billing.zone)
    due = local.replace(day=RUN_DAY, hour=RUN_HOUR, minute=0, second=0, microsecond=0)
    return local >= due


def run_forever(ledger_url: str, policy: Policy, reports_dir: Path) -> None:
    scheduler = BlockingScheduler(timezone=policy.billing.zone)
    schedule_monthly_report(scheduler, ledger_url, policy, reports_dir)
    scheduler.start()
