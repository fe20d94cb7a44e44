"""Engine benchmark: one full `schedule` cycle on synthetic clusters.

Clusters of 100 / 1,000 / 5,000 nodes x 8 GPUs owned by 8 members (32 nodes per
topology domain) with 1,000 / 10,000 / 50,000 pending single-GPU pods spread over the
members, 10,000 nodes with 100,000 pending, plus gang and reclaim cases. The first cycle
on a snapshot is cold (nothing learnt about its jobs yet: the daemon's case when its queue
changed wholesale); a repeated cycle on the same jobs is warm (the engine reuses what it
learnt about each job, the simulator's and a steady daemon's case). Each is timed (best of
three: one sample of a shared machine says little), then run once more under tracemalloc
for its peak memory. Both are timed once more with the daemon's interpreter settings
(`scheduler.k8s.runtime.tune`: the garbage collector's young generation collected less
often), the cost `fairpool run` pays; the default settings are those of any other
caller.

Then the regime users care about, a contended pool: the cycles of the first
`REPLAY_DAYS` days of the fairness benchmark's Philly-shaped replay (552 GPUs, 15
members, demand about 1.4 times capacity), every `REPLAY_EVERY`th snapshot kept as the
simulator handed it to the engine, each then scheduled again by this engine (best of
three passes over all of them) and by the reference engine: most of their time goes to
jobs that wait, trying reclaim and consolidation, which the synthetic clusters above
barely exercise.
"""

from __future__ import annotations

import math
import os
import time
import tracemalloc
from dataclasses import dataclass, replace

from rich.console import Console
from rich.table import Table

from policies.model import Policy
from scheduler.cli.tables import print_table
from scheduler.engine import schedule
from scheduler.engine.decisions import Decisions
from scheduler.engine.snapshot import Node, PendingJob, PendingPod, PodSpec, RunningPod, Snapshot
from scheduler.engine_build import kind
from scheduler.sim.after_cycle import read_cycle

MODEL = "NVIDIA-H100-80GB-HBM3"
MEMBERS = [f"member-{k}" for k in range(8)]
GIB = 2**30
BUDGET_S = 25.0
"""A case whose estimated cycle time (from smaller runs) exceeds this is skipped."""
REPLAY_DAYS = 10.0
REPLAY_EVERY = 16


def _policy() -> Policy:
    return Policy.model_validate(
        {
            "api_version": "fairpool.io/v1",
            "kind": "Policy",
            "spec": {
                "gpu_models": [{"name": MODEL, "hourly_cost": "2.40"}],
                "members": [{"name": m, "weight": 1 + k % 3} for k, m in enumerate(MEMBERS)],
                "sharing": {"min_runtime_seconds": 600},
            },
        }
    )


def _nodes(count: int) -> tuple[Node, ...]:
    return tuple(
        Node(
            name=f"node-{k:05d}",
            owner=MEMBERS[k % len(MEMBERS)],
            gpu_model=MODEL,
            gpus=8,
            cpu_milli=96_000,
            memory_bytes=1024 * GIB,
            topology_domain=f"rack-{k // 32:03d}",
            labels={"nvidia.com/gpu.product": MODEL},
        )
        for k in range(count)
    )


def _jobs(count: int, pods: int, gpus: int, prefix: str, offset: int = 0) -> list[PendingJob]:
    out = []
    for k in range(count):
        member = MEMBERS[(k * 7 + offset) % len(MEMBERS)]
        job_id = f"{prefix}-{k:06d}"
        spec = PodSpec(gpus=gpus, cpu_milli=4_000, memory_bytes=32 * GIB)
        out.append(
            PendingJob(
                job_id=job_id,
                member=member,
                pods=tuple(
                    PendingPod(
                        uid=f"{job_id}-{p}",
                        name=f"{job_id}-{p}",
                        namespace=member,
                        spec=spec,
                        created_at=float(k),
                    )
                    for p in range(pods)
                ),
                min_member=pods,
                priority=k % 3,
                submitted_at=float(k),
            )
        )
    return out


@dataclass(frozen=True)
class Case:
    nodes: int
    pending: int
    kind: str
    """"no" (single pods), "yes" (gangs) or "reclaim"."""
    jobs: list[PendingJob]
    running: tuple[RunningPod, ...] = ()


