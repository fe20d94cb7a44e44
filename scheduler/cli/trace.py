"""`fairpool trace ...`: make, import and check workload traces for the simulator."""

from __future__ import annotations

import math
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from policies.errors import InputError
from policies.inventory import MAX_GPUS_PER_NODE, MAX_NODES, load_inventory
from policies.model import MAX_MEMBERS
from scheduler.cli.options import FiniteRange
from scheduler.cli.tables import print_table
from scheduler.cli.words import plural
from scheduler.traces.csv import read_trace, trace_rows, write_trace
from scheduler.traces.importers import (
    ImportReport,
    import_helios,
    import_philly,
    parse_member_map,
)
from scheduler.traces.model import Trace
from scheduler.traces.summary import member_summary, offered_load, span_s, submission_window_s
from scheduler.traces.synth import MAX_DAYS, ClusterShape, cluster_shape, node_gpus_of, synthesize


@click.group()
def trace() -> None:
    """Make, import and check workload traces (the simulator's input)."""


def _console(out: str | None = None) -> Console:
    # When the trace itself goes to stdout, everything else goes to stderr.
    return Console(stderr=out == "-", highlight=False)


def _emit(result: Trace, out: str) -> None:
    if out == "-":
        import csv

        csv.writer(sys.stdout, lineterminator="\n").writerows(trace_rows(result))
    else:
        write_trace(result, out)


