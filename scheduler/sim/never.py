"""Which jobs of a trace can never run on a cluster under a policy, whatever the load
(docs/glossary.md, "can never run"), worked out from the trace alone: `fairpool trace
check --policy`, `trace synth --policy` and `fairpool simulate` name them, the standalone
replays leave out the jobs that do not fit a member's own nodes, and the simulator keeps
them out of its pending work (`SimCluster.pending_shapes`), as the engine keeps them out
of demand. Simulated pods ask for GPUs, and CPU and memory in proportion (`pod_requests`),
with no selectors or tolerations, so a node's GPUs, CPU, memory, pod slots, model and
taints (NoSchedule and NoExecute ones; a PreferNoSchedule taint only makes it less
preferred) decide whether it takes one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from policies.inventory import keeps_off_untolerating_pods
from policies.model import Policy
from scheduler.engine.entitlement import entitlements
from scheduler.engine.explain import listed, over_entitlement, over_max_gpus, plural
from scheduler.engine.mentions import plain
from scheduler.engine.reach import never_detail
from scheduler.engine.snapshot import Node
from scheduler.traces.model import TraceJob

GIB = 1 << 30
# Trace jobs only say how many GPUs they need; each simulated pod gets a small,
# GPU-proportional CPU and memory request, which binds only on nodes an inventory gives
# little CPU or memory (`pods_per_node`).
CPU_MILLI_PER_GPU = 500
MEMORY_PER_GPU = 2 * GIB


def pod_requests(gpus_per_pod: int) -> tuple[int, int]:
    """A simulated pod's CPU (millicores) and memory (bytes) requests."""
    per = max(1, gpus_per_pod)
    return per * CPU_MILLI_PER_GPU, per * MEMORY_PER_GPU


def pods_per_node(node: Node, gpus_per_pod: int) -> int:
    """How many pods of `gpus_per_pod` GPUs an empty node takes: its GPUs, and also its
    CPU, memory and pod slots (an inventory node with `cpu: 1` takes one 2-GPU pod of its
    8 GPUs; counted by GPUs alone, a job that could never start waited all month)."""
    cpu, memory = pod_requests(gpus_per_pod)
    by_gpus = node.gpus // gpus_per_pod if gpus_per_pod > 0 else node.max_pods
    return max(0, min(by_gpus, node.cpu_milli // cpu, node.memory_bytes // memory, node.max_pods))


def fits(job: TraceJob, nodes: Sequence[Node]) -> bool:
    """Whether the job's pods can all be placed on an empty set of `nodes`."""
    if job.gpus_per_pod == 0:
        return True
    usable = [n for n in nodes if _usable(job, n)]
    # An unmodelled job may use any model's nodes (the engine decides which).
    return sum(pods_per_node(n, job.gpus_per_pod) for n in usable) >= job.num_pods


def never_reached(job: TraceJob, nodes: Sequence[Node], policy: Policy) -> str | None:
    """Why the policy never lets the job's member hold the job's GPUs, or None when it
    may: beyond its `max_gpus`, beyond its entitlement with borrowing off, or beyond its
    own nodes plus what other owners may lend (`scheduler.engine.reach`, which the
    engine's explanations use too, without their marks: the reports are an operator's).
    Such a job waits forever, whatever the load."""
    member = policy.member(job.org)
    if member.max_gpus is not None and job.gpus > member.max_gpus:
        return plain(over_max_gpus(job.org, job.gpus, member.max_gpus))
    per_pod = job.gpus_per_pod
    if per_pod <= 0:
        return None
    if not policy.sharing.borrowing:
        entitled = {
            model: gpus
            for (owner, model), gpus in entitlements(nodes, policy).items()
            if owner == job.org and job.gpu_model in (None, model)
        }
        most = max(entitled.values(), default=0)
        if job.gpus > most:
            return plain(over_entitlement(job.org, job.gpus, most, job.gpu_model))
    slots: dict[tuple[str, str], int] = {}
    for n in nodes:
        if _usable(job, n):
            key = (n.gpu_model or "", n.owner or "")
            slots[key] = slots.get(key, 0) + pods_per_node(n, per_pod)
    limits = {m.name: m.lending_limit for m in policy.members if m.lending_limit is not None}
    return plain(never_detail(job.org, job.num_pods, per_pod, job.gpu_model, slots, limits)) or None


def never_runs(jobs: Iterable[TraceJob], nodes: Sequence[Node], policy: Policy) -> dict[str, str]:
    """Job id -> why the job can never run in the pool: its pods fit no set of `nodes`
    even empty, or `never_reached`. Decided once per member and shape (a trace of
    thousands of jobs has a few dozen)."""
    why: dict[tuple[str, int, int, str | None], str] = {}
    out: dict[str, str] = {}
    for job in jobs:
        shape = (job.org, job.num_pods, job.gpus_per_pod, job.gpu_model)
        reason = why.get(shape)
        if reason is None:
            if not fits(job, nodes):
                reason = "its pods fit no set of the cluster's nodes, even empty"
            else:
                reason = never_reached(job, nodes, policy) or ""
            why[shape] = reason
        if reason:
            out[job.job_id] = reason
    return out


def never_runs_lines(never: Mapping[str, str], jobs: Mapping[str, TraceJob]) -> str:
    """`never_runs` for people: one line per member, shape and reason, naming the first
    jobs of each."""
    groups: dict[tuple[str, int, int, str], list[str]] = {}
    for job_id in sorted(never):
        job = jobs[job_id]
        groups.setdefault((job.org, job.num_pods, job.gpus_per_pod, never[job_id]), []).append(
            job_id
        )
    lines = []
    for (org, pods, per_pod, reason), ids in sorted(groups.items()):
        shape = f"{plural(pods, 'pod')} of {plural(per_pod, 'GPU')}"
        lines.append(f"  {org}, {shape}: {listed(tuple(ids))}: {reason}")
    return "\n".join(lines)


def _usable(job: TraceJob, n: Node) -> bool:
    return (
        n.ready
        and not n.unschedulable
        and not keeps_off_untolerating_pods(t.effect for t in n.taints)
        and (job.gpu_model is None or n.gpu_model == job.gpu_model)
    )