def _borrowed_everywhere(nodes: tuple[Node, ...]) -> tuple[RunningPod, ...]:
    """Members 0-3 fill every GPU, half of them on members 4-7's nodes (borrowed)."""
    out = []
    for k, node in enumerate(nodes):
        member = MEMBERS[k % 4]
        for g in range(node.gpus):
            uid = f"run-{k:05d}-{g}"
            out.append(
                RunningPod(
                    uid=uid,
                    name=uid,
                    namespace=member,
                    member=member,
                    job_id=uid,
                    node=node.name,
                    spec=PodSpec(gpus=1),
                    started_at=float(g),
                )
            )
    return tuple(out)


def _cases() -> list[Case]:
    out: list[Case] = []
    for nodes in (100, 1_000, 5_000):
        for pending in (1_000, 10_000, 50_000):
            out.append(Case(nodes, pending, "no", _jobs(pending, 1, 1, "single")))
    out.append(Case(10_000, 100_000, "no", _jobs(100_000, 1, 1, "single")))
    gangs = _jobs(500, 8, 1, "gang-small") + _jobs(100, 8, 8, "gang-big", offset=3)
    out.append(Case(1_000, sum(len(j.pods) for j in gangs), "yes", gangs))
    # Reclaim: members 4-7 (below their fair share) want back what 0-3 borrowed.
    reclaimers = [j for j in _jobs(2_000, 1, 1, "reclaim") if j.member in MEMBERS[4:]]
    out.append(
        Case(1_000, len(reclaimers), "reclaim", reclaimers, _borrowed_everywhere(_nodes(1_000)))
    )
    return out


def _new_nodes(snapshot: Snapshot) -> Snapshot:
    """The snapshot with a new nodes tuple of the same nodes. `tuple()` of a tuple is
    that very tuple, and the engine keeps node-only work across cycles for an identical
    one (the simulator's case); the daemon builds a new one each cycle."""
    return replace(snapshot, nodes=tuple(list(snapshot.nodes)))


def _time(snapshot: Snapshot, policy: Policy, reps: int) -> tuple[float, float, Decisions]:
    """Best wall time, best CPU time (the machine may be shared) and the decisions of
    the daemon's steady cycle: jobs it has seen before, on the nodes tuple of the cycle
    before (its view keeps one while no node changes, `ClusterCache`). A first, untimed
    call on a new tuple stands for that cycle before; `_cold` times a cycle on new
    nodes and new jobs."""
    best = best_cpu = float("inf")
    steady = _new_nodes(snapshot)
    schedule(steady, policy)
    decisions = Decisions()
    for _ in range(reps):
        start, cpu = time.perf_counter(), time.process_time()
        decisions = schedule(steady, policy)
        # The daemon reads every waiting job's sentence, written on first read: timed too.
        len(decisions.explanations)
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best, best_cpu, decisions


def _fresh(snapshot: Snapshot) -> Snapshot:
    """The same snapshot in new job objects and a new nodes tuple: nothing the engine
    learnt in an earlier cycle applies, so its cycle is cold again."""
    return replace(_new_nodes(snapshot), pending=tuple(replace(job) for job in snapshot.pending))


def _cold(snapshot: Snapshot, policy: Policy, reps: int) -> tuple[float, Decisions]:
    """Best wall time of a cold cycle over `reps` copies of the snapshot (one cold cycle
    is one sample of a shared machine), and the decisions (the same for every copy)."""
    copies = [_fresh(snapshot) for _ in range(reps)]
    best = float("inf")
    decisions = Decisions()
    for copy in copies:
        start = time.perf_counter()
        decisions = schedule(copy, policy)
        len(decisions.explanations)
        best = min(best, time.perf_counter() - start)
    return best, decisions


def _as_daemon(snapshot: Snapshot, policy: Policy, reps: int) -> tuple[float, float]:
    """Best wall times of the cold and the warm cycle under the daemon's interpreter
    settings."""
    from scheduler.k8s import runtime

    previous = runtime.tune()
    try:
        cold = _cold(snapshot, policy, reps)[0]
        return cold, _time(snapshot, policy, reps)[0]
    finally:
        runtime.restore(previous)