def _weights(pairs: str | None, members: list[str]) -> dict[str, float] | None:
    if not pairs:
        return None
    weights: dict[str, float] = {}
    for part in pairs.split(","):
        name, sep, value = (s.strip() for s in part.partition("="))
        if name in weights:
            # The last weight won without a word.
            raise InputError(f"--member-weights: {name!r} given twice")
        try:
            weights[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or name not in members:
            raise InputError(
                f"--member-weights: {part.strip()!r} is not member=weight with a member "
                f"of {', '.join(members)}"
            )
        if not (math.isfinite(weights[name]) and weights[name] >= 0):
            # inf ended in a numpy traceback, nan in "every member zero load".
            raise InputError(
                f"--member-weights: {part.strip()!r}: a weight is a finite number >= 0"
            )
    if not any(weights.values()):
        # Was "synthesize: member_weights give every member zero load", naming no flag.
        raise InputError(
            "--member-weights: every weight is 0 (a member not named gets 0), so no member "
            "submits a job"
        )
    return weights


@trace.command()
@click.option(
    "--members",
    "member_count",
    type=click.IntRange(min=1, max=MAX_MEMBERS),
    default=None,
    help="Number of members, named member-1..N (default 4, or the cluster's owners).",
)
@click.option(
    "--gpus",
    # At most what an inventory can hold: more overflowed the load's arithmetic.
    type=click.IntRange(min=1, max=MAX_NODES * MAX_GPUS_PER_NODE),
    default=None,
    help="GPUs the load is measured against (default 64, or the cluster's total).",
)
@click.option(
    "--days",
    type=FiniteRange(min=0, min_open=True, max=MAX_DAYS),
    default=30.0,
    show_default=True,
)
@click.option(
    "--load",
    type=FiniteRange(min=0, min_open=True),
    default=1.1,
    show_default=True,
    help="Offered GPU-seconds / available; above 1 means contention.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--cluster",
    type=click.Path(path_type=Path),
    default=None,
    help="Cluster inventory YAML: members are its owners, jobs get its GPU models.",
)
@click.option(
    "--member-weights",
    default=None,
    metavar="M=W,...",
    help="Share of the load per member (default: seeded, unequal).",
)
@click.option(
    "--checkpointable-share",
    type=FiniteRange(0, 1),
    default=None,
    metavar="F",
    help="Mark about this share of the jobs checkpointable and the rest not (the "
    "trace's checkpointable column, over the members' setting); default: no column.",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(path_type=Path),
    default=None,
    help="With --cluster: leave out the jobs this policy never lets run there (a gang "
    "beyond what lending limits, maxGpus or borrowing: false allow), as `fairpool "
    "simulate`'s own trace does.",
)
@click.option("--out", required=True, metavar="FILE.csv", help="Where to write ('-': stdout).")
def synth(
    member_count: int | None,
    gpus: int | None,
    days: float,
    load: float,
    seed: int,
    cluster: Path | None,
    member_weights: str | None,
    checkpointable_share: float | None,
    policy_file: Path | None,
    out: str,
) -> None:
    """Write a synthetic trace shaped like published GPU-cluster traces."""
    shape: ClusterShape | None = None
    if policy_file is not None and cluster is None:
        raise InputError(
            "--policy needs --cluster: which jobs a policy lets run depends on the nodes"
        )
    if cluster is not None:
        inventory = load_inventory(cluster)
        members = inventory.owners()
        if member_count is not None and member_count != len(members):
            raise InputError(
                f"--members {member_count} but {cluster} has {len(members)} owners "
                f"({', '.join(members)}); leave --members out with --cluster"
            )
        # As `fairpool simulate`'s own trace: jobs fit the nodes, a member's demand
        # follows the hardware it brings, and its jobs ask mostly for its own models.
        shape = cluster_shape(inventory)
        if not shape.gpu_models:
            raise InputError(f"{cluster}: the cluster has no GPUs")
        gpus = gpus or shape.gpus
    else:
        members = [f"member-{i}" for i in range(1, (member_count or 4) + 1)]
        gpus = gpus or 64
    weights = _weights(member_weights, members)
    result = synthesize(
        members=members,
        gpus=gpus,
        days=days,
        load=load,
        seed=seed,
        gpu_models=shape.gpu_models if shape else None,
        member_weights=weights or (shape.member_weights if shape else None),
        max_gpus_per_pod=shape.max_gpus_per_pod if shape else 8,
        node_gpus=shape.node_gpus if shape else None,
        member_models=shape.member_models if shape else None,
        checkpointable_share=checkpointable_share,
    )
    dropped = 0
    if policy_file is not None and cluster is not None:
        from policies.inventory import check_inventory
        from policies.loader import load_policy
        from scheduler.sim.cluster import build_nodes
        from scheduler.sim.never import never_runs

        policy = load_policy(policy_file)
        check_inventory(inventory, policy, cluster)
        never = never_runs(result.jobs, build_nodes(inventory), policy)
        dropped = len(never)
        result = Trace(tuple(j for j in result.jobs if j.job_id not in never), result.start_epoch)
    _emit(result, out)
    console = _console(out)
    _print_summary(console, result, f"synthetic trace -> {escape(str(out))}", gpus=gpus, days=days)
    if dropped:
        console.print(
            f"left out {dropped} job(s) that {escape(str(policy_file))} never lets run on "
            f"{escape(str(cluster))}"
        )


@trace.command("import")
@click.argument("kind", type=click.Choice(["philly", "helios"]))
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--member-map",
    default=None,
    metavar="MAP",
    help="YAML file of vc: member, or 'vc=member,...' (default: each virtual cluster "
    "names a member: lower-cased, other characters than a-z, 0-9 and '-' made '-').",
)
@click.option(
    "--strict-members",
    is_flag=True,
    help="An unmapped virtual cluster is an error (default: its jobs are skipped).",
)
@click.option(
    "--timezone",
    "tz",
    default="UTC",
    show_default=True,
    help="Zone of the trace's times (they carry none).",
)
@click.option("--out", required=True, metavar="FILE.csv", help="Where to write ('-': stdout).")
def import_(
    kind: str, file: Path, member_map: str | None, strict_members: bool, tz: str, out: str
) -> None:
    """Convert a public trace (Philly cluster_job_log, Helios cluster_log.csv) to the
    canonical CSV, mapping virtual clusters to members."""
    members = parse_member_map(member_map, strict=strict_members)
    importer = import_philly if kind == "philly" else import_helios
    console = _console(out)
    with console.status(f"reading {file}"):
        report = importer(file, members, tz)
    _emit(report.trace, out)
    _print_import(console, report, out)
    _print_summary(console, report.trace, f"imported trace -> {escape(str(out))}")


