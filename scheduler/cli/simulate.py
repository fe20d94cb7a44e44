"""`fairpool simulate`: replay a month of GPU jobs on a pooled cluster under a policy,
with the same engine the daemon runs, and write what happened (docs/metrics.md)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from policies.errors import InputError
from policies.instants import YEARS, within
from policies.inventory import ClusterInventory, check_inventory, load_inventory
from policies.loader import load_policy_source
from policies.model import Policy
from reports.costmodel import MonthReport
from scheduler.cli.options import FiniteRange
from scheduler.cli.tables import print_table
from scheduler.cli.words import plural
from scheduler.engine.decisions import PREEMPTION_CAUSES
from scheduler.engine.snapshot import Node
from scheduler.sim.cluster import build_nodes
from scheduler.sim.never import never_runs, never_runs_lines
from scheduler.sim.outputs import REPORT_FOLDER, check_out_dir, write_study
from scheduler.sim.pipeline import Study, check_trace, run_study
from scheduler.sim.simulator import MAX_BATCH_S
from scheduler.sim.waiting import FRAGMENTATION_CLAIMABLE, IDLE_CAUSES, OWED_CAUSES
from scheduler.traces.csv import read_trace
from scheduler.traces.model import Trace
from scheduler.traces.synth import MAX_DAYS, cluster_shape, node_gpus_of, synthesize

DEFAULT_OUT = Path("out/simulation")
DEFAULT_LOAD = 1.2
DAY_S = 86_400.0


def previous_month_start(policy: Policy, now: datetime | None = None) -> datetime:
    """Midnight of the first day of the previous calendar month, in the policy's zone."""
    zone = policy.billing.zone
    local = (now or datetime.now(UTC)).astimezone(zone)
    year, month = (local.year, local.month - 1) if local.month > 1 else (local.year - 1, 12)
    return datetime(year, month, 1, tzinfo=zone)


