"""`fairpool meter`: GPU usage from Prometheus into the usage ledger."""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from policies.errors import InputError
from policies.instants import YEARS, within
from reports.metering.promql import interval_problem
from scheduler.cli.options import ledger_option
from scheduler.cli.tables import print_table

if TYPE_CHECKING:
    from collections.abc import Callable

    from policies.model import Policy
    from reports.metering.meter import HourOutcome, Meter, RunSummary

HOUR = timedelta(hours=1)
MAX_RANGE = timedelta(days=366)
"""The longest --from/--to or --forget range: a year of hours is listed one by one (a
range from year 1 to 9999 ran until killed); a longer one is several runs."""
SHOW_EVERY_HOUR = 48


MAX_GAP_S = 3600.0
"""The longest run of missing scrapes bridged: every hour waits this long to be metered."""
MAX_CHUNK_HOURS = 31 * 24
"""Hours per Prometheus query: a month, far beyond what one query should carry."""


def parse_time(value: str, flag: str) -> datetime:
    """ISO-8601 (`2026-10-01`, `2026-10-01T05:00Z`, `...+02:00`); no zone means UTC."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InputError(f"{flag}: {value!r} is not an ISO-8601 time ({exc})") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if not within(parsed):
        raise InputError(f"{flag}: {value!r} is not in {YEARS}")
    return parsed.astimezone(UTC)


def floor_hour(value: datetime) -> datetime:
    return value.replace(minute=0, second=0, microsecond=0)


def ceil_hour(value: datetime) -> datetime:
    floor = floor_hour(value)
    return floor if floor == value else floor + HOUR


@click.group(invoke_without_command=True)
@click.option(
    "--prometheus",
    "prometheus_url",
    default=lambda: os.environ.get("FAIRPOOL_PROMETHEUS", "http://127.0.0.1:9090"),
    show_default="$FAIRPOOL_PROMETHEUS or http://127.0.0.1:9090",
    help="Prometheus base URL.",
)
@click.option(
    "--prometheus-ca",
    "prometheus_ca",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="With an https Prometheus: the CA bundle (PEM) its certificate is checked "
    "against (default: the system's CAs, or $REQUESTS_CA_BUNDLE).",
)
@click.option(
    "--prometheus-insecure",
    is_flag=True,
    help="With an https Prometheus: do not check its certificate (a test server only: "
    "whoever answers in its place is billed from).",
)
@ledger_option("Usage ledger database URL (SQLAlchemy).")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Policy file (members' namespaces, policy version); required unless the "
    "ledger's policy history has a version (the newest is then used).",
)
@click.option("--from", "from_", default=None, help="First hour to meter (ISO-8601, UTC default).")
@click.option("--to", "to", default=None, help="End of the range, exclusive (ISO-8601).")
@click.option(
    "--now",
    "now_",
    default=None,
    help="Without --from/--to: meter what the hourly run would at this time (ISO-8601; "
    "default: the clock), e.g. to replay a missed run.",
)
@click.option(
    "--watch", is_flag=True, help="Meter as the hourly run does, every hour, until interrupted."
)
@click.option(
    "--scrape-interval",
    default=30.0,
    show_default=True,
    help="Scrape interval, seconds: whole milliseconds that divide an hour (e.g. 30, 7.2).",
)
@click.option(
    "--max-gap",
    default=300.0,
    show_default=True,
    help="Missing scrapes up to this many seconds are bridged when a series resumes.",
)
@click.option("--chunk-hours", default=24, show_default=True, help="Hours fetched per query.")
@click.option(
    "--reports-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="With --watch: also write each previous month's report here (monthly run).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="With --watch: serve the meter's metrics (/metrics) and /healthz on this port.",
)
@click.option(
    "--metrics-address",
    default="0.0.0.0",
    show_default=True,
    help="With --metrics-port: the address to listen on.",
)
@click.option(
    "--forget",
    nargs=2,
    default=None,
    metavar="FROM TO",
    help="Admin: give up on the hours in [FROM, TO) that are not metered (no longer "
    "retried; the report says they were given up). Needs --reason.",
)
@click.option("--reason", default=None, help="With --forget: why (kept in the ledger).")
@click.option(
    "--by",
    "forgotten_by",
    default=lambda: os.environ.get("USER") or "unknown",
    show_default="$USER",
    help="With --forget: who gives the hours up (kept in the ledger).",
)
@click.pass_context
def meter(
    ctx: click.Context,
    prometheus_url: str,
    prometheus_ca: Path | None,
    prometheus_insecure: bool,
    ledger_url: str,
    policy_file: Path | None,
    from_: str | None,
    to: str | None,
    now_: str | None,
    watch: bool,
    scrape_interval: float,
    max_gap: float,
    chunk_hours: int,
    reports_dir: Path | None,
    metrics_port: int | None,
    metrics_address: str,
    forget: tuple[str, str] | None,
    reason: str | None,
    forgotten_by: str,
) -> None:
    """Meter closed hours from Prometheus into the ledger.

    With --from/--to: backfill every closed hour in [FROM, TO) (widened to whole hours);
    rerunning an hour replaces it. Without them: the last closed hour plus every pending
    hour (what the hourly run does). With --watch: that, every hour, until Ctrl-C.
    Exit status 1 when hours remain pending (Prometheus unreachable or without data).
    `fairpool meter status` lists the pending hours; `--forget FROM TO --reason WHY`
    gives up on a range."""
    if ctx.invoked_subcommand is not None:
        return
    if forget is not None:
        # --forget gives hours up and meters nothing: a metering flag beside it was
        # silently dropped (`--watch --forget ...` exited 0 and no hourly job ran).
        given = {
            "--watch": watch,
            "--from": from_ is not None,
            "--to": to is not None,
            "--now": now_ is not None,
            "--reports-dir": reports_dir is not None,
            "--metrics-port": metrics_port is not None,
        }
        for flag, present in given.items():
            if present:
                raise InputError(f"{flag}: not with --forget (it meters nothing); run it apart")
        _forget(ledger_url, forget, reason, forgotten_by)
        return
    if reason is not None:
        raise InputError("--reason: only with --forget")
    backfill = _backfill_range(from_, to)
    _check_options(backfill, watch, reports_dir, chunk_hours, scrape_interval, max_gap)
    from reports.metering.prom_source import PrometheusUnavailable, PromSource, check_url

    prometheus_url = check_url(prometheus_url)
    if prometheus_ca is not None and prometheus_insecure:
        raise InputError("--prometheus-ca: not with --prometheus-insecure (check it or not)")
    verify: bool | str = (
        str(prometheus_ca) if prometheus_ca is not None else not prometheus_insecure
    )
    if metrics_port is not None and not watch:
        raise InputError("--metrics-port: only with --watch")
    now = parse_time(now_, "--now") if now_ is not None else None
    if now is not None and now > datetime.now(UTC):
        # An hour not closed yet would be recorded (empty, or pending), and the hourly
        # job catches up missed hours only after the latest hour the ledger knows: that
        # catch-up would stop until the clock reached it.
        raise InputError(f"--now: {now_} is later than the clock; give a past time")
    if now is not None and (watch or backfill is not None):
        raise InputError("--now: only for one hourly run (not with --watch or --from/--to)")

    from sqlalchemy.exc import OperationalError

    from reports.ledger import Ledger
    from reports.ledger.database import masked
    from reports.metering.meter import Meter, MeterConfig
    from scheduler.cli.ledger_policy import choose_policy

    policy, said = choose_policy(policy_file, ledger_url)
    console = Console()
    errors = Console(stderr=True, highlight=False, soft_wrap=True)
    errors.print(said, markup=False)
    source = PromSource(prometheus_url, verify=verify)
    if not watch and now is None:
        # A one-off run against a wrong or unreachable Prometheus records nothing; the
        # hourly job (--watch, or one run of it with --now) keeps hours pending instead
        # and retries them at its next run.
        try:
            source.probe()
        except PrometheusUnavailable as exc:
            errors.print(f"[bold red]error:[/] Prometheus {escape(str(exc))}")
            sys.exit(1)
    try:
        ledger = Ledger(ledger_url)
        metering = Meter(
            source,
            ledger,
            policy,
            MeterConfig(interval=scrape_interval, max_gap=max_gap, chunk_hours=chunk_hours),
        )
        if watch:
            _watch(
                console,
                metering,
                policy,
                (prometheus_url, ledger_url),
                reports_dir,
                None if metrics_port is None else (metrics_address, metrics_port),
            )
            return
        summary = _meter_once(console, metering, backfill, now)
    except OperationalError as exc:
        # The ledger's database is down or went away during the run: every hour written
        # is whole (one transaction each); the next run meters the others.
        where = masked(ledger_url)
        errors.print(
            "[bold red]error:[/]",
            escape(
                f"ledger {where} unreachable ({type(exc.orig).__name__}: "
                f"{str(exc.orig).strip()}); the hours not written are metered by the next run"
            ),
        )
        sys.exit(1)
    _print_summary(console, summary)
    if summary.hours_pending:
        sys.exit(1)


def _forget(
    ledger_url: str, forget: tuple[str, str], reason: str | None, forgotten_by: str
) -> None:
    from reports.ledger import Ledger
    from reports.ledger.schema import FORGOTTEN_BY_LENGTH

    start, end = (parse_time(v, "--forget") for v in forget)
    if floor_hour(start) >= ceil_hour(end):
        raise InputError(f"--forget: {forget[1]} is not after {forget[0]}")
    _check_span("--forget", start, end)
    if ceil_hour(end) > floor_hour(datetime.now(UTC)):
        # An hour given up before it closes would never be metered.
        raise InputError(
            f"--forget: {forget[1]} reaches into the current hour or later; only past hours "
            "can be given up"
        )
    if not reason or not reason.strip():
        raise InputError("--reason: required with --forget (it is kept in the ledger)")
    if not forgotten_by.strip():
        raise InputError("--by: must name who gives the hours up (it is kept in the ledger)")
    if len(forgotten_by) > FORGOTTEN_BY_LENGTH:
        raise InputError(
            f"--by: at most {FORGOTTEN_BY_LENGTH} characters ({len(forgotten_by)} given)"
        )
    with Ledger(ledger_url) as ledger:
        given_up = ledger.forget(floor_hour(start), ceil_hour(end), forgotten_by, reason)
    Console().print(
        f"gave up {len(given_up)} hour(s) in {floor_hour(start):%Y-%m-%d %H:00}Z.."
        f"{ceil_hour(end):%Y-%m-%d %H:00}Z (by {forgotten_by}: {reason}); "
        "metered hours in the range were kept"
    )


@meter.command()
@ledger_option("Usage ledger database URL (SQLAlchemy).")
def status(ledger_url: str) -> None:
    """List the pending hours, with the reason of their last failure and the attempts."""
    from reports.ledger import Ledger

    # Read only, as a report reads: an empty PostgreSQL database got every ledger table
    # and "no pending hours" (a missing SQLite file was an error).
    with Ledger(ledger_url, readonly=True) as ledger:
        pending = ledger.pending_detail()
    console = Console()
    if pending.empty:
        console.print("no pending hours")
        return
    table = Table(title=f"{len(pending)} pending hour(s)")
    for column in ("hour (UTC)", "attempts", "reason"):
        table.add_column(column, justify="right" if column == "attempts" else "left")
    for row in pending.itertuples(index=False):
        table.add_row(f"{row.hour:%Y-%m-%d %H:00}", str(row.attempts), str(row.last_error or ""))
    print_table(console, table, prose=("reason",))


def _backfill_range(from_: str | None, to: str | None) -> tuple[datetime, datetime] | None:
    """[--from, --to) as given (not yet widened to whole hours); None without them."""
    start = parse_time(from_, "--from") if from_ is not None else None
    end = parse_time(to, "--to") if to is not None else None
    if (start is None) != (end is None):
        raise InputError("--from and --to go together")
    if start is None or end is None:
        return None
    if floor_hour(start) >= ceil_hour(end):
        raise InputError(f"--to: {to} is not after --from {from_}")
    _check_span("--from/--to", start, end)
    return start, end


def _check_span(flags: str, start: datetime, end: datetime) -> None:
    if ceil_hour(end) - floor_hour(start) > MAX_RANGE:
        raise InputError(
            f"{flags}: {start.isoformat(timespec='minutes')} to "
            f"{end.isoformat(timespec='minutes')} is more than "
            f"{MAX_RANGE.days} days; give a shorter range (several runs for more)"
        )


def _check_options(
    backfill: tuple[datetime, datetime] | None,
    watch: bool,
    reports_dir: Path | None,
    chunk_hours: int,
    scrape_interval: float,
    max_gap: float,
) -> None:
    if watch and backfill is not None:
        raise InputError("--watch: meters the latest hours; backfill with --from/--to first")
    if reports_dir is not None and not watch:
        raise InputError("--reports-dir: only with --watch (use `fairpool report` once)")
    if not 1 <= chunk_hours <= MAX_CHUNK_HOURS:
        raise InputError(f"--chunk-hours: from 1 to {MAX_CHUNK_HOURS} (a month)")
    problem = interval_problem(scrape_interval)
    if problem is not None:
        raise InputError(f"--scrape-interval: {scrape_interval} {problem}")
    if max_gap < scrape_interval:
        raise InputError("--max-gap: must be at least one scrape interval")
    if not max_gap <= MAX_GAP_S:
        # An hour is metered only max_gap after it ends: `inf` and `nan` failed there
        # (`timedelta` cannot hold them), and a longer gap holds every hour back as long.
        raise InputError(f"--max-gap: at most {MAX_GAP_S:,.0f} s (an hour), got {max_gap}")


def _watch(
    console: Console,
    metering: Meter,
    policy: Policy,
    urls: tuple[str, str],
    reports_dir: Path | None,
    metrics_at: tuple[str, int] | None,
) -> None:
    """The hourly metering run (and the monthly report with --reports-dir) until Ctrl-C;
    with `metrics_at`, the meter's metrics served there."""
    from reports.ledger.database import masked
    from reports.metering.exporter import MeterMetrics, serve
    from reports.metering.jobs import add_metering_job, build_scheduler

    prometheus_url, ledger_url = urls
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    metrics = MeterMetrics()
    if metrics_at is not None:
        metrics.refresh(metering.ledger)
        server = serve(metrics, metrics_at[1], metrics_at[0])
        host, port = server.server_address[:2]
        console.print(f"[bold]metrics[/] http://{host!s}:{port}/metrics and /healthz")

    def after_run(summary: RunSummary) -> None:
        _print_summary(console, summary)
        metrics.observe(metering.ledger, summary)

    scheduler = build_scheduler()
    add_metering_job(
        scheduler,
        metering,
        on_summary=after_run,
        on_failure=lambda: metrics.observe(metering.ledger, None),
    )
    if reports_dir is not None:
        from reports.sources.monthly_job import schedule_monthly_report

        schedule_monthly_report(scheduler, ledger_url, policy, reports_dir)
    # Masked: this line goes to the pod's log, which more people read than the Secret.
    console.print(
        f"[bold]metering[/] {prometheus_url} -> {masked(ledger_url)} every hour; Ctrl-C stops"
    )
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        scheduler.shutdown(wait=False)