def _before(snapshot: Snapshot, policy: Policy) -> float:
    """CPU seconds of one cycle of the reference engine (`tests/reference_engine`, the
    cycle before it followed what changed), for the before/after columns: on the nodes
    tuple as given, which it too keeps node-only work for, as the engine it is set
    beside is."""
    from tests.reference_engine import schedule as reference_schedule

    cpu = time.process_time()
    reference_schedule(snapshot, policy)
    return time.process_time() - cpu


def _meter(snapshot: Snapshot, policy: Policy, decisions: Decisions, reps: int) -> float:
    """Best wall seconds of `read_cycle` on the cycle's snapshot and decisions, right after
    a cycle on it (as the exporter's first scrape after a cycle finds the engine)."""
    best = math.inf
    for _ in range(reps):
        schedule(snapshot, policy)
        began = time.perf_counter()
        read_cycle(snapshot, decisions, policy)
        best = min(best, time.perf_counter() - began)
    return best


def _peak(snapshot: Snapshot, policy: Policy) -> int:
    cold = _new_nodes(snapshot)
    tracemalloc.start()
    try:
        len(schedule(cold, policy).explanations)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _replay_snapshots() -> tuple[Policy, list[Snapshot], int]:
    """Every `REPLAY_EVERY`th snapshot of the contended replay, its policy and its
    cycle count."""
    from bench.bench_fairness import philly
    from scheduler.sim.cluster import build_nodes
    from scheduler.sim.simulator import Simulator

    inventory, policy, trace = philly(REPLAY_DAYS)
    kept: list[Snapshot] = []
    cycles = 0

    def engine(snapshot: Snapshot, policy: Policy) -> Decisions:
        nonlocal cycles
        cycles += 1
        if cycles % REPLAY_EVERY == 0:
            kept.append(snapshot)
        return schedule(snapshot, policy)

    Simulator(build_nodes(inventory), policy, trace, engine).run()
    return policy, kept, cycles


def _passes(snapshots: list[Snapshot], policy: Policy, reps: int) -> tuple[float, float, int, int]:
    """Best wall and CPU seconds of a pass over the snapshots, and the binds and
    preemptions one pass decides."""
    best = best_cpu = float("inf")
    binds = preempted = 0
    for _ in range(reps):
        binds = preempted = 0
        start, cpu = time.perf_counter(), time.process_time()
        for snapshot in snapshots:
            decisions = schedule(snapshot, policy)
            binds += len(decisions.binds)
            preempted += len(decisions.preemptions)
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best, best_cpu, binds, preempted


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, padding=(0, 0))
    for col in columns:
        table.add_column(col, justify="right", no_wrap=True, overflow="fold")
    return table


def run_replay(console: Console) -> None:
    with console.status(f"contended replay: {REPLAY_DAYS:.0f} days, Philly-shaped"):
        policy, snapshots, cycles = _replay_snapshots()
        wall, cpu, binds, preempted = _passes(snapshots, policy, 3)
        before = sum(_before(s, policy) for s in snapshots)
    n = max(1, len(snapshots))
    table = _table(
        "fairpool engine: cycles of a contended replay",
        "snapshots",
        "of cycles",
        "nodes",
        "mean pending",
        "mean running",
        "before CPU ms/cycle",
        "ms/cycle",
        "CPU ms/cycle",
        "placed",
        "preempted",
    )
    table.add_row(
        f"{len(snapshots):,}",
        f"{cycles:,}",
        f"{len(snapshots[0].nodes):,}" if snapshots else "0",
        f"{sum(len(s.pending) for s in snapshots) / n:,.1f}",
        f"{sum(len(s.running) for s in snapshots) / n:,.1f}",
        f"{before * 1000 / n:,.2f}",
        f"{wall * 1000 / n:,.2f}",
        f"{cpu * 1000 / n:,.2f}",
        f"{binds:,}",
        f"{preempted:,}",
    )
    print_table(console, table)
    console.print(
        f"the first {REPLAY_DAYS:.0f} days of bench_fairness's Philly-shaped trace, every "
        f"{REPLAY_EVERY}th cycle's snapshot; ms/cycle: best of 3 passes over them, per "
        "snapshot, sentences not written (the simulator never reads them); before: the "
        "reference engine (tests/reference_engine), one pass; "
        "placed / preempted: what one pass decides"
    )


