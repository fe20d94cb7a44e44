"""`fairpool shares`: live entitlement, fair share and allocation per member and GPU model."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from scheduler.cli.client import Client, client_options
from scheduler.cli.tables import print_table

if TYPE_CHECKING:
    from proto.fairpool.v1 import share_pb2


@click.command()
@click.option("--member", default="", help="only this member")
@click.option("--gpu-model", default="", help="only this GPU model")
@client_options
def shares(client: Client, member: str, gpu_model: str) -> None:
    """Each member's contribution, entitlement, fair share, allocation and queue, per
    GPU model, and the pool's totals."""
    from proto.fairpool.v1 import share_pb2

    reply = client.shares.GetEntitlements(
        share_pb2.GetEntitlementsRequest(member=member, gpu_model=gpu_model), **client.options()
    )
    console = Console()
    when = (
        reply.snapshot_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S UTC")
        if reply.HasField("snapshot_time")
        else "simulated cluster"
    )
    table = Table(
        title=f"shares (policy version {reply.policy_version}, {when})", title_justify="left"
    )
    columns = (
        "member",
        "GPU model",
        "contribution",
        "entitlement",
        "fair share",
        "allocated",
        "borrowed",
        "reclaimable",
        "lent",
        "pending",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("member", "GPU model") else "right")
    for s in reply.shares:
        below = s.allocated + 1e-9 < min(s.fair_share, s.demand)
        table.add_row(
            s.member,
            s.gpu_model,
            str(s.contribution),
            str(s.entitlement),
            f"{s.fair_share:.2f}",
            f"[red]{s.allocated}[/]" if below and s.pending else str(s.allocated),
            str(s.borrowed),
            str(s.reclaimable),
            str(s.lent),
            str(s.pending),
        )
    if reply.shares:
        print_table(console, table, keys=2)
    else:
        # A name the policy lacks is refused by the server (INVALID_ARGUMENT); an empty
        # answer is a member with no row on the GPU model (it neither contributes nor is
        # entitled to any), or a caller whose member has none: the pool still answers.
        console.print(f"[yellow]no shares[/] {escape(_scope_of(reply, member, gpu_model))}")
    pool = Table(title="pool", title_justify="left")
    for column in ("GPU model", "GPUs", "allocated", "pending", "members"):
        pool.add_column(column, justify="left" if column == "GPU model" else "right")
    for p in reply.pool:
        pool.add_row(p.gpu_model, str(p.capacity), str(p.allocated), str(p.pending), str(p.members))
    print_table(console, pool)


def _scope_of(reply: share_pb2.GetEntitlementsResponse, member: str, gpu_model: str) -> str:
    """What an answer without shares was about, for the line that says so."""
    of = f"of {member} " if member else ""
    on = f"on {gpu_model} " if gpu_model else ""
    return f"{of}{on}in policy version {reply.policy_version}"
