"""`fairpool policy ...`: `validate` checks a file locally; `get`, `apply`, `history` and
`diff` talk to the gRPC API (see scheduler/cli/client.py for the connection options)."""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import grpc
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from policies.errors import FieldIssue, InputError, PolicyError
from policies.loader import load_policy, parse_policy
from scheduler.api.errors import TRACE_FIELD
from scheduler.cli.client import Client, client_options
from scheduler.cli.options import FiniteRange
from scheduler.cli.tables import print_table
from scheduler.cli.words import plural
from scheduler.traces.csv import read_trace_text

if TYPE_CHECKING:
    from policies.model import Policy
    from proto.fairpool.v1 import share_pb2

MAX_VERSION = 2**63 - 1
"""The largest policy version the API's `int64` fields carry (a larger number was a
protobuf ValueError traceback)."""


@click.group()
def policy() -> None:
    """Read, check, change and audit fairpool policies."""


@policy.command()
@click.argument("file", type=click.Path(path_type=Path))
def validate(file: Path) -> None:
    """Check FILE; exit 0 when valid, 2 with every error (field path and line) when not."""
    loaded = load_policy(file)
    members = ", ".join(loaded.member_names())
    Console().print(
        f"[green]valid[/]: {escape(str(file))} ({plural(len(loaded.members), 'member')}: {members})"
    )


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(str(file), [FieldIssue("", f"cannot read: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        issue = FieldIssue("", f"not UTF-8 text (byte {exc.start}: {exc.reason})")
        raise PolicyError(str(file), [issue]) from exc


def _print_diff(console: Console, diff: str) -> None:
    if diff.strip():
        console.print(Syntax(diff, "diff", theme="ansi_dark", background_color="default"))
    else:
        console.print("[dim]no change[/]")


@policy.command()
@click.option(
    "--version",
    "version",
    type=click.IntRange(min=0, max=MAX_VERSION),
    default=0,
    help="a past version (default: current)",
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="write the YAML here"
)
@client_options
def get(client: Client, version: int, output: Path | None) -> None:
    """Print the current policy (or VERSION) as YAML."""
    from proto.fairpool.v1 import policy_pb2

    found = client.policy.GetPolicy(
        policy_pb2.GetPolicyRequest(version=version), **client.options()
    )
    entry = found.policy
    err = Console(stderr=True, highlight=False)
    err.print(
        f"version {entry.version} by {escape(entry.author)} at "
        f"{entry.applied_at.ToDatetime().isoformat()}Z"
    )
    if output is not None:
        from policies.files import write_whole

        write_whole(output, entry.yaml)
        err.print(f"written to {escape(str(output))}")
    else:
        click.echo(entry.yaml, nl=False)


@policy.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--expected-version",
    type=click.IntRange(min=0, max=MAX_VERSION),
    default=0,
    help="refuse (ABORTED) unless this is the current version",
)
@click.option(
    "--dry-run", is_flag=True, help="show the change in entitlement and fair share; store nothing"
)
@click.option("-m", "--comment", default="", help="why (kept in the audit log)")
@client_options
def apply(client: Client, file: Path, expected_version: int, dry_run: bool, comment: str) -> None:
    """Apply the policy in FILE (checked locally first)."""
    from proto.fairpool.v1 import policy_pb2

    text = _read(file)
    parse_policy(text, str(file))  # bad input: exit 2 before calling the server
    reply = client.policy.ApplyPolicy(
        policy_pb2.ApplyPolicyRequest(
            yaml=text, expected_version=expected_version, dry_run=dry_run, comment=comment
        ),
        **client.options(),
    )
    console = Console()
    table = Table(title="change per member and GPU model", title_justify="left")
    for column in ("member", "GPU model", "entitlement", "fair share"):
        table.add_column(column, justify="left" if column in ("member", "GPU model") else "right")
    for c in reply.changes:
        ent = f"{c.entitlement_before} → {c.entitlement_after}"
        fair = f"{c.fair_share_before:.2f} → {c.fair_share_after:.2f}"
        moved = (
            c.entitlement_before != c.entitlement_after
            or abs(c.fair_share_before - c.fair_share_after) > 1e-6
        )
        style = "bold" if moved else "dim"
        table.add_row(c.member, c.gpu_model, ent, fair, style=style)
    print_table(console, table, keys=2)
    _print_diff(console, reply.diff)
    if reply.dry_run:
        console.print(f"[yellow]dry run[/]: nothing changed (current version {reply.base_version})")
    elif reply.applied.version == reply.base_version:
        console.print(
            f"unchanged: the same as version {reply.base_version}, which stays in force "
            "(nothing stored)"
        )
    else:
        console.print(
            f"[green]applied[/]: version {reply.applied.version} (was {reply.base_version})"
        )


@policy.command()
@click.option("--limit", type=click.IntRange(min=1, max=500), default=20, show_default=True)
@click.option(
    "--before",
    type=click.IntRange(min=1, max=MAX_VERSION),
    help="only versions older than this one (the next page: the oldest version listed)",
)
@click.option("--diffs", is_flag=True, help="print each version's diff too")
@client_options
def history(client: Client, limit: int, before: int | None, diffs: bool) -> None:
    """Every applied version, newest first: who, when, why."""
    from proto.fairpool.v1 import policy_pb2

    reply = client.policy.ListPolicyVersions(
        policy_pb2.ListPolicyVersionsRequest(
            page_size=limit, before_version=before or 0, omit_yaml=True
        ),
        **client.options(),
    )
    console = Console()
    table = Table(title="policy versions", title_justify="left")
    for column in ("version", "applied (UTC)", "author", "origin", "+/-", "comment"):
        table.add_column(column, justify="right" if column in ("version", "+/-") else "left")
    for v in reply.versions:
        lines = v.diff.splitlines()
        added = sum(1 for x in lines if x.startswith("+") and not x.startswith("+++"))
        removed = sum(1 for x in lines if x.startswith("-") and not x.startswith("---"))
        origin = policy_pb2.PolicyOrigin.Name(v.origin).removeprefix("POLICY_ORIGIN_").lower()
        table.add_row(
            str(v.version),
            v.applied_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
            escape(v.author),
            origin,
            f"+{added}/-{removed}",
            escape(v.comment),
        )
    print_table(console, table, prose=("comment",))
    if reply.versions:
        oldest = reply.versions[-1].version
        older = client.policy.ListPolicyVersions(
            policy_pb2.ListPolicyVersionsRequest(
                page_size=1, before_version=oldest, omit_yaml=True
            ),
            **client.options(),
        )
        if older.versions:
            # The table alone read as the whole history.
            console.print(f"[dim]older versions: --before {oldest}[/]")
    if diffs:
        for v in reply.versions:
            console.rule(f"version {v.version}")
            _print_diff(console, v.diff)


@policy.command()
@click.argument("old")
@click.argument("new", required=False)
@client_options
def diff(client: Client, old: str, new: str | None) -> None:
    """Diff two policies, each a version number or a file: `diff FILE` compares the
    current version with FILE, `diff 3 5` two stored versions, and version 0 is the
    current one (`diff 0 draft.yaml` is `diff draft.yaml`). With a member's token the
    versions are in that member's view, and a FILE is compared in the same view."""
    from scheduler.api.policy_store import canonical_document, member_document

    def read(ref: str | None) -> tuple[Policy, str, str]:
        """(policy, label, the member whose view the server answered, or "")."""
        from proto.fairpool.v1 import policy_pb2

        if ref is None or (ref.isascii() and ref.isdigit()):  # '²' is a digit too
            version = int(ref) if ref else 0
            if version > MAX_VERSION:
                raise InputError(f"{ref}: not a policy version (at most {MAX_VERSION})")
            reply = client.policy.GetPolicy(
                policy_pb2.GetPolicyRequest(version=version), **client.options()
            )
            label = f"version {reply.policy.version}"
            return parse_policy(reply.policy.yaml, label), label, reply.policy.member_view
        return parse_policy(_read(Path(ref)), ref), ref, ""

    if new is None:
        old, new = "", old
    (first, a, a_view), (second, b, b_view) = read(old or None), read(new)
    member = a_view or b_view
    console = Console()
    if member:
        # The server showed the member's view, without the other members: a file beside
        # it, whole, showed all of them as added.
        console.print(
            f"[dim]in {escape(member)}'s view (a member's token): other members' entries "
            "and fixed cost shares are left out of both sides[/]"
        )
    before, after = (
        member_document(policy, member, None) if member else canonical_document(policy, None)
        for policy in (first, second)
    )
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), a, b
    )
    _print_diff(console, "".join(lines))


