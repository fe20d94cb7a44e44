"""The fairness-blind baseline: what a pool could run instead of fairpool.

One FIFO queue over every member's jobs (submission order, then job id; priorities and
members ignored), greedy backfill (a job that does not fit now is passed over, and a
later one that fits starts: no reservation), best-fit packing (each pod on the usable
node with the fewest free GPUs that still fits it, gangs whole or not at all), no
preemption, and no policy limit (`max_gpus`, `lending_limit`, borrowing off) applies.

It is a scheduling function with the engine's signature, so the simulator replays a
trace with it on the same simulated cluster, and the same metrics code measures it:
the rows of fairpool and of the baseline are comparable figure by figure. The shares
it returns are the engine's (`compute_shares`), so fair share and Jain's index mean the
same for both; they decide nothing here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime

from policies.model import Policy
from scheduler.engine.cycle import compute_shares
from scheduler.engine.decisions import Bind, Decisions
from scheduler.engine.snapshot import Node, PendingJob, PodSpec, Snapshot
from scheduler.sim.pipeline import HOUR_S, Study, build_study
from scheduler.sim.simulator import Simulator
from scheduler.sim.standalone import StandaloneResult
from scheduler.traces.model import Trace

Free = dict[str, list[int]]
"""node -> [GPUs, CPU milli, memory bytes, pod slots] still free."""


def _usable(node: Node) -> bool:
    return node.ready and not node.unschedulable and not node.taints


def _free(snapshot: Snapshot) -> Free:
    free = {
        n.name: [n.gpus, n.cpu_milli, n.memory_bytes, n.max_pods]
        for n in snapshot.nodes
        if _usable(n)
    }
    for pod in snapshot.running:
        left = free.get(pod.node)
        if left is not None:
            _take(left, pod.spec)
    return free


def _take(left: list[int], spec: PodSpec) -> None:
    left[0] -= spec.gpus
    left[1] -= spec.cpu_milli
    left[2] -= spec.memory_bytes
    left[3] -= 1


def _fits(left: list[int], spec: PodSpec) -> bool:
    return (
        left[0] >= spec.gpus
        and left[1] >= spec.cpu_milli
        and left[2] >= spec.memory_bytes
        and left[3] >= 1
    )


def best_fit(
    job: PendingJob, free: Free, model_of: Mapping[str, str | None]
) -> dict[str, str] | None:
    """pod uid -> node for every pod of the job, packing each on the fullest node that
    fits it (ties: node name); None, and `free` untouched, when some pod fits nowhere."""
    trial = {name: list(left) for name, left in free.items()}
    placement: dict[str, str] = {}
    for pod in job.pods:
        spec = pod.spec
        best: tuple[int, str] | None = None
        for name, left in trial.items():
            if spec.gpu_model is not None and model_of[name] != spec.gpu_model:
                continue
            if _fits(left, spec) and (best is None or (left[0], name) < best):
                best = (left[0], name)
        if best is None:
            return None
        _take(trial[best[1]], spec)
        placement[pod.uid] = best[1]
    free.update(trial)
    return placement


def fifo_backfill(snapshot: Snapshot, policy: Policy) -> Decisions:
    """One cycle of the baseline (module docstring)."""
    free = _free(snapshot)
    model_of = {n.name: n.gpu_model for n in snapshot.nodes}
    owner_of = {n.name: n.owner for n in snapshot.nodes}
    binds: list[Bind] = []
    failed: set[tuple[str | None, int, int]] = set()
    for job in sorted(snapshot.pending, key=lambda j: (j.submitted_at, j.job_id)):
        if not job.pods:
            continue
        spec = job.pods[0].spec
        shape = (spec.gpu_model, len(job.pods), spec.gpus)
        if shape in failed:
            continue  # free space only shrinks within a cycle
        placement = best_fit(job, free, model_of)
        if placement is None:
            failed.add(shape)
            continue
        for uid, node in placement.items():
            binds.append(Bind(uid, node, job.job_id, job.member, owner_of[node], False))
    return Decisions(binds=tuple(binds), shares=compute_shares(snapshot, policy))


def run_baseline(
    nodes: tuple[Node, ...],
    policy: Policy,
    trace: Trace,
    start: datetime,
    standalone: dict[str, StandaloneResult] | None,
) -> Study:
    """The baseline's study. The standalone replays are the counterfactual of each
    member alone on its own nodes, which does not depend on how the pool schedules, so
    the caller passes fairpool's (`Study.standalone`) rather than replaying them again."""
    start_epoch = start.timestamp()
    offset = start_epoch - math.floor(start_epoch / HOUR_S) * HOUR_S
    result = Simulator(nodes, policy, trace, fifo_backfill, start_offset_s=offset).run()
    return build_study(policy, start, result, standalone)
