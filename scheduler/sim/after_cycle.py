"""The wait meter's reading of one engine cycle: the GPUs idle while work waits, split by
cause (`waiting.idle_by_cause`), and the members owed their entitlement
(`waiting.owed_keys`), once the cycle's decisions are carried out on its snapshot.

The simulator's meter reads its own cluster after each instant. The daemon has no such
cluster: it has the snapshot a cycle decided on and the decisions, which it publishes
for readers (`scheduler.k8s.published`). This module builds the meter's `State` from
those two, so the daemon's gauges (`fairpool_idle_gpus_while_pending`,
`fairpool_member_owed`) and the simulator's figures (`idle_while_waiting_<cause>_gpu_h`,
time to entitlement) are one definition worked out by one function (docs/metrics.md,
"The pool's promise").

The decisions are taken as done: the bound pods hold their GPUs, the preempted ones
still hold theirs (they are in their grace period, on their way out: what a member
could get back leaves them out), the nominations hold the GPUs of the nodes they name.
A node that is not ready or is cordoned is no capacity anyone could use, so its GPUs
count nowhere. A job whose pods ask for no GPU cannot use an idle GPU, and one that can
never run as the cluster and policy stand (the engine's `runnable.NeverRuns`, which the
share book asks) could not use one either: neither is work waiting for one, as in the
simulator.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from functools import cache

from policies.model import Policy
from scheduler.engine import shares as shares_mod
from scheduler.engine.decisions import Decisions
from scheduler.engine.jobinfo import JobInfo
from scheduler.engine.runnable import NeverRuns
from scheduler.engine.snapshot import Node, PendingJob, PendingPod, RunningPod, Snapshot
from scheduler.sim.waiting import (
    IDLE_CAUSES,
    Kept,
    KeptBook,
    Limits,
    ModelNodes,
    Shape,
    State,
    idle_by_cause,
    job_shape,
    nodes_by_model,
    owed_blocker,
    owed_keys,
    remember_fits,
)


def waiting_shape(job: PendingJob) -> Shape | None:
    """The job's shape as the meter reads it (`waiting.job_shape`), None when it asks for
    no GPU."""
    if not job.pods or job.pods[0].spec.gpus <= 0:
        return None
    return job_shape(job)


def usable_nodes(nodes: Iterable[Node]) -> tuple[Node, ...]:
    """The nodes whose GPUs a pod could be given: ready and not cordoned."""
    return tuple(n for n in nodes if n.ready and not n.unschedulable)


@dataclass(frozen=True)
class Reading:
    """What the wait meter reads after one cycle."""

    idle: dict[str, dict[str, int]]
    """GPU model -> cause (`waiting.IDLE_CAUSES`) -> idle GPUs; every cause 0 when no
    job waits. Models of the usable nodes only."""
    owed: frozenset[tuple[str, str]]
    """(member, GPU model) pairs whose member has pending work that could use its
    entitlement there: an owed episode is open (docs/metrics.md, time to entitlement)."""
    blockers: dict[tuple[str, str], str] = field(default_factory=dict)
    """For each `owed` pair: what holds the member's own nodes of the model
    (`waiting.OWED_CAUSES`), the cause the simulator gives an episode still open when
    its allowance runs out; the daemon's `waiting.BUDGET_CAUSE` too."""


def read_cycle(
    snapshot: Snapshot, decisions: Decisions, policy: Policy, refused: Collection[str] = ()
) -> Reading:
    """The meter's reading once `decisions` are carried out on `snapshot`. `refused`:
    the pods whose eviction a PodDisruptionBudget refuses (the daemon's evictor knows):
    the cycle preempts them again, but they stay."""
    nodes = usable_nodes(snapshot.nodes)
    by_model = nodes_by_model(nodes)
    idle = {model: dict.fromkeys(IDLE_CAUSES, 0) for model in by_model}
    bound_jobs = {bind.job_id for bind in decisions.binds}
    never_runs, info = _never_runs(snapshot, policy)
    shapes: dict[Shape, int] = {}
    kept_count: dict[Shape, int] = {}
    waiting: dict[str, PendingJob] = {}
    bound: dict[str, PendingPod] = {}  # pod uid -> the pod, of the pods the cycle bound
    for job in snapshot.pending:
        if job.job_id in bound_jobs:
            for pod in job.pods:
                bound[pod.uid] = pod
            continue
        shape = waiting_shape(job)
        if shape is None or never_runs.asked(info[job.job_id]):
            continue
        waiting[job.job_id] = job
        shapes[shape] = shapes.get(shape, 0) + 1
        if job.job_id in decisions.kept_off_wanted:
            kept_count[shape] = kept_count.get(shape, 0) + 1
    if not shapes:
        return Reading(idle, frozenset())
    entitlement = {(s.member, s.gpu_model): s.entitlement for s in decisions.shares}
    # Only a refusal of what this cycle preempts again holds a node.
    refused = {p.pod_uid for p in decisions.preemptions}.intersection(refused)
    # The pods that stay, worked out at most once: for what members could never get back
    # (only when an owed check needs it) and for what holds an owed member's nodes.
    staying = cache(lambda: _staying(snapshot, decisions, bound, refused))
    state = State(
        free={n.name: n.gpus for n in nodes},
        shapes=shapes,
        nominated=_nominated(snapshot, decisions, waiting),
        allocated={},
        lent={},
        kept=lambda: _kept(snapshot.nodes, staying(), entitlement),
        fair={(s.member, s.gpu_model): s.fair_share for s in decisions.shares},
        kept_off_wanted=frozenset(s for s, n in kept_count.items() if n == shapes[s]),
    )
    _count_holders(snapshot, decisions, bound, policy, state)
    idle_by_cause(state, by_model, entitlement, Limits.of(policy), by_model=idle)
    models = tuple(by_model)
    owed = owed_keys(state, entitlement, models, _fits_empty(shapes, by_model), by_model)
    if not owed:
        return Reading(idle, frozenset())
    limit = policy.sharing.max_reclaims_per_job
    blockers = _blockers(
        snapshot.nodes, staying(), owed, state.allocated, entitlement, limit, refused
    )
    return Reading(idle, frozenset(owed), blockers)


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
    bound: dict[str, PendingPod],
    policy: Policy,
    state: State,
) -> None:
    """`state.free` less what the running pods and the cycle's binds hold, and
    `state.allocated` and `state.lent` from them, as the simulator counts them (pods in
    their grace period included; pods of no member under member "", lent by the member
    whose node they are on). Pods bound by others may ask for more than a node reports (a
    device plugin that shrank): none of its GPUs is idle then, but no fewer than none."""
    members = {m.name for m in policy.members}
    node_of = {n.name: n for n in snapshot.nodes}
    free, allocated, lent = state.free, state.allocated, state.lent
    holders = [(pod.member or "", pod.node, pod.spec.gpus) for pod in snapshot.running]
    for b in decisions.binds:
        pod = bound.get(b.pod_uid)
        if pod is not None:
            holders.append((b.member, b.node, pod.spec.gpus))
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