def _meter_once(
    console: Console,
    metering: Meter,
    backfill: tuple[datetime, datetime] | None,
    now: datetime | None = None,
) -> RunSummary:
    """One metering run: the backfill range, else the due hours; a progress bar on a
    terminal, else one log line per hour on stderr."""

    def run(progress_cb: Callable[[HourOutcome], None]) -> RunSummary:
        if backfill is not None:
            return metering.meter_range(
                floor_hour(backfill[0]), ceil_hour(backfill[1]), progress=progress_cb
            )
        return metering.meter_due(now=now, progress=progress_cb)

    if not console.is_terminal:
        log_lines = Console(stderr=True, soft_wrap=True, highlight=False)
        return run(lambda outcome: _log_line(log_lines, outcome))
    total = (
        int((ceil_hour(backfill[1]) - floor_hour(backfill[0])) / HOUR)
        if backfill is not None
        else None
    )
    with Progress(
        TextColumn("[bold]metering[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("", total=total)

        def advance(outcome: HourOutcome) -> None:
            progress.update(
                task, advance=1, description=f"{outcome.hour:%Y-%m-%d %H:00} {outcome.status}"
            )

        return run(advance)


def _log_line(log_lines: Console, outcome: HourOutcome) -> None:
    coverage = "-" if outcome.coverage is None else f"{outcome.coverage:.4f}"
    log_lines.print(
        f"hour={outcome.hour.isoformat()} status={outcome.status} "
        f"coverage={coverage} gpu_seconds={outcome.gpu_seconds:.0f} "
        f"pods={outcome.pods}" + (f' error="{outcome.error}"' if outcome.error else "")
    )


def _print_summary(console: Console, summary: object) -> None:
    from reports.metering.meter import RunSummary

    assert isinstance(summary, RunSummary)
    outcomes = summary.outcomes
    shown = (
        outcomes
        if len(outcomes) <= SHOW_EVERY_HOUR
        else [o for o in outcomes if o.status != "metered" or (o.coverage or 0) < 1.0]
    )
    if shown:
        table = Table(title="hours" if shown is outcomes else "hours pending or with missing data")
        for column in ("hour (UTC)", "status", "coverage", "GPU-hours", "pods", "error"):
            table.add_column(column, justify="right" if column in ("GPU-hours", "pods") else "left")
        for o in shown[:200]:
            table.add_row(
                f"{o.hour:%Y-%m-%d %H:00}",
                "[yellow]pending[/]" if o.status == "pending" else f"[green]{o.status}[/]",
                "-" if o.coverage is None else f"{o.coverage:.2%}",
                f"{o.gpu_seconds / 3600:,.2f}",
                str(o.pods),
                o.error or "",
            )
        print_table(console, table, prose=("error",))
    mean = summary.mean_coverage
    totals = Table(title="metering run", show_header=False)
    totals.add_row("hours metered", str(summary.hours_ok))
    totals.add_row("hours pending", str(summary.hours_pending))
    if summary.skipped_open:
        totals.add_row("hours not closed yet (skipped)", str(len(summary.skipped_open)))
    totals.add_row("mean coverage", "-" if mean is None else f"{mean:.2%}")
    totals.add_row("GPU-hours", f"{sum(o.gpu_seconds for o in outcomes) / 3600:,.2f}")
    totals.add_row(
        "wall time", f"{(summary.finished_at - summary.started_at).total_seconds():.1f} s"
    )
    print_table(console, totals)