def parse_start(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InputError(f"--start: not an ISO-8601 time: {text!r}") from exc
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    if not within(moment):
        raise InputError(f"--start: {text!r} is not in {YEARS}")
    return moment


def default_trace(
    inventory: ClusterInventory, policy: Policy, days: float, load: float, seed: int
) -> tuple[Trace, int]:
    """A synthetic month shaped like published GPU-cluster traces; each member's load
    follows the hardware it brings, and load > 1 makes borrowing and reclaim happen.

    The generator knows GPUs per model, not node shapes or lending limits, so it can
    draw a gang that no set of nodes can hold (4 x 8 GPUs of a model with 32 GPUs on
    2x4 + 3x8) or that the policy never lets its member reach (a lending limit). Those
    are dropped and counted (the second value) rather than failing the built-in demo
    or waiting forever."""
    shape = cluster_shape(inventory)
    if not shape.gpu_models:
        raise InputError("the cluster has no GPUs to simulate")
    trace = synthesize(
        members=inventory.owners(),
        gpus=shape.gpus,
        days=days,
        load=load,
        seed=seed,
        gpu_models=shape.gpu_models,
        member_weights=shape.member_weights,
        max_gpus_per_pod=shape.max_gpus_per_pod,
        node_gpus=shape.node_gpus,
        member_models=shape.member_models,
    )
    never = never_runs(trace.jobs, build_nodes(inventory), policy)
    kept = tuple(job for job in trace.jobs if job.job_id not in never)
    return Trace(kept, trace.start_epoch), len(never)


def _hours(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "—"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _gpu_h(value: object) -> str:
    return f"{value:,.0f}" if isinstance(value, int | float) else "—"


def member_table(study: Study) -> Table:
    summary = study.summary
    table = Table(title=f"Simulated {summary['window']['month']}: per member (GPU-hours)")  # type: ignore[index]
    columns = (
        "member",
        "entitled",
        "used",
        "borrowed",
        "used on others' hardware",
        "lent",
        "lost",
        "mean wait",
    )
    for name in columns:
        table.add_column(name, justify="left" if name == "member" else "right")
    table.add_column("mean JCT", justify="right")
    table.add_column("same jobs pooled / standalone JCT", justify="right")
    table.add_column("pooling dividend", justify="right")
    table.add_column("jobs", justify="right")
    members = summary["members"]
    assert isinstance(members, dict)
    for name, m in members.items():
        table.add_row(
            name,
            _gpu_h(m["gpu_hours_entitled"]),
            _gpu_h(m["gpu_hours_used"]),
            _gpu_h(m["gpu_hours_borrowed"]),
            _gpu_h(m["gpu_hours_used_on_others_hardware"]),
            _gpu_h(m["gpu_hours_lent"]),
            _gpu_h(m["gpu_hours_lost_to_reclaim"]),
            _hours(m["mean_wait_s"]),
            _hours(m["mean_jct_s"]),
            f"{_hours(m['pooled_mean_jct_s_same_jobs'])} / {_hours(m['standalone_mean_jct_s'])}",
            _gpu_h(m["pooling_dividend_gpu_hours"]),
            f"{m['jobs_completed']}/{m['jobs_submitted']}",
        )
    table.add_section()
    table.add_row(
        "all",
        _gpu_h(summary["gpu_hours_entitled"]),
        _gpu_h(summary["gpu_hours_used"]),
        _gpu_h(summary["gpu_hours_borrowed"]),
        _gpu_h(summary["gpu_hours_used_on_others_hardware"]),
        _gpu_h(summary["gpu_hours_lent"]),
        _gpu_h(summary["gpu_hours_lost_to_reclaim"]),
        _hours(summary["mean_wait_s"]),
        _hours(summary["mean_jct_s"]),
        f"— / {_hours(summary['standalone_mean_jct_s'])}",
        _gpu_h(summary["pooling_dividend_gpu_hours"]),
        f"{summary['jobs_completed']}/{summary['jobs_submitted']}",
    )
    return table


def waiting_line(s: dict[str, object], sold: Mapping[str, str] | None = None) -> str:
    """Idle while work waited by cause, reclaim losses, time to entitlement. `sold`:
    member -> what it sold through others' purchases (`sold_words`)."""
    claimable = s.get(f"idle_while_waiting_{FRAGMENTATION_CLAIMABLE}_gpu_h")
    causes = ", ".join(
        f"{cause.replace('_', ' ')} {_gpu_h(s[f'idle_while_waiting_{cause}_gpu_h'])}"
        + (
            f" (while a job it may consolidate for waited {_gpu_h(claimable)})"
            if cause == "fragmentation" and claimable is not None
            else ""
        )
        for cause in IDLE_CAUSES
    )
    lost = s["reclaim_lost_fraction"]
    worse = s.get("members_worse_off_pooled")
    return (
        f"idle while pods waited {_gpu_h(s['idle_while_waiting_gpu_h'])} GPU-h ({causes}); "
        f"lost to reclaim {f'{lost:.1%}' if isinstance(lost, float) else '—'} of GPU-hours "
        f"used{_lost_causes(s)}; preemptions per job max {_gpu_h(s['preemptions_per_job_max'])}; "
        f"consolidation preemptions {s.get('consolidation_preemptions', 0)}; time to "
        f"entitlement p99 {_hours(s['time_to_entitlement_p99_s'])}, max "
        f"{_hours(s['time_to_entitlement_max_s'])}{_past_allowance(s)}"
        + (
            f"; members worse off pooled {worse}{_worse_off(s, sold or {})}"
            if worse is not None
            else ""
        )
    )


def _worse_off(s: dict[str, object], sold: Mapping[str, str]) -> str:
    """Which members the sharing incentive fails for: the count alone sends the reader
    to the members table for the names. A seller's standalone replay runs on the GPUs
    it sold, so its name says so: otherwise the pool reads as having failed it."""
    members = s.get("members")
    if not isinstance(members, dict):
        return ""
    names = [
        f"{name}: {sold[name]}" if name in sold else name
        for name, m in members.items()
        if m.get("worse_off_pooled") is True
    ]
    return f" ({'; '.join(names)})" if names else ""


def sold_words(study: Study) -> dict[str, str]:
    """member -> 'sold 4 of its 24 NVIDIA-A100 GPUs through purchases, which its
    standalone replay keeps' for each member entitled to less than it contributes."""
    result = study.result
    out: dict[str, str] = {}
    for (owner, model), gpus in sorted(result.capacity.items()):
        short = gpus - result.entitlement.get((owner, model), 0)
        if owner and short > 0:
            part = f"{short} of its {plural(gpus, f'{model} GPU')}"
            out[owner] = f"{out[owner]} and {part}" if owner in out else f"sold {part}"
    return {
        member: f"{text} through purchases, which its standalone replay keeps"
        for member, text in out.items()
    }


OWED_CAUSE_WORDS = {
    "reclaim_limit": "jobs at maxReclaimsPerJob",
    "reclaim_limit_bigger": "jobs at maxReclaimsPerJob bigger than their entitlement",
    "others_entitlement": "others' work within their entitlement",
    "borrowed": "borrowed work not yet reclaimed",
    "elsewhere": "no other member's work",
}
"""`waiting.OWED_CAUSES` in the footer's words."""


LOST_CAUSE_WORDS = {
    "entitlement": "owners taking back their entitlement",
    "fair_share": "members below their fair share",
    "consolidation": "moves",
    "queue": "their own members' older jobs",
}
"""The engine's `PREEMPTION_CAUSES` in the footer's words."""


def _lost_causes(s: dict[str, object]) -> str:
    """Shares of the lost work by why it was preempted, when any was lost. `queue` only
    when it lost some: its victims resume, so it normally loses nothing."""
    hours = {cause: s.get(f"reclaim_lost_{cause}_gpu_h") for cause in PREEMPTION_CAUSES}
    parts = {
        c: float(h) for c, h in hours.items() if isinstance(h, int | float) and (h or c != "queue")
    }
    total = sum(parts.values())
    if total <= 0:
        return ""
    causes = ", ".join(f"{LOST_CAUSE_WORDS[c]} {h / total:.0%}" for c, h in parts.items())
    return f" (by who preempted it: {causes})"


def _past_allowance(s: dict[str, object]) -> str:
    """Owed waits longer than a reclaim takes, and what held the owners' nodes."""
    count = s.get("time_to_entitlement_past_allowance_episodes")
    if not isinstance(count, int) or not count:
        return ""
    causes = ", ".join(
        f"{OWED_CAUSE_WORDS[cause]} {_gpu_h(hours)} h"
        for cause in OWED_CAUSES
        if (hours := s[f"time_to_entitlement_past_allowance_{cause}_h"])
    )
    return (
        f" ({plural(count, 'wait')} past the {s['time_to_entitlement_allowance_s']:g} s allowance; "
        f"hours beyond it, by what held the owners' nodes: {causes})"
    )


def _fraction(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "— (no contention)"


def _utilization(value: object) -> str:
    """The pool's utilization over the submission window, which is null when every job
    was submitted at one instant: contention or not, there is no stretch to divide by."""
    if isinstance(value, int | float):
        return f"{value:.3f} (submission window)"
    return "— (every job submitted at one instant: no submission window)"


def _log(**fields: object) -> None:
    print(" ".join(f"{k}={v}" for k, v in fields.items()), file=sys.stderr, flush=True)


def _load_inputs(
    cluster: Path | None,
    policy_file: Path | None,
    trace_file: Path | None,
    days: float,
    load: float,
    seed: int,
) -> tuple[Policy, str, ClusterInventory, Trace, str]:
    """The policy (and its text), the inventory and the trace, checked together."""
    policy, policy_text = load_policy_source(policy_file)
    inventory = load_inventory(cluster)
    check_inventory(inventory, policy, cluster)
    nodes = build_nodes(inventory)
    if trace_file is None:
        trace, dropped = default_trace(inventory, policy, days, load, seed)
        source = f"synthetic trace ({plural(days, 'day')}, load {load:g}, seed {seed})"
        if dropped:
            source += f", {dropped} gang(s) that could never run here dropped"
    else:
        # As `fairpool trace check --cluster` reads it: a gang never mixes GPU models,
        # so one too big for every model's nodes says so per model, not as the cluster.
        trace = read_trace(
            trace_file,
            members=set(policy.member_names()),
            max_gang_gpus=inventory.total_gpus(),
            gpu_models=set(inventory.gpu_models()),
            node_gpus=node_gpus_of(inventory),
        )
        source = str(trace_file)
    check_trace(trace, nodes, policy, source)
    return policy, policy_text, inventory, trace, source


def _refuse_synthetic_options(trace_file: Path | None) -> None:
    """`--days`, `--load` and `--seed` shape the synthetic trace: given with `--trace`,
    they were silently ignored, and a user who asked for 7 days of their trace got all of
    it."""
    if trace_file is None:
        return
    ctx = click.get_current_context()
    given = [
        f"--{name}"
        for name in ("days", "load", "seed")
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    ]
    if given:
        raise click.UsageError(
            f"{', '.join(given)}: only for the synthetic trace, and --trace {trace_file} "
            "is given (cut a trace to fewer days or jobs before replaying it)"
        )


@click.command()
@click.option("--cluster", type=click.Path(path_type=Path), help="Cluster inventory YAML.")
@click.option("--policy", "policy_file", type=click.Path(path_type=Path), help="Policy YAML.")
@click.option("--trace", "trace_file", type=click.Path(path_type=Path), help="Trace CSV.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
    help="Folder for summary.json, tables and the cost report.",
)
@click.option(
    "--start",
    "start_text",
    help="ISO-8601 instant of trace time 0, in the years 1970 to 2200 (default: "
    "the trace's ISO times, else the first day of last month in the policy's time zone).",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=42,
    show_default=True,
    help="Synthetic trace seed.",
)
@click.option(
    "--days",
    type=FiniteRange(min=0, min_open=True, max=MAX_DAYS),
    default=30.0,
    show_default=True,
    help="Synthetic trace length.",
)
@click.option(
    "--load",
    type=FiniteRange(min=0, min_open=True),
    default=DEFAULT_LOAD,
    show_default=True,
    help="Synthetic offered load.",
)
@click.option("--no-standalone", is_flag=True, help="Skip the per-member standalone replays.")
@click.option(
    "--jobs",
    "processes",
    type=click.IntRange(min=1),
    default=os.cpu_count() or 1,
    show_default="the machine's cores",
    help="Processes in all: the pooled replay runs in this one, the members' standalone "
    "replays in the other N-1 beside it, and this one takes those not started yet once "
    "the pooled replay is done.",
)
@click.option(
    "--batch-seconds",
    "batch_s",
    type=FiniteRange(min=0.0, max=MAX_BATCH_S),
    default=0.0,
    show_default=True,
    help="A cycle waits this long after the first change for more, as `fairpool run "
    "--batch-seconds` does: fewer cycles on a busy trace (a quicker what-if), every "
    "decision up to that much later. 0: a cycle at every instant something changes.",
)
def simulate(
    cluster: Path | None,
    policy_file: Path | None,
    trace_file: Path | None,
    out: Path,
    start_text: str | None,
    seed: int,
    days: float,
    load: float,
    no_standalone: bool,
    processes: int,
    batch_s: float,
) -> None:
    """Replay a trace (default: a synthetic month) on a cluster under a policy.

    Writes OUT/summary.json, jobs/members tables (CSV and Parquet), the allocation
    timeline, usage/capacity/reclaim tables for billing, and the month's cost report.
    Bad input: exit 2, nothing written."""
    _refuse_synthetic_options(trace_file)
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=max(console.width, 150))
    policy, policy_text, inventory, trace, source = _load_inputs(
        cluster, policy_file, trace_file, days, load, seed
    )
    start = _trace_start(start_text, trace, policy)
    check_out_dir(out)
    nodes = build_nodes(inventory)
    began = time.monotonic()
    interactive = console.is_terminal
    if not interactive:
        _log(
            event="simulate.start",
            trace=repr(source),
            jobs=len(trace.jobs),
            gpus=inventory.total_gpus(),
            start=start.isoformat(),
        )
    study = _replay(
        console, nodes, policy, trace, start, inventory, not no_standalone, processes, batch_s
    )
    # Billed before anything is written, and written with the tables: billed after them,
    # a failure or Ctrl-C in between left this run's tables beside the last run's report.
    report, no_report = _cost_report(study, str(study.summary["window"]["month"]))  # type: ignore[index]
    write_study(study, out, policy_text, report)
    elapsed = time.monotonic() - began
    _print_study(console, study, f"trace: {source}, {plural(len(trace.jobs), 'job')}", out, elapsed)
    if not interactive:
        _log(event="simulate.done", out=str(out), seconds=f"{elapsed:.1f}")
    if report is None:
        console.print(f"no cost report: {escape(no_report)}")
    else:
        console.print(f"cost report: {escape(str(out / REPORT_FOLDER / 'report.html'))}")


def _trace_start(start_text: str | None, trace: Trace, policy: Policy) -> datetime:
    """The instant of trace time 0: --start, else the trace's own ISO times, else the
    first day of last month in the policy's zone."""
    if start_text is not None:
        return parse_start(start_text)
    if trace.start_epoch is not None:
        return datetime.fromtimestamp(trace.start_epoch, UTC)
    return previous_month_start(policy)


def replay_progress(window: float, finished: int, jobs: int) -> float:
    """The pooled replay's bar: half for the part of the submission window gone by, half
    for the jobs done. The window alone filled it at the last submission, with the last
    jobs still to run (the demo's replay went on from day 30 to day 48); the jobs alone
    lag the clock early on. Both only grow, and the bar is full when every job is done."""
    return 0.5 * min(1.0, window) + 0.5 * (finished / jobs if jobs else 1.0)


def _replay(
    console: Console,
    nodes: tuple[Node, ...],
    policy: Policy,
    trace: Trace,
    start: datetime,
    inventory: ClusterInventory,
    standalone: bool,
    processes: int = 1,
    batch_s: float = 0.0,
) -> Study:
    """The pooled replay and the standalone ones, with a progress bar on a terminal and
    log lines elsewhere."""
    horizon = max((j.submit_time for j in trace.jobs), default=0.0) or 1.0
    interactive = console.is_terminal
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not interactive,
        transient=True,
    )
    next_log = [0.0]
    # The log ends with where the replay ended (the tenths of the submission window are
    # long passed when the last jobs finish): the last report, and the last one logged.
    reported: list[tuple[float, int] | None] = [None]
    logged: list[tuple[float, int] | None] = [None]

    def log_progress(at: tuple[float, int]) -> None:
        logged[0] = at
        _log(event="simulate.progress", sim_day=f"{at[0] / DAY_S:.2f}", jobs_done=at[1])

    def on_progress(now: float, finished: int) -> None:
        fraction = min(1.0, now / horizon)
        if interactive:
            progress.update(
                pooled,
                completed=replay_progress(fraction, finished, len(trace.jobs)),
                detail=f"day {now / DAY_S:.1f}, {finished}/{len(trace.jobs)} jobs done",
            )
            return
        at = reported[0] = (now, finished)
        if (fraction >= next_log[0] or finished == len(trace.jobs)) and at != logged[0]:
            next_log[0] = fraction + 0.1
            log_progress(at)

    def on_standalone(member: str) -> None:
        if interactive:
            progress.advance(alone)
        else:
            _log(event="simulate.standalone_done", member=member)

    with progress:
        pooled = progress.add_task("pooled replay", total=1.0, detail="")
        alone = progress.add_task(
            "standalone replays",
            total=len(policy.member_names()),
            detail="one per member",
            visible=standalone,
        )
        study = run_study(
            nodes,
            policy,
            trace,
            start,
            standalone=standalone,
            progress=on_progress,
            on_standalone=on_standalone,
            processes=processes,
            batch_s=batch_s,
        )
    end = reported[0]
    if end is not None and end != logged[0]:
        log_progress(end)
    return study


def _print_study(
    console: Console, study: Study, trace_line: str, out: Path, elapsed: float
) -> None:
    """The per-member table, the pool's figures and what went wrong in the replay."""
    console.print(trace_line)
    print_table(console, member_table(study))
    s = study.summary
    sim = s["simulation"]
    assert isinstance(sim, dict)
    console.print(
        f"utilization {_utilization(s['utilization'])}, "
        f"{_fraction(s['utilization_while_pending'])} while pods waited, makespan "
        f"{_hours(s['makespan_s'])}, fairness (Jain) "
        f"{_fraction(s['fairness_jain'])}, entitlement violation "
        f"{_gpu_h(float(s['entitlement_violation_gpu_s']) / 3600)} GPU-h, "  # type: ignore[arg-type]
        f"preemptions {s['preemptions']}, engine cycles {sim['engine_cycles']}"
        + (f" (batched by {sim['batch_seconds']:g} s)" if sim["batch_seconds"] else "")
        + f", {elapsed:.1f} s"
    )
    console.print(waiting_line(s, sold_words(study)))
    if sim["livelock_guard_trips"]:
        console.print(
            f"[yellow]livelock guard: {sim['livelock_guard_trips']} preemption decision(s) "
            f"not carried out, for jobs already preempted {sim['max_preemptions_per_job']} "
            "times (see scheduler/sim/simulator.py)[/]"
        )
    if sim["jobs_unfinished"]:
        console.print(f"[yellow]{sim['jobs_unfinished']} job(s) never finished[/]")
        never = study.never_runnable
        if never:
            jobs = {i: r.job for i, r in study.result.jobs.items()}
            console.print(
                f"[yellow]{len(never)} of them can never run under this policy, whatever the "
                f"load:[/]\n" + never_runs_lines(never, jobs)
            )
    console.print(f"wrote {escape(str(out))}/summary.json and tables")


def _cost_report(study: Study, month: str) -> tuple[MonthReport | None, str]:
    """The month's cost report, billed from the study's tables as they are in memory, or
    None and why there is none."""
    from reports.costmodel import NoDataError
    from reports.costmodel.months import MonthError
    from reports.sources.simulation import simulation_report

    try:
        report = simulation_report(
            study.usage, study.capacity, study.reclaim_lost, study.summary, study.policy, month
        )
    except (NoDataError, MonthError) as exc:
        # A replay in which no time passed (nothing could ever run) has no hour to
        # bill, nor one whose month is past the years a report covers (a trace that
        # starts late in 2200 is in 2201 in the policy's zone): the tables stand, and
        # the run is no failure.
        why = str(exc) if isinstance(exc, NoDataError) else f"its month {month} is not in {YEARS}"
        return None, why
    return report, ""