@trace.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--cluster",
    type=click.Path(path_type=Path),
    default=None,
    help="Check GPU models and gang sizes against this inventory.",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Check that every org is a member of this policy.",
)
def check(file: Path, cluster: Path | None, policy_file: Path | None) -> None:
    """Validate a canonical trace CSV and summarize it; exit 2 naming every bad line.
    With both --cluster and --policy, also warn of jobs the policy never lets run there."""
    members: set[str] | None = None
    policy = None
    if policy_file is not None:
        from policies.loader import load_policy

        policy = load_policy(policy_file)
        members = set(policy.member_names())
    max_gpus: int | None = None
    models: set[str] | None = None
    nodes: dict[str, list[int]] | None = None
    inventory = None
    if cluster is not None:
        inventory = load_inventory(cluster)
        if policy is not None:
            from policies.inventory import check_inventory

            check_inventory(inventory, policy, cluster)
        max_gpus = inventory.total_gpus()
        models = set(inventory.gpu_models())
        nodes = node_gpus_of(inventory)
    result = read_trace(
        file, members=members, max_gang_gpus=max_gpus, gpu_models=models, node_gpus=nodes
    )
    console = _console()
    _print_summary(console, result, f"valid: {escape(str(file))}", gpus=max_gpus)
    if policy is not None and inventory is not None:
        from scheduler.sim.cluster import build_nodes
        from scheduler.sim.never import never_runs, never_runs_lines

        # Valid input (another policy may run them), but a replay leaves them waiting.
        never = never_runs(result.jobs, build_nodes(inventory), policy)
        if never:
            console.print(
                f"[yellow]warning: {len(never)} job(s) can never run on {cluster} under "
                f"{policy_file}, whatever the load (they would wait forever):[/]\n"
                + never_runs_lines(never, {job.job_id: job for job in result.jobs})
            )


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds < 2 * 86400 else f"{seconds / 86400:,.1f} d"


def _print_summary(
    console: Console,
    result: Trace,
    title: str,
    gpus: int | None = None,
    days: float | None = None,
) -> None:
    summary = member_summary(result)
    table = Table(title=title, title_justify="left")
    for name in ("member", "jobs", "gangs", "GPU-hours", "largest job", "median run", "submits"):
        table.add_column(name, justify="left" if name == "member" else "right")
    last_member = len(summary) - 2  # the row before 'total' closes a section
    for position, row in enumerate(summary.itertuples(index=False)):
        table.add_row(
            str(row.member),
            f"{row.jobs:,}",
            f"{row.gangs:,}",
            f"{row.gpu_hours:,.0f}",
            plural(row.largest_job_gpus, "GPU"),
            _hours(row.median_duration_s),
            f"{_hours(row.first_submit_s)} .. {_hours(row.last_submit_s)}",
            style="bold" if row.member == "total" else None,
            end_section=position == last_member,
        )
    print_table(console, table)
    span = span_s(result)
    facts = [f"span {_hours(span)} (to the last job's end)"]
    if result.start_epoch is not None:
        start = datetime.fromtimestamp(result.start_epoch, tz=UTC)
        facts.append(f"starts {start.isoformat()}")
    if gpus and days:
        facts.append(
            f"offered load {offered_load(result, gpus, days * 86400):.2f} on "
            f"{plural(gpus, 'GPU')} over {plural(days, 'day')}"
        )
    elif gpus:
        window = submission_window_s(result)
        load = f"{offered_load(result, gpus, window):.2f}" if window > 0 else "— (one instant)"
        facts.append(
            f"offered load {load} on {plural(gpus, 'GPU')} over the submission window "
            f"({_hours(window)}, first to last submission)"
        )
    console.print("; ".join(facts))


def _print_import(console: Console, report: ImportReport, out: str) -> None:
    table = Table(title=f"import of {escape(str(report.source))}", title_justify="left")
    table.add_column("jobs")
    table.add_column("count", justify="right")
    table.add_row("read", f"{report.read:,}")
    table.add_row("imported", f"{report.imported:,}", style="bold green")
    for reason, count in report.skipped.most_common():
        table.add_row(f"skipped: {reason}", f"{count:,}")
    print_table(console, table, prose=("jobs",))
    if report.renamed:
        # The trace's orgs are not the names the trace showed: say which is which.
        pairs = sorted(report.renamed.items())
        shown = ", ".join(f"{vc} -> {member}" for vc, member in pairs[:10])
        more = len(pairs) - 10
        console.print(
            f"members named after virtual clusters: {shown}"
            + (f" and {more} more" if more > 0 else ""),
            markup=False,
        )
    if report.unmapped_vcs:
        top = ", ".join(f"{vc} ({n})" for vc, n in report.unmapped_vcs.most_common(10))
        more = len(report.unmapped_vcs) - 10
        console.print(
            f"unmapped virtual clusters: {top}" + (f" and {more} more" if more > 0 else "")
        )
