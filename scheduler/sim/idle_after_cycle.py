"""Idle while waiting, split by cause, at the end of one engine cycle: the wait meter's
reading (`waiting.idle_by_cause`) of one snapshot with its decisions carried out.

The simulator's meter reads its own cluster after each instant. The daemon has no such
cluster: it has the snapshot a cycle decided on and the decisions, which it publishes
for readers (`scheduler.k8s.published`). This module builds the meter's `State` from
those two, so the daemon's gauge `fairpool_idle_gpus_while_pending` and the
simulator's `idle_while_waiting_<cause>_gpu_h` are one definition worked out by one
function (docs/metrics.md, "Idle while waiting").

The decisions are taken as done: the bound pods hold their GPUs, the preempted ones
still hold theirs (they are in their grace period), the nominations hold the GPUs of
the nodes they name. A node that is not ready or is cordoned is no capacity anyone
could use, so its GPUs count nowhere. A job whose pods ask for no GPU cannot use an
idle GPU, and one that can never run as the cluster and policy stand (the engine's
`runnable.NeverRuns`, which the share book asks) could not use one either: neither is
work waiting for one, as in the simulator.
"""

from __future__ import annotations

from collections.abc import Iterable

from policies.model import Policy
from scheduler.engine import shares as shares_mod
from scheduler.engine.decisions import Decisions
from scheduler.engine.jobinfo import JobInfo
from scheduler.engine.runnable import NeverRuns
from scheduler.engine.snapshot import Node, PendingJob, Snapshot
from scheduler.sim.waiting import IDLE_CAUSES, Limits, Shape, State, idle_by_cause, nodes_by_model


def waiting_shape(job: PendingJob) -> Shape | None:
    """The job's shape as the meter reads it (`waiting.job_shape`), None when it asks for
    no GPU. A gang whose pods are not all created yet counts at its full size: it cannot
    start with fewer."""
    if not job.pods or job.pods[0].spec.gpus <= 0:
        return None
    spec = job.pods[0].spec
    return job.member, spec.gpu_model, max(len(job.pods), job.min_member), spec.gpus


def usable_nodes(nodes: Iterable[Node]) -> tuple[Node, ...]:
    """The nodes whose GPUs a pod could be given: ready and not cordoned."""
    return tuple(n for n in nodes if n.ready and not n.unschedulable)


def idle_after_cycle(
    snapshot: Snapshot, decisions: Decisions, policy: Policy
) -> dict[str, dict[str, int]]:
    """GPU model -> cause (`waiting.IDLE_CAUSES`) -> idle GPUs once `decisions` are
    carried out on `snapshot`; every cause 0 when no job waits. Models of the usable
    nodes only."""
    nodes = usable_nodes(snapshot.nodes)
    by_model = nodes_by_model(nodes)
    out = {model: dict.fromkeys(IDLE_CAUSES, 0) for model in by_model}
    bound_jobs = {bind.job_id for bind in decisions.binds}
    never_runs, info = _never_runs(snapshot, policy)
    shapes: dict[Shape, int] = {}
    kept_count: dict[Shape, int] = {}
    waiting: dict[str, PendingJob] = {}
    bound_gpus: dict[str, int] = {}  # pod uid -> GPUs, of the pods the cycle bound
    for job in snapshot.pending:
        if job.job_id in bound_jobs:
            for pod in job.pods:
                bound_gpus[pod.uid] = pod.spec.gpus
            continue
        shape = waiting_shape(job)
        if shape is None or never_runs.asked(info[job.job_id]):
            continue
        waiting[job.job_id] = job
        shapes[shape] = shapes.get(shape, 0) + 1
        if job.job_id in decisions.kept_off_wanted:
            kept_count[shape] = kept_count.get(shape, 0) + 1
    if not shapes:
        return out
    state = State(
        free={n.name: n.gpus for n in nodes},
        shapes=shapes,
        nominated=_nominated(snapshot, decisions, waiting),
        allocated={},
        lent={},
        fair={(s.member, s.gpu_model): s.fair_share for s in decisions.shares},
        kept_off_wanted=frozenset(s for s, n in kept_count.items() if n == shapes[s]),
    )
    _count_holders(snapshot, decisions, bound_gpus, policy, state)
    entitlement = {(s.member, s.gpu_model): s.entitlement for s in decisions.shares}
    idle_by_cause(state, by_model, entitlement, Limits.of(policy), by_model=out)
    return out


def _never_runs(snapshot: Snapshot, policy: Policy) -> tuple[NeverRuns, dict[str, JobInfo]]:
    """The engine's answers to "can this job never run?" for the snapshot, and its jobs'
    information, from the share book (which the cycle just built for the same snapshot:
    its caches hand most of it back)."""
    book = shares_mod.build(snapshot, policy)
    return book.never_runs, book.info


def _nominated(
    snapshot: Snapshot, decisions: Decisions, waiting: dict[str, PendingJob]
) -> dict[str, int]:
    """node -> GPUs the waiting jobs' nominated pods ask for there: the cycle's
    nominations, and an earlier one the cycle did not renew while one of its nodes
    still carries a terminating pod (its victims are still leaving: the simulator's
    `_drop_stale_nominations` keeps it, by the rule of `scheduler.k8s.nominator`)."""
    nodes: dict[str, dict[str, str]] = {n.job_id: n.nodes for n in decisions.nominations}
    preempted = {p.pod_uid for p in decisions.preemptions}
    leaving = {p.node for p in snapshot.running if p.terminating or p.uid in preempted}
    for job_id, job in waiting.items():
        if job_id not in nodes and not leaving.isdisjoint(job.nominated_nodes.values()):
            nodes[job_id] = dict(job.nominated_nodes)
    out: dict[str, int] = {}
    for job_id, nominated in nodes.items():
        holder = waiting.get(job_id)
        if holder is None:
            continue
        per_pod = {p.uid: p.spec.gpus for p in holder.pods}
        for uid, node in nominated.items():
            out[node] = out.get(node, 0) + per_pod.get(uid, 0)
    return out


def _count_holders(
    snapshot: Snapshot,
    decisions: Decisions,
    bound_gpus: dict[str, int],
    policy: Policy,
    state: State,
) -> None:
    """`state.free` less what the running pods and the binds hold, and `state.allocated`
    and `state.lent` from them, as the simulator counts them (pods in their grace period
    included; pods of no member under member "", lent by the member whose node they are
    on). Pods bound by others may ask for more than a node reports (a device plugin that
    shrank): none of its GPUs is idle then, but no fewer than none."""
    members = {m.name for m in policy.members}
    node_of = {n.name: n for n in snapshot.nodes}
    free, allocated, lent = state.free, state.allocated, state.lent
    holders = [(pod.member or "", pod.node, pod.spec.gpus) for pod in snapshot.running]
    holders += [(b.member, b.node, bound_gpus.get(b.pod_uid, 0)) for b in decisions.binds]
    for member, node_name, gpus in holders:
        node = node_of.get(node_name)
        if node is None or node.gpu_model is None or gpus <= 0:
            continue
        if node_name in free:
            free[node_name] = max(0, free[node_name] - gpus)
        key = (member, node.gpu_model)
        allocated[key] = allocated.get(key, 0) + gpus
        owner = node.owner or ""
        if owner != member and owner in members:
            lent[owner] = lent.get(owner, 0) + gpus
