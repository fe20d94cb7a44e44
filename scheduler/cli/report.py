"""`fairpool report`: a month's cost report from the usage ledger or a simulation.

fairpool report --month 2026-10 [--member M] --ledger URL --policy FILE --out DIR
fairpool report --from-simulation DIR [--month 2026-10]
fairpool report monthly --ledger URL --reports-dir DIR   (the monthly job, blocking)
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from reports.costmodel import MonthReport, NoDataError, check_invariants
from reports.costmodel.months import canonical_month
from reports.rendering.render import format_money, restrict, write_report
from scheduler.cli.options import ledger_option
from scheduler.cli.tables import print_table


def _hours(value: object) -> str:
    if value is None or value != value:  # NaN
        return "no data"
    return f"{float(value):,.1f}"  # type: ignore[arg-type]


def print_summary(console: Console, report: MonthReport) -> None:
    # Purchases are in the paid and received columns, as in the HTML's member table;
    # summary.csv's `charges` and `credits` are use of others' hardware alone, so the
    # columns do not take those names.
    table = Table(
        # The policy's name is any printable text: "[draft]" in it was read as a style.
        title=f"{escape(report.policy_name)} · {report.month} · {report.currency}",
        caption=(
            f"pool cost {format_money(report.pool_cost)} {report.currency}; paid and "
            "received: charges and credits plus purchased-GPU payments"
        ),
    )
    for column in ("member", "used GPU-h", "on others' hardware, charged GPU-h", "lent GPU-h"):
        table.add_column(column, justify="left" if column == "member" else "right")
    for column in ("paid", "received", "net", "total"):
        table.add_column(column, justify="right")
    for row in report.summary.to_dict("records"):
        table.add_row(
            row["member"],
            _hours(row["used_gpu_hours"]),
            _hours(row["used_on_others_charged_gpu_hours"]),
            _hours(row["lent_gpu_hours"]),
            format_money(row["charges"] + row["purchase_paid"]),
            format_money(row["credits"] + row["purchase_received"]),
            format_money(row["net_settlement"]),
            format_money(row["total"]),
        )
    print_table(console, table)
    for flag in report.flags[:10]:
        console.print(f"[yellow]![/] {escape(flag)}")
    if len(report.flags) > 10:
        console.print(f"[yellow]![/] … {len(report.flags) - 10} more in the report")


def _view_folder(report_dir: Path, member: str | None) -> Path:
    """The default folder of a view: the full report's, or `member-M` inside it, since
    a member's view has files of the same names as the full report (summary.csv,
    settlement.csv)."""
    return report_dir if member is None else report_dir / f"member-{member}"


@click.group(invoke_without_command=True)
@click.option("--month", help="YYYY-MM, cut in the policy's time zone")
@click.option("--member", help="only this member's invoice plus the shared summary")
@ledger_option("usage ledger database URL")
@click.option("--policy", "policy_file", type=click.Path(path_type=Path), help="policy YAML")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help=(
        "report folder (default: out/reports/MONTH, or DIR/report with --from-simulation; "
        "with --member M, member-M inside it)"
    ),
)
@click.option(
    "--from-simulation",
    "simulation_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="a `fairpool simulate --out` folder instead of the ledger",
)
@click.option("--overwrite", is_flag=True, help="replace report files already there")
@click.pass_context
def report(
    ctx: click.Context,
    month: str | None,
    member: str | None,
    ledger_url: str,
    policy_file: Path | None,
    out_dir: Path | None,
    simulation_dir: Path | None,
    overwrite: bool,
) -> None:
    """Write a month's cost report: invoices, summary, settlement and an HTML page."""
    if ctx.invoked_subcommand is not None:
        return
    console = Console()
    # Logs and pipes: the flag and path lines wrap at 120 columns (the summary table is
    # printed whole at any width by `print_table`).
    if not console.is_terminal:
        console = Console(width=max(console.width, 120))
    if month is not None:
        month = canonical_month(month)
    try:
        if simulation_dir is not None:
            from reports.sources.simulation import simulated_report, simulation_policy

            policy, said = simulation_policy(simulation_dir, policy_file)
            Console(stderr=True, highlight=False).print(said, markup=False)
            built = simulated_report(simulation_dir, policy, month)
            out_dir = out_dir or _view_folder(simulation_dir / "report", member)
        else:
            if month is None:
                raise click.UsageError("--month is required (or --from-simulation DIR)")
            from reports.ledger import Ledger
            from reports.sources.monthly_job import ledger_month_report
            from scheduler.cli.ledger_policy import choose_policy

            policy, said = choose_policy(policy_file, ledger_url)
            # Reading only: a ledger that is not there is an error naming it, not a new one.
            Ledger(ledger_url, readonly=True).close()
            Console(stderr=True, highlight=False).print(said, markup=False)
            built = ledger_month_report(ledger_url, policy, month)
            out_dir = out_dir or _view_folder(Path("out") / "reports" / month, member)
    except NoDataError as exc:
        Console(stderr=True).print(f"[bold red]no data:[/] {escape(str(exc))}")
        raise click.exceptions.Exit(1) from None
    check_invariants(built)
    paths = write_report(built, out_dir, member=member, overwrite=overwrite)
    print_summary(console, restrict(built, member) if member else built)
    if built.price_basis:
        console.print(built.price_basis)
    console.print(
        f"[green]report[/]: {escape(str(paths[-1]))} ({len(paths)} files in {escape(str(out_dir))})"
    )


@report.command()
@ledger_option("usage ledger database URL")
@click.option("--policy", "policy_file", type=click.Path(path_type=Path), help="policy YAML")
@click.option(
    "--reports-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("out/reports"),
    show_default=True,
)
def monthly(ledger_url: str, policy_file: Path | None, reports_dir: Path) -> None:
    """Run the monthly job: on day 1 at 06:00 (policy time zone) write last month's report."""
    from reports.ledger.connect import probe
    from reports.sources.monthly_job import monthly_when, run_forever
    from scheduler.cli.ledger_policy import choose_policy

    probe(ledger_url)
    policy, said = choose_policy(policy_file, ledger_url)
    Console().print(said, markup=False)
    # Not markup: the folder may hold brackets, which rich would take for a style.
    Console().print(
        f"monthly report job: {monthly_when(policy)} -> {reports_dir}/<YYYY-MM>/ (Ctrl-C stops)",
        markup=False,
    )
    run_forever(ledger_url, policy, reports_dir)


def _attach_api_commands() -> None:
    # `fairpool report get MONTH` fetches a report from a running server (gRPC); the
    # command lives with the other API clients.
    from scheduler.cli.usage import report_get

    report.add_command(report_get, name="get")


_attach_api_commands()
