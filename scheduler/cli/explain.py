"""`fairpool explain [POD|GANG]`: why a job waits, in the engine's words; without a name,
the queue."""

from __future__ import annotations

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from scheduler.cli.client import Client, client_options
from scheduler.cli.tables import print_table


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _refuse_ignored_options(name: str | None) -> None:
    """`--namespace` narrows a NAME, `--member` and `--limit` the queue: given with the
    other form they were silently ignored (`explain -n lab-a` listed the whole queue)."""
    ctx = click.get_current_context()
    ignored = ("member", "limit") if name is not None else ("namespace",)
    given = [
        f"--{option}"
        for option in ignored
        if ctx.get_parameter_source(option) is not click.core.ParameterSource.DEFAULT
    ]
    if given:
        what = "the queue (without NAME)" if name is not None else "a NAME"
        raise click.UsageError(f"{', '.join(given)}: only with {what}")


@click.command()
@click.argument("name", required=False)
@click.option("-n", "--namespace", default="", help="the pod's namespace (when names repeat)")
@click.option("--member", default="", help="without NAME: only this member's queue")
@click.option("--limit", type=click.IntRange(min=1, max=5000), default=50, show_default=True)
@client_options
def explain(client: Client, name: str | None, namespace: str, member: str, limit: int) -> None:
    """Why the pod or gang NAME (or NAMESPACE/NAME, as its events write it) still waits;
    without NAME, the pending queue."""
    from proto.fairpool.v1 import share_pb2

    _refuse_ignored_options(name)
    console = Console()
    if name is None:
        reply = client.shares.ListPending(
            share_pb2.ListPendingRequest(member=member, limit=limit), **client.options()
        )
        title = f"pending: {reply.total} job(s)"
        if len(reply.jobs) < reply.total:
            # Read as the whole queue, a cut one hid every job past --limit.
            title += f", the {len(reply.jobs)} oldest shown (--limit)"
        table = Table(title=title, title_justify="left")
        for column in ("job", "member", "kind", "pods", "GPUs", "GPU model", "waiting"):
            table.add_column(
                column, justify="right" if column in ("pods", "GPUs", "waiting") else "left"
            )
        for j in reply.jobs:
            kind = share_pb2.JobKind.Name(j.kind).removeprefix("JOB_KIND_").lower()
            table.add_row(
                escape(j.job_id),
                j.member,
                kind,
                str(len(j.pod_names)),
                str(j.gpus),
                j.gpu_model or "any",
                _duration(j.waiting_seconds),
            )
        print_table(console, table)
        return
    reply = client.shares.ExplainPending(
        share_pb2.ExplainPendingRequest(name=name, namespace=namespace), **client.options()
    )
    job = reply.job
    kind = "gang" if job.kind == share_pb2.JOB_KIND_GANG else "pod"
    console.print(
        f"[bold]{escape(job.job_id)}[/] ({kind} of {job.member}, {len(job.pod_names)} pod(s), "
        f"{job.gpus} GPU(s) {job.gpu_model or 'of any model'}, namespace {job.namespace}, "
        f"waiting {_duration(job.waiting_seconds)})"
    )
    console.print(escape(reply.explanation))
