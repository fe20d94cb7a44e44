"""`fairpool usage`: metered GPU-hours from the ledger; `fairpool report get`: a month's
cost report files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from policies.errors import InputError
from policies.files import write_whole
from policies.instants import YEARS, within
from scheduler.cli.client import Client, client_options
from scheduler.cli.tables import print_table


def _moment(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError) as exc:  # year 1 at +01:00 is before year 1 in UTC
        raise InputError(f"--{name}: not an ISO-8601 date or time in {YEARS}: {text!r}") from exc
    if not within(value):
        raise InputError(f"--{name}: {text!r} is not in {YEARS}")
    return value


@click.command()
@click.option("--member", default="", help="only this member (members see only themselves)")
@click.option("--start", help="ISO-8601, UTC unless a zone is given (default: 30 days before end)")
@click.option("--end", help="ISO-8601 (default: now)")
@client_options
def usage(client: Client, member: str, start: str | None, end: str | None) -> None:
    """GPU-hours used, used on others' hardware (your pods on nodes other members own)
    and lent (other members' pods on your nodes), per GPU model."""
    from proto.fairpool.v1 import usage_pb2
    from scheduler.api.messages import timestamp

    request = usage_pb2.GetUsageRequest(member=member)
    begin, finish = _moment(start, "start"), _moment(end, "end")
    if begin is not None:
        request.start.CopyFrom(timestamp(begin))
    if finish is not None:
        request.end.CopyFrom(timestamp(finish))
    if begin and finish and not begin < finish:
        raise InputError("--start must be before --end")
    reply = client.usage.GetUsage(request, **client.options())
    fmt = "%Y-%m-%d %H:%M"
    title = f"usage {reply.start.ToDatetime():{fmt}} – {reply.end.ToDatetime():{fmt}} UTC"
    table = Table(title=title, title_justify="left")
    for column in ("member", "GPU model", "GPU-hours used", "used on others' hardware", "lent"):
        table.add_column(column, justify="left" if column in ("member", "GPU model") else "right")
    for row in reply.rows:
        table.add_row(
            row.member,
            row.gpu_model,
            f"{row.gpu_hours_used:,.1f}",
            f"{row.gpu_hours_used_on_others_hardware:,.1f}",
            f"{row.gpu_hours_lent:,.1f}",
        )
    console = Console()
    if reply.rows:
        print_table(console, table, keys=2)
    else:
        console.print(f"[yellow]no metered usage[/] in {title.removeprefix('usage ')}")


@click.command("get")
@click.argument("month")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="write the files here (default: list them)",
)
@click.option("--overwrite", is_flag=True, help="with --out: replace report files already there")
@client_options
def report_get(client: Client, month: str, out: Path | None, overwrite: bool) -> None:
    """The cost report files of MONTH (YYYY-MM) that you may read."""
    from proto.fairpool.v1 import usage_pb2

    reply = client.usage.GetReport(usage_pb2.GetReportRequest(month=month), **client.options())
    table = Table(title=f"report {reply.month}", title_justify="left")
    for column in ("file", "type", "bytes"):
        table.add_column(column, justify="right" if column == "bytes" else "left")
    for f in reply.files:
        table.add_row(f.name, f.media_type, f"{len(f.content):,}")
    if out is not None:
        targets = [((out / f.name).resolve(), f.content) for f in reply.files]
        outside = [t.name for t, _ in targets if not t.is_relative_to(out.resolve())]
        if outside:
            raise InputError(f"the server sent a file outside the folder: {outside[0]!r}")
        # As `fairpool report`: a treasurer may have signed the copy already there.
        there = [t.name for t, _ in targets if t.exists()]
        if there and not overwrite:
            raise InputError(
                f"--out: {out}: {', '.join(there)} already there (use --overwrite to replace)"
            )
        for target, content in targets:
            write_whole(target, content)
    print_table(Console(), table)
    if out is not None:
        Console().print(f"{len(reply.files)} file(s) written to {escape(str(out))}")
