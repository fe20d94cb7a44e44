"""The chaos run's table: what was done to the system, and what it counted."""

from __future__ import annotations

from rich.table import Table

from tests.chaos.meter_run import MeterResult
from tests.chaos.scheduler_run import ChaosResult

FAILOVER_TARGET = 15.0


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _target(ok: bool) -> str:
    return "[green]met[/]" if ok else "[red]MISSED[/]"


def chaos_table(run: ChaosResult, meter: MeterResult | None) -> Table:
    table = Table(title="chaos run", show_lines=False)
    table.add_column("fault or check")
    table.add_column("count / time", justify="right")
    table.add_column("target")
    failovers = run.failovers
    mid = [f for f in failovers if f.mid_gang]
    left = sum(f.partial_after_kill > 0 for f in failovers)
    table.add_row(
        "leader killed (SIGKILL)",
        f"{len(failovers)} ({len(mid)} mid gang bind; {left} left gangs partly bound)",
        "",
    )
    for attribute, what in (
        ("lease_seconds", "failover: kill -> new leader's lease (median / max, s)"),
        ("first_bind_seconds", "failover: kill -> new leader's first bind (median / max, s)"),
    ):
        worst = run.failover_max(attribute)
        table.add_row(
            what,
            f"{_seconds(run.failover_median(attribute))} / {_seconds(worst)}",
            _target(worst is not None and worst < FAILOVER_TARGET) + f" (< {FAILOVER_TARGET:g} s)",
        )
    for outage in run.outages:
        table.add_row(
            f"{outage.component} killed, started again: serving after / next bind (s)",
            f"{outage.down_seconds:.1f} / {_seconds(outage.binds_resume_seconds)}",
            "",
        )
    table.add_row(
        "pods created (recreated after a reclaim or an undo)",
        f"{run.pods_created} ({run.recreated})",
        "",
    )
    table.add_row("binds / evictions (audit log)", f"{run.binds} / {run.evictions}", "")
    table.add_row(
        "gang repairs: GangBindFinished / GangBindUndone events",
        f"{run.gang_bind_finished} / {run.gang_bind_undone}",
        "",
    )
    table.add_row(
        "double binds (a pod bound twice, audit log)",
        str(len(run.double_binds)),
        _target(not run.double_binds),
    )
    table.add_row(
        "nodes holding more GPUs than they have (samples)",
        str(run.overcommitted_samples),
        _target(run.overcommitted_samples == 0),
    )
    table.add_row(
        "gangs partly bound once settled",
        str(len(run.partly_bound_at_end)),
        _target(not run.partly_bound_at_end),
    )
    table.add_row(
        "pods lost (waiting without a reason / gone, not removed by fairpool)",
        f"{len(run.waiting_without_reason)} / {len(run.vanished)}",
        _target(run.lost == 0),
    )
    table.add_row(
        "evictions sent whose answer a killed kube-apiserver lost (pods gone, by fairpool)",
        str(len(run.unanswered_evictions)),
        "",
    )
    table.add_row(
        "settled after (s) / whole run (s)", f"{run.settle_seconds:.0f} / {run.seconds:.0f}", ""
    )
    if meter is not None:
        failed = [what for what, status in meter.runs if status != 0]
        table.add_row(
            "meter runs failing (Prometheus down, database stopped)", str(len(failed)), ""
        )
        table.add_row(
            "hours pending while Prometheus was down, then metered",
            str(len(meter.pending_during_outage)),
            "",
        )
        table.add_row(
            "ledger hours metered / duplicated / lost",
            f"{meter.hours_metered} / {meter.hours_duplicated} / {meter.hours_lost}",
            _target(meter.hours_duplicated == 0 and meter.hours_lost == 0),
        )
        table.add_row(
            "ledger GPU-hours / the scenario's own",
            f"{meter.ledger_gpu_hours:.4f} / {meter.scenario_gpu_hours:.4f}",
            _target(meter.gpu_hours_match),
        )
    return table