def run(console: Console) -> None:
    run_cases(console)
    run_replay(console)


def run_cases(console: Console) -> None:
    policy = _policy()
    table = _table(
        "fairpool engine: one scheduling cycle",
        "nodes",
        "pending",
        "gang?",
        "before CPU ms",
        "cold ms",
        "cycle ms",
        "CPU ms",
        "daemon ms",
        "placed",
        "placed/s",
        "preempted",
        "peak MiB",
        "meter ms",
    )
    seconds_per_pod: dict[int, float] = {}
    for case in _cases():
        nodes, pending = case.nodes, case.pending
        estimate = seconds_per_pod.get(nodes, 0.0) * pending
        if case.kind == "no" and estimate > BUDGET_S:
            table.add_row(
                f"{nodes:,}",
                f"{pending:,}",
                case.kind,
                f"skipped: ~{estimate:.0f} s estimated from the smaller run",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
            )
            continue
        snap = Snapshot(
            now=100_000.0, nodes=_nodes(nodes), running=case.running, pending=tuple(case.jobs)
        )
        with console.status(f"{nodes:,} nodes x {pending:,} pending ({case.kind})"):
            cold, decisions = _cold(snap, policy, 1)
            reps = 3 if cold < 2.0 else 1
            if reps > 1:
                cold = min(cold, _cold(snap, policy, reps - 1)[0])
            best, cpu, _ = _time(snap, policy, reps)
            daemon_cold, daemon_warm = _as_daemon(snap, policy, reps)
            peak = _peak(snap, policy)
            before = _before(_new_nodes(snap), policy)
            meter = _meter(snap, policy, decisions, reps)
        if case.kind == "no":
            seconds_per_pod[nodes] = max(seconds_per_pod.get(nodes, 0.0), best / pending)
        placements = len(decisions.binds)
        table.add_row(
            f"{nodes:,}",
            f"{pending:,}",
            case.kind,
            f"{before * 1000:,.1f}",
            f"{cold * 1000:,.1f}",
            f"{best * 1000:,.1f}",
            f"{cpu * 1000:,.1f}",
            f"{daemon_cold * 1000:,.1f} / {daemon_warm * 1000:,.1f}",
            f"{placements:,}",
            f"{placements / best:,.0f}" if best > 0 else "-",
            f"{len(decisions.preemptions):,}",
            f"{peak / 2**20:,.1f}",
            f"{meter * 1000:,.1f}",
        )
    print_table(console, table)
    console.print(
        "before CPU ms: the reference engine (tests/reference_engine), one cycle; "
        "cold ms: best of 3 first schedule() calls on new copies of the snapshot's jobs "
        "and a new nodes tuple (no work kept from an earlier cycle); cycle ms: best wall "
        "time of 3 repeated calls (1 for a cycle over 2 s) after an untimed one, on the "
        "same jobs and the same nodes tuple, as the daemon's steady cycle (its view keeps "
        "one nodes tuple while no node changes); CPU ms: its process "
        "CPU time (tells a slow cycle from a busy machine); daemon ms: cold / cycle ms "
        "with fairpool run's interpreter settings (scheduler/k8s/runtime.py); "
        "placed/s = placed pods / cycle wall time; peak MiB: tracemalloc peak during the cycle; "
        "meter ms: best of the same repetitions of the daemon's wait-meter reading of the "
        "cycle (scheduler/sim/after_cycle.py, worked out at the first /metrics scrape "
        "after each cycle, in the HTTP thread)"
    )
    console.print(
        "targets: > 10,000 placements/s at 5,000 nodes x 10,000 pending; <= 0.5 s at 5,000 "
        "nodes x 50,000 pending; <= 1.5 s and <= 2 GiB at 10,000 nodes x 100,000 pending; "
        f"load average {os.getloadavg()[0]:.1f} (the machine is shared); engine build: "
        f"{kind()} (scheduler/engine_build.py)"
    )
