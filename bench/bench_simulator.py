"""Simulator benchmark: a 30-day, 500-GPU, ~15,000-job synthetic trace on 8 members.

Each configuration runs in a fresh subprocess so its peak RSS is its own; CPU seconds
are shown beside wall seconds because the machine is shared. Targets: the
30-day replay under 30 s, peak memory under 1 GiB. The time is the engine's: the
simulator runs one `scheduler.engine.schedule` per event instant and spends ~3 % of
the run outside it (cProfile)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

MEMBERS = [f"org-{i}" for i in range(1, 9)]
H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-80GB"
DAYS = 30
LOAD = 0.58
SEED = 7
TARGET_S = 30.0
TARGET_RSS_MIB = 1024.0


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


def child(standalone: bool) -> dict[str, float]:
    """One measured run, in this (fresh) process."""
    from datetime import UTC, datetime

    from policies.inventory import parse_inventory
    from policies.loader import parse_policy
    from scheduler.cli.simulate import default_trace
    from scheduler.sim.cluster import build_nodes
    from scheduler.sim.pipeline import run_study

    inventory = parse_inventory(inventory_yaml())
    policy = parse_policy(policy_yaml())
    trace, dropped = default_trace(inventory, policy, DAYS, LOAD, SEED)
    nodes = build_nodes(inventory)
    began = time.perf_counter()
    cpu_began = time.process_time()
    study = run_study(
        nodes, policy, trace, datetime(2026, 10, 1, tzinfo=UTC), standalone=standalone
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
        "events_per_s": events / wall if wall else 0.0,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "utilization": float(study.summary["utilization"] or 0.0),  # type: ignore[arg-type]
        "preemptions": float(study.summary["preemptions"]),  # type: ignore[arg-type]
        "unfinished": float(study.summary["simulation"]["jobs_unfinished"]),  # type: ignore[index]
    }


def measure(standalone: bool) -> dict[str, float]:
    flag = "--standalone" if standalone else "--pooled"
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_simulator", flag],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run(console: Console) -> None:
    table = Table(title=f"simulator: {DAYS}-day synthetic trace, 500 GPUs, 8 members")
    for column in (
        "replay",
        "jobs",
        "wall s",
        "CPU s",
        "events",
        "engine cycles",
        "events/s",
        "peak RSS MiB",
        "util.",
        "preempt.",
        "targets",
    ):
        table.add_column(column, justify="left" if column == "replay" else "right")
    for standalone in (False, True):
        m = measure(standalone)
        ok = m["wall_s"] < TARGET_S and m["peak_rss_mib"] < TARGET_RSS_MIB
        table.add_row(
            "pooled + 8 standalone" if standalone else "pooled",
            f"{m['jobs']:,.0f}",
            f"{m['wall_s']:.1f}",
            f"{m.get('cpu_s', float('nan')):.1f}",
            f"{m['events']:,.0f}",
            f"{m['cycles']:,.0f}",
            f"{m['events_per_s']:,.0f}",
            f"{m['peak_rss_mib']:,.0f}",
            f"{m['utilization']:.3f}",
            f"{m['preemptions']:,.0f}",
            "[green]met[/]" if ok else f"[red]missed[/] (<{TARGET_S:.0f} s, <1 GiB)",
        )
    console.print(table)


if __name__ == "__main__":
    print(json.dumps(child(standalone="--standalone" in sys.argv[1:])))