Figure = Callable[["share_pb2.SimulationSummary"], "float | None"]


def _present(field: str) -> Figure:
    """An optional field of the summary (None when the replay has no such figure)."""
    return lambda s: getattr(s, field) if s.HasField(field) else None


def _lost(cause: str) -> Figure:
    return lambda s: s.gpu_hours_lost_by_cause.get(cause)


def _never_runnable(summary: share_pb2.SimulationSummary) -> float | None:
    """Jobs left waiting that the policy never lets run on the cluster, from the
    `summary.json` the summary carries: a draft that lowers a lendingLimit or a maxGpus can
    strand a gang for good, which its other figures only show as a job fewer."""
    simulation = json.loads(summary.summary_json or "{}").get("simulation") or {}
    found = simulation.get("jobs_never_runnable")
    return float(found) if isinstance(found, int | float) else None


CONTENDED_ROWS: tuple[tuple[str, Figure, str], ...] = (
    ("utilization while work waits", _present("utilization_while_pending"), "{:.3f}"),
    ("lost to reclaim (share of GPU-hours used)", _present("reclaim_lost_fraction"), "{:.2%}"),
    ("  lost: owners' reclaims GPU-h", _lost("entitlement"), "{:,.1f}"),
    ("  lost: reclaims below fair share GPU-h", _lost("fair_share"), "{:,.1f}"),
    ("  lost: moves (consolidation) GPU-h", _lost("consolidation"), "{:,.1f}"),
    ("most preemptions of one job", lambda s: s.preemptions_per_job_max, "{:.0f}"),
    ("owners' time to entitlement p99 s", _present("time_to_entitlement_p99_s"), "{:,.0f}"),
    ("mean JCT s", _present("mean_jct_s"), "{:,.0f}"),
    ("p95 wait s", _present("p95_wait_s"), "{:,.0f}"),
    ("jobs that can never run", _never_runnable, "{:.0f}"),
)
"""(label, figure, format) of the figures a draft is judged by on a contended pool
(docs/metrics.md), beyond the utilization, fairness and preemption rows."""


