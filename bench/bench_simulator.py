"""Simulator benchmark: 30-day synthetic traces on a 500-GPU, 8-member cluster, at offered
loads from 0.6 (little waits) to 1.5 (queues grow all month: the case users ask about).

Each configuration runs in a fresh subprocess so its peak RSS is its own; CPU seconds
(of that process: the pooled replay and the standalone replays it took over, the
worker's excluded) are shown beside wall seconds because the machine is shared. The
standalone replays run in a worker process while the pooled one runs, and in this one
too once the pooled one is done (`run_study(processes=2)`, as `fairpool simulate --jobs
2`). The simulator runs one `scheduler.engine.schedule` per event instant; the column
"pooled: engine s / replay s" says how much of the pooled replay's wall time was the
engine's (the rest is the simulator's own bookkeeping: events, the timeline, the wait
meter).

Each load runs exactly (a cycle at every instant something changes: the pooled replay
alone, then with its standalone replays) and with each batch of BENCH_SIMULATOR_BATCH
(comma-separated seconds, default 60; `fairpool simulate --batch-seconds`: a cycle waits
that long after the first change for more, as the daemon's `--batch-seconds` does), with
the standalone replays. The target is the same for both; a batched replay answers
sooner, each decision up to the batch later (docs/architecture.md, "Batches", says what
that changes).

BENCH_SIMULATOR_LOADS (comma-separated, default 0.6,1.0,1.2,1.5) and
BENCH_SIMULATOR_DAYS (default 30) pick a shorter run; BENCH_SIMULATOR_BATCH= (empty)
runs the exact replays only."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

from scheduler.cli.tables import print_table
from scheduler.engine_build import kind

MEMBERS = [f"org-{i}" for i in range(1, 9)]
H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-80GB"
DAYS = 30
LOADS = (0.6, 1.0, 1.2, 1.5)
SEED = 7
TARGET_S = {0.6: 5.0, 1.0: 15.0, 1.2: 15.0, 1.5: 15.0}
"""Wall seconds for 30 days with the standalone replays (scaled for shorter runs)."""
TARGET_RSS_MIB = 1024.0
BATCHES = (60.0,)


def inventory_yaml() -> str:
    """8 members, 500 GPUs: 4 x 8 H100 each (256), and 8 or 7 x 4 A100 (244)."""
    groups = []
    for i, member in enumerate(MEMBERS):
        groups.append(
            f"    - {{name: {member}-h100, owner: {member}, count: 4, gpusPerNode: 8, "
            f"gpuModel: {H100}, topologyDomain: rack-{i}}}"
        )
        groups.append(
            f"    - {{name: {member}-a100, owner: {member}, count: {8 if i < 5 else 7}, "
            f"gpusPerNode: 4, gpuModel: {A100}, topologyDomain: rack-{i}}}"
        )
    return "apiVersion: fairpool.io/v1\nkind: ClusterInventory\nspec:\n  nodeGroups:\n" + (
        "\n".join(groups) + "\n"
    )


def policy_yaml() -> str:
    members = "\n".join(
        f"    - {{name: {m}, namespaces: ['{m}'], weight: {1 + i % 2}}}"
        for i, m in enumerate(MEMBERS)
    )
    return (
        "apiVersion: fairpool.io/v1\nkind: Policy\nspec:\n  gpuModels:\n"
        f"    - {{name: {H100}, hourlyCost: '2.40'}}\n"
        f"    - {{name: {A100}, hourlyCost: '1.30'}}\n"
        f"  members:\n{members}\n"
        "  sharing: {reclaimGracePeriodSeconds: 30, minRuntimeSeconds: 600, "
        "usageHalfLifeHours: 168}\n"
    )


def child(standalone: bool, load: float, days: float, batch_s: float) -> dict[str, float]:
    """One measured run, in this (fresh) process."""
    from datetime import UTC, datetime

    from policies.inventory import parse_inventory
    from policies.loader import parse_policy
    from scheduler.cli.simulate import default_trace
    from scheduler.sim.cluster import build_nodes
    from scheduler.sim.pipeline import run_study

    inventory = parse_inventory(inventory_yaml())
    policy = parse_policy(policy_yaml())
    trace, dropped = default_trace(inventory, policy, days, load, SEED)
    nodes = build_nodes(inventory)
    began = time.perf_counter()
    cpu_began = time.process_time()
    study = run_study(
        nodes,
        policy,
        trace,
        datetime(2026, 10, 1, tzinfo=UTC),
        standalone=standalone,
        processes=2,
        batch_s=batch_s,
    )
    wall = time.perf_counter() - began
    cpu = time.process_time() - cpu_began
    result = study.result
    events = result.events + sum(r.events for r in (study.standalone or {}).values())
    cycles = result.cycles + sum(r.cycles for r in (study.standalone or {}).values())
    return {
        "jobs": len(trace.jobs),
        "dropped": dropped,
        "gpus": inventory.total_gpus(),
        "wall_s": wall,
        "cpu_s": cpu,
        "events": events,
        "cycles": cycles,
        # The pooled replay's: the standalone ones partly run in the worker process.
        "engine_s": result.engine_s,
        "pooled_s": result.replay_s,
        "events_per_s": events / wall if wall else 0.0,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "utilization": float(study.summary["utilization"] or 0.0),  # type: ignore[arg-type]
        "preemptions": float(study.summary["preemptions"]),  # type: ignore[arg-type]
        "unfinished": float(study.summary["simulation"]["jobs_unfinished"]),  # type: ignore[index]
    }


def measure(standalone: bool, load: float, days: float, batch_s: float = 0.0) -> dict[str, float]:
    flag = "--standalone" if standalone else "--pooled"
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_simulator", flag, str(load), str(days), str(batch_s)],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _settings() -> tuple[tuple[float, ...], float, tuple[float, ...]]:
    loads = os.environ.get("BENCH_SIMULATOR_LOADS")
    days = float(os.environ.get("BENCH_SIMULATOR_DAYS", DAYS))
    batches = os.environ.get("BENCH_SIMULATOR_BATCH")
    return (
        (tuple(float(x) for x in loads.split(",")) if loads else LOADS),
        days,
        BATCHES if batches is None else tuple(float(x) for x in batches.split(",") if x.strip()),
    )


def verdict(m: dict[str, float], load: float, days: float, standalone: bool) -> str:
    """Whether the run met the target. The target is for the replay with its standalone
    replays, so a pooled replay alone, which does less, has none."""
    if not standalone:
        return "—"
    target = TARGET_S.get(load, 15.0) * days / DAYS
    ok = m["wall_s"] < target and m["peak_rss_mib"] < TARGET_RSS_MIB
    return ("[green]met[/]" if ok else "[red]missed[/]") + f" (< {target:.3g} s)"


def run(console: Console) -> None:
    loads, days, batches = _settings()
    table = Table(title=f"simulator: {days:g}-day synthetic traces, 500 GPUs, 8 members")
    for column in (
        "load",
        "replay",
        "batch s",
        "jobs",
        "wall s",
        "CPU s",
        "events",
        "engine cycles",
        "pooled: engine s / replay s",
        "events/s",
        "peak RSS MiB",
        "util.",
        "preempt.",
        "target",
    ):
        table.add_column(column, justify="left" if column == "replay" else "right")
    for load in loads:
        runs = [(False, 0.0), (True, 0.0), *((True, b) for b in batches)]
        for standalone, batch_s in runs:
            m = measure(standalone, load, days, batch_s)
            table.add_row(
                f"{load:g}",
                "pooled + 8 standalone" if standalone else "pooled",
                f"{batch_s:g}" if batch_s else "exact",
                f"{m['jobs']:,.0f}",
                f"{m['wall_s']:.1f}",
                f"{m.get('cpu_s', float('nan')):.1f}",
                f"{m['events']:,.0f}",
                f"{m['cycles']:,.0f}",
                f"{m['engine_s']:.1f} / {m['pooled_s']:.1f}",
                f"{m['events_per_s']:,.0f}",
                f"{m['peak_rss_mib']:,.0f}",
                f"{m['utilization']:.3f}",
                f"{m['preemptions']:,.0f}",
                verdict(m, load, days, standalone),
            )
    print_table(console, table)
    console.print(
        f"load: offered GPU-seconds / capacity; target: wall seconds for the replay with its "
        f"standalone replays ({', '.join(f'{k:g}: {v:.0f} s' for k, v in TARGET_S.items())} "
        f"for {DAYS} days, scaled to {days:g}), peak RSS < 1 GiB; "
        f"load average {os.getloadavg()[0]:.1f} (the machine is shared); engine build: "
        f"{kind()}"
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    batch = float(args[3]) if len(args) > 3 else 0.0
    print(json.dumps(child("--standalone" in args, float(args[1]), float(args[2]), batch)))