def _kept(
    nodes: Iterable[Node], staying: list[RunningPod], entitlement: dict[tuple[str, str], int]
) -> Kept:
    """What waiting members could never get back (`waiting.Kept`), filled in as the
    simulator's `KeptBook` is, from the pods that stay (`_staying`). Worked out only when
    an owed check needs it."""
    known = [n for n in nodes if n.gpu_model is not None]
    names = {n.name for n in known}
    book = KeptBook(
        {n.name: n.owner or "" for n in known},
        {n.name: n.gpu_model or "" for n in known},
        entitlement,
    )
    book.extend(p for p in staying if p.node in names)
    return book.kept()


def _staying(
    snapshot: Snapshot,
    decisions: Decisions,
    bound: dict[str, PendingPod],
    refused: Collection[str],
) -> list[RunningPod]:
    """The pods not on their way out (terminating, or preempted by this cycle unless a
    budget refuses their eviction), the cycle's binds among them, started now, with
    their job's reclaims."""
    preempted = {p.pod_uid for p in decisions.preemptions}.difference(refused)
    staying = [pod for pod in snapshot.running if not pod.terminating and pod.uid not in preempted]
    reclaims = {job.job_id: job.reclaims for job in snapshot.pending}
    for b in decisions.binds:
        pending = bound.get(b.pod_uid)
        if pending is not None:
            staying.append(
                RunningPod(
                    pending.uid,
                    pending.name,
                    pending.namespace,
                    b.member,
                    b.job_id,
                    b.node,
                    pending.spec,
                    started_at=snapshot.now,
                    reclaims=reclaims.get(b.job_id, 0),
                )
            )
    return staying


def _blockers(
    nodes: Iterable[Node],
    staying: list[RunningPod],
    owed: Iterable[tuple[str, str]],
    allocated: dict[tuple[str, str], int],
    entitlement: dict[tuple[str, str], int],
    reclaim_limit: int | None,
    refused: Collection[str] = (),
) -> dict[tuple[str, str], str]:
    """(member, model) -> `waiting.owed_blocker` for each owed pair, from the other
    members' pods that stay on the member's own nodes of the model (a job's GPUs: those
    of its pods that stay, all of a gang's when it runs whole)."""
    where = {n.name: (n.owner, n.gpu_model) for n in nodes if n.owner and n.gpu_model}
    foreign: dict[tuple[str, str], list[RunningPod]] = {}
    job_gpus: dict[str, int] = {}
    for pod in staying:
        job_gpus[pod.job_id] = job_gpus.get(pod.job_id, 0) + pod.spec.gpus
        at = where.get(pod.node)
        if at is not None and pod.member != at[0] and pod.spec.gpus > 0:
            foreign.setdefault((at[0], at[1] or ""), []).append(pod)

    def gpus_of_job(pod: RunningPod) -> int:
        return job_gpus[pod.job_id]

    return {
        key: owed_blocker(
            foreign.get(key, ()),
            key[1],
            gpus_of_job,
            allocated,
            entitlement,
            reclaim_limit,
            refused,
        )
        for key in sorted(owed)
    }


def _fits_empty(
    shapes: dict[Shape, int], by_model: dict[str, ModelNodes]
) -> dict[tuple[str, int, int], bool]:
    """(model, pods, GPUs per pod) -> the shape's pods fit the model's empty nodes, for
    the models each pending shape may run on."""
    out: dict[tuple[str, int, int], bool] = {}
    for shape in shapes:
        remember_fits(shape, by_model, out)
    return out