def _shown(value: float | None, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


def contended_rows(
    current: share_pb2.SimulationSummary, draft: share_pb2.SimulationSummary
) -> list[tuple[str, str, str]]:
    """`CONTENDED_ROWS` of the two replays ("—" where a figure is absent, e.g. a replay in
    which nothing waited)."""

    return [
        (label, _shown(figure(current), fmt), _shown(figure(draft), fmt))
        for label, figure, fmt in CONTENDED_ROWS
    ]


MemberFigure = Callable[["share_pb2.MemberOutcome"], "float | None"]


def _over_completed(figure: Callable[[share_pb2.MemberOutcome], float]) -> MemberFigure:
    """A figure over the member's completed jobs, None over none: the message's plain
    double carries the summary's null as 0, which read as jobs that never waited."""
    return lambda m: figure(m) if m.jobs_completed else None


def pool_utilization(summary: share_pb2.SimulationSummary) -> float | None:
    """The pool's utilization, None when the summary has none (a submission window of
    one instant), which the message's plain double carries as 0."""
    found = json.loads(summary.summary_json or "{}").get("utilization", summary.utilization)
    return float(found) if isinstance(found, int | float) else None


MEMBER_FIGURES: tuple[tuple[MemberFigure, str], ...] = (
    (lambda m: m.gpu_hours_used, "{:,.1f}"),
    (lambda m: m.gpu_hours_borrowed, "{:,.1f}"),
    (lambda m: m.gpu_hours_used_on_others_hardware, "{:,.1f}"),
    (lambda m: m.gpu_hours_lent, "{:,.1f}"),
    (lambda m: m.gpu_hours_lost_to_reclaim, "{:,.1f}"),
    (lambda m: m.gpu_hours_lost_by_cause.get("entitlement", 0.0), "{:,.1f}"),
    (lambda m: m.jobs_completed, "{}"),
    (_over_completed(lambda m: m.mean_wait_s), "{:,.0f}"),
    (_over_completed(lambda m: m.mean_jct_s), "{:,.0f}"),
)
"""(figure, format) of the per-member table's columns after the member's name."""


def member_rows(
    current: share_pb2.SimulationSummary, draft: share_pb2.SimulationSummary
) -> list[tuple[str, ...]]:
    """One row per member of either replay, "current → draft" in each column; a member
    one policy does not have (added or removed by the draft) shows "—" on that side
    rather than being left out."""
    before = {m.member: m for m in current.members}
    after = {m.member: m for m in draft.members}

    def shown(outcome: share_pb2.MemberOutcome | None, figure: Any, fmt: str) -> str:
        return "—" if outcome is None else _shown(figure(outcome), fmt)

    return [
        (
            name,
            *(
                f"{shown(before.get(name), figure, fmt)} → {shown(after.get(name), figure, fmt)}"
                for figure, fmt in MEMBER_FIGURES
            ),
        )
        for name in sorted(before.keys() | after.keys())
    ]


def _named_trace(error: grpc.RpcError, trace: Path | None) -> Exception:
    """The server's refusal of the trace's rows, naming the user's file instead of the
    request field; any other error as it came."""
    details = error.details() if hasattr(error, "details") else None
    code = error.code() if hasattr(error, "code") else None
    prefix = f"{TRACE_FIELD}: "
    if (
        trace is None
        or code != grpc.StatusCode.INVALID_ARGUMENT
        or not details
        or not details.startswith(prefix)
    ):
        return error
    return InputError(f"{trace}: {details.removeprefix(prefix)}")


@policy.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--trace", type=click.Path(path_type=Path, dir_okay=False), help="trace CSV to replay"
)
@click.option(
    "--ledger-days",
    type=click.IntRange(min=1, max=62),
    help="replay the last N days of metered usage instead",
)
@click.option(
    "--batch-seconds",
    type=FiniteRange(min=0.0),
    default=0.0,
    show_default=True,
    help="a cycle waits this long after the first change for more: a quicker replay, each "
    "decision up to that much later (as `fairpool simulate --batch-seconds`; the server "
    "takes up to 3600)",
)
@client_options(timeout=900.0)
def simulate(
    client: Client,
    file: Path,
    trace: Path | None,
    ledger_days: int | None,
    batch_seconds: float,
) -> None:
    """What if the policy in FILE were in force? Replays a trace (or recent metered usage)
    under the current policy and under FILE on the cluster the scheduler sees, and shows
    both side by side."""
    from proto.fairpool.v1 import share_pb2

    if (trace is None) == (ledger_days is None):
        raise InputError("give exactly one of --trace and --ledger-days")
    text = _read(file)
    parse_policy(text, str(file))
    request = share_pb2.SimulateRequest(draft_policy_yaml=text, batch_seconds=batch_seconds)
    if trace is not None:
        try:
            request.trace_csv = trace.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{trace}: cannot read: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise InputError(f"{trace}: not UTF-8 text (byte {exc.start})") from exc
        # The rows themselves are checked here, naming the user's file; the server
        # checks them again against the draft's members and the cluster's nodes.
        read_trace_text(request.trace_csv, str(trace))
        request.source = share_pb2.SIMULATION_SOURCE_TRACE
    else:
        request.source = share_pb2.SIMULATION_SOURCE_LEDGER
        request.ledger_days = ledger_days or 0
    console = Console()
    with console.status("simulating under the current policy and the draft…"):
        try:
            reply = client.shares.Simulate(request, **client.options())
        except grpc.RpcError as exc:
            raise _named_trace(exc, trace) from None
    overall = Table(title="pool", title_justify="left")
    for column in ("", "current", "draft"):
        overall.add_column(column, justify="left" if not column else "right")
    a, b = reply.current, reply.draft
    overall.add_row("utilization", *(_shown(pool_utilization(s), "{:.3f}") for s in (a, b)))
    jain = _present("fairness_jain")
    overall.add_row("fairness (Jain)", *(_shown(jain(s), "{:.3f}") for s in (a, b)))
    overall.add_row(
        "entitlement violation GPU-s",
        f"{a.entitlement_violation_gpu_s:,.0f}",
        f"{b.entitlement_violation_gpu_s:,.0f}",
    )
    overall.add_row("preemptions", str(a.preemptions), str(b.preemptions))
    for label, current, draft in contended_rows(a, b):
        overall.add_row(label, current, draft)
    print_table(console, overall)
    members = Table(title="per member: current → draft", title_justify="left")
    for column in (
        "member",
        "GPU-hours used",
        "borrowed",
        "used on others' hardware",
        "lent",
        "lost to reclaim",
        "of which owners' reclaims",
        "jobs",
        "mean wait s",
        "mean JCT s",
    ):
        members.add_column(column, justify="left" if column == "member" else "right")
    for row in member_rows(a, b):
        members.add_row(*row)
    print_table(console, members)
