"""The simulated cluster: nodes from a cluster inventory, the pods running on them and
the jobs waiting, turned into an engine `Snapshot` at every cycle.

It is the simulator's counterpart of the daemon's cluster cache: it only keeps state
and checks the engine's binds against capacity (an over-committed node is an engine
defect, raised at once rather than silently simulated).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from policies.inventory import ClusterInventory
from policies.model import Policy
from scheduler.engine.entitlement import entitlements
from scheduler.engine.snapshot import (
    Node,
    PendingJob,
    PendingPod,
    PodSpec,
    RunningPod,
    Snapshot,
    Taint,
)
from scheduler.sim.never import GIB, never_runs, pod_requests
from scheduler.sim.waiting import Shape, job_shape
from scheduler.traces.model import TraceJob

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
OWNER_LABEL = "fairpool.io/owner"
DOMAIN_LABEL = "fairpool.io/topology-domain"


class SimulationInvariantError(Exception):
    """The engine decided something the cluster cannot carry out (a defect, not input).
    An `Exception`: compiled (`make engine`), a class can derive from few built-in ones."""


@dataclass(frozen=True, slots=True)
class Capacity:
    """Static GPU capacity of a simulated cluster, per (owner, GPU model)."""

    by_owner_model: Mapping[tuple[str, str], int]
    entitlement: Mapping[tuple[str, str], int]
    """(member, model) -> the engine's entitlement (`scheduler.engine.entitlement.entitlements`):
    contribution plus purchased GPUs, the purchases carved out of the other contributors
    of that model, so the metrics measure against what the engine guarantees."""
    contribution: Mapping[tuple[str, str], int]
    models: tuple[str, ...]
    members: tuple[str, ...]

    def total(self) -> int:
        return sum(self.by_owner_model.values())


def build_nodes(inventory: ClusterInventory) -> tuple[Node, ...]:
    nodes: list[Node] = []
    for group in inventory.node_groups:
        labels = {
            **group.labels,
            OWNER_LABEL: group.owner,
            GPU_PRODUCT_LABEL: group.gpu_model,
            DOMAIN_LABEL: group.topology_domain,
        }
        taints = tuple(Taint(t.key, t.value, t.effect) for t in group.taints)
        for name in group.node_names():
            nodes.append(
                Node(
                    name=name,
                    owner=group.owner,
                    gpu_model=group.gpu_model,
                    gpus=group.gpus_per_node,
                    cpu_milli=group.cpu * 1000,
                    memory_bytes=group.memory_gi_b * GIB,
                    max_pods=group.max_pods,
                    topology_domain=group.topology_domain,
                    labels=labels,
                    taints=taints,
                )
            )
    return tuple(nodes)


def capacity_of(nodes: tuple[Node, ...], policy: Policy) -> Capacity:
    by_owner_model: dict[tuple[str, str], int] = {}
    for node in nodes:
        if node.owner is None or node.gpu_model is None:
            continue
        key = (node.owner, node.gpu_model)
        by_owner_model[key] = by_owner_model.get(key, 0) + node.gpus
    models = sorted({n.gpu_model for n in nodes if n.gpu_model is not None})
    members = policy.member_names()
    # One source of truth: the engine's own rule, so a seller of purchased GPUs is
    # measured as borrowing when it runs on all its nodes, as the engine reclaims it.
    # Simulated nodes are static and Ready, so computing it once is exact.
    engine_entitlement = entitlements(nodes, policy)
    contribution: dict[tuple[str, str], int] = {}
    entitlement: dict[tuple[str, str], int] = {}
    for member in members:
        for model in models:
            contribution[(member, model)] = by_owner_model.get((member, model), 0)
            entitlement[(member, model)] = engine_entitlement.get((member, model), 0)
    return Capacity(by_owner_model, entitlement, contribution, tuple(models), tuple(members))


def namespace_for(policy: Policy, member: str) -> str:
    """A namespace that maps back to `member` through the policy's patterns."""
    for pattern in policy.member(member).namespaces:
        candidate = pattern.replace("*", "sim").replace("?", "x")
        if policy.member_for_namespace(candidate) == member:
            return candidate
    return member


def pod_spec(job: TraceJob) -> PodSpec:
    cpu_milli, memory_bytes = pod_requests(job.gpus_per_pod)
    return PodSpec(
        gpus=job.gpus_per_pod,
        cpu_milli=cpu_milli,
        memory_bytes=memory_bytes,
        gpu_model=job.gpu_model,
    )


def pod_uids(job: TraceJob, attempt: int) -> tuple[str, ...]:
    """Pods get fresh uids on every attempt, like pods recreated after an eviction."""
    return tuple(f"{job.job_id}-a{attempt}-p{i}" for i in range(job.num_pods))


class SimCluster:
    """Nodes, running pods and pending jobs of one simulated cluster."""

    def __init__(self, nodes: tuple[Node, ...], policy: Policy) -> None:
        self.nodes = nodes
        self.node_by_name = {n.name: n for n in nodes}
        self.capacity = capacity_of(nodes, policy)
        self._namespaces = {m: namespace_for(policy, m) for m in policy.member_names()}
        self.running: dict[str, RunningPod] = {}
        self.pending: dict[str, PendingJob] = {}
        self._free_gpus = {n.name: n.gpus for n in nodes}
        self._free_cpu = {n.name: n.cpu_milli for n in nodes}
        self._free_memory = {n.name: n.memory_bytes for n in nodes}
        self._free_pods = {n.name: n.max_pods for n in nodes}
        self._specs: dict[tuple[int, str | None], PodSpec] = {}
        """One spec object per pod shape: the engine keys what it learns about a shape
        on the object, so every job of a shape shares what was learnt once."""
        self.policy = policy
        self.pending_shapes: dict[Shape, int] = {}
        """Pending jobs per shape, kept on enqueue/dequeue so the wait meter need not
        walk every pending job at every instant. Jobs that can never run are left out:
        the meters count what waiting work could use, and demand leaves them out too
        (docs/glossary.md)."""
        self.pending_gpus: dict[tuple[str, str | None], int] = {}
        """GPUs of the jobs in `pending_shapes` per (member, model they name, None when
        none), kept with it: the timeline reads them at every instant between cycles,
        where the shapes of a contended pool are a hundred or more."""
        self._never: dict[Shape, bool] = {}
        """Shape -> its jobs can never run (`scheduler.sim.never`)."""
        self.shape_changes = 0
        """Counts shapes appearing in `pending_shapes` and leaving it."""
        self.running_changes = 0
        """Counts binds, frees and pods marked terminating: what is derived from the
        running pods alone holds while it stays the same."""
        self._kept: dict[str, Shape] = {}
        """Pending jobs the last cycle kept off wanted nodes, with their shapes, until the
        job leaves the queue or the next cycle says otherwise."""
        self._kept_count: dict[Shape, int] = {}
        """Shape -> how many of its pending jobs are in `_kept`."""
        self._kept_last: frozenset[str] | None = frozenset()
        """The last cycle's `Decisions.kept_off_wanted`, while `_kept` holds exactly
        those of them that are pending (None once a job of it left the queue or was
        not pending when named: the same set again is then read anew)."""
        self._kept_only: frozenset[Shape] | None = frozenset()
        """The shapes all of whose pending jobs are kept (None: to be worked out again)."""

    def namespace(self, member: str) -> str:
        return self._namespaces.get(member, member)

    # -- pending jobs ---------------------------------------------------------------
    def enqueue(
        self,
        job: TraceJob,
        attempt: int,
        submitted_at: float,
        now: float,
        reclaimed_at: float | None = None,
    ) -> None:
        """The job waits (again): `attempt` is how often it was reclaimed so far,
        `reclaimed_at` when the last of those reclaims was decided."""
        spec = self._specs.get((job.gpus_per_pod, job.gpu_model))
        if spec is None:
            spec = self._specs[(job.gpus_per_pod, job.gpu_model)] = pod_spec(job)
        namespace = self.namespace(job.org)
        pods = tuple(
            PendingPod(uid=uid, name=uid, namespace=namespace, spec=spec, created_at=now)
            for uid in pod_uids(job, attempt)
        )
        pending = PendingJob(
            job_id=job.job_id,
            member=job.org,
            pods=pods,
            min_member=job.num_pods,
            priority=job.priority,
            submitted_at=submitted_at,
            reclaims=attempt,
            reclaimed_at=reclaimed_at,
            checkpointable=job.checkpointable,
        )
        self.pending[job.job_id] = pending
        shape = job_shape(pending)
        never = self._never.get(shape)
        if never is None:
            never = self._never[shape] = bool(never_runs((job,), self.nodes, self.policy))
        if never:
            return
        waiting = self.pending_shapes.get(shape, 0)
        if not waiting:
            self.shape_changes += 1
        self.pending_shapes[shape] = waiting + 1
        self._count_pending(shape, 1)
        if shape in self._kept_count:
            self._kept_only = None  # a job of a kept shape that is not kept (yet)

    def nominate(self, job_id: str, nodes: Mapping[str, str]) -> None:
        job = self.pending.get(job_id)
        # A nomination renewed as it was keeps the job object: the engine reuses what it
        # learnt from the same pending jobs.
        if job is not None and job.nominated_nodes != nodes:
            self.pending[job_id] = replace(job, nominated_nodes=dict(nodes))

    def dequeue(self, job_id: str) -> PendingJob:
        job = self.pending.pop(job_id)
        shape = job_shape(job)
        if self._never[shape]:
            return job
        if job_id in self._kept:
            self._unkeep(job_id)
            self._kept_last = None  # back in the queue and named again, it is kept again
        elif shape in self._kept_count:
            self._kept_only = None  # its other jobs may all be kept now
        left = self.pending_shapes[shape] - 1
        if left:
            self.pending_shapes[shape] = left
        else:
            del self.pending_shapes[shape]
            self.shape_changes += 1
        self._count_pending(shape, -1)
        return job

    def mark_kept_off_wanted(self, job_ids: frozenset[str]) -> None:
        """The pending jobs a cycle kept off wanted nodes (`Decisions.kept_off_wanted`):
        they stay so until the next cycle (or until they leave the queue)."""
        if job_ids == self._kept_last:
            return  # most cycles: what changed since (jobs gone) is already counted
        self._kept_last = job_ids
        for job_id in [j for j in self._kept if j not in job_ids]:
            self._unkeep(job_id)
        for job_id in job_ids:
            if job_id in self._kept:
                continue
            job = self.pending.get(job_id)
            if job is None:
                self._kept_last = None  # queued later and named again, it is kept then
                continue
            shape = job_shape(job)
            if self._never[shape]:
                continue
            self._kept[job_id] = shape
            self._kept_count[shape] = self._kept_count.get(shape, 0) + 1
            self._kept_only = None

    def _unkeep(self, job_id: str) -> None:
        shape = self._kept.pop(job_id)
        left = self._kept_count[shape] - 1
        if left:
            self._kept_count[shape] = left
        else:
            del self._kept_count[shape]
        self._kept_only = None

    def kept_off_wanted_shapes(self) -> frozenset[Shape]:
        """The pending shapes whose every job the last cycle kept off wanted nodes."""
        found = self._kept_only
        if found is None:
            shapes = self.pending_shapes
            found = self._kept_only = frozenset(
                shape for shape, n in self._kept_count.items() if n == shapes.get(shape, 0)
            )
        return found

    def _count_pending(self, shape: Shape, sign: int) -> None:
        member, model, pods, per_pod = shape
        key = (member, model)
        self.pending_gpus[key] = self.pending_gpus.get(key, 0) + sign * pods * per_pod

    # -- running pods ---------------------------------------------------------------
    def bind(self, pod: PendingPod, job: PendingJob, node_name: str, now: float) -> RunningPod:
        node = self.node_by_name.get(node_name)
        if node is None:
            raise SimulationInvariantError(
                f"engine bound pod {pod.uid} to unknown node {node_name}"
            )
        spec = pod.spec
        if spec.gpu_model is not None and spec.gpu_model != node.gpu_model:
            raise SimulationInvariantError(
                f"engine bound pod {pod.uid} needing {spec.gpu_model} to {node_name} "
                f"({node.gpu_model})"
            )
        if (
            self._free_gpus[node_name] < spec.gpus
            or self._free_cpu[node_name] < spec.cpu_milli
            or self._free_memory[node_name] < spec.memory_bytes
            or self._free_pods[node_name] < 1
        ):
            raise SimulationInvariantError(
                f"engine over-committed node {node_name} with pod {pod.uid} at t={now}: "
                f"{self._free_gpus[node_name]} GPUs free, {spec.gpus} asked"
            )
        self._free_gpus[node_name] -= spec.gpus
        self._free_cpu[node_name] -= spec.cpu_milli
        self._free_memory[node_name] -= spec.memory_bytes
        self._free_pods[node_name] -= 1
        running = RunningPod(
            uid=pod.uid,
            name=pod.name,
            namespace=pod.namespace,
            member=job.member,
            job_id=job.job_id,
            node=node_name,
            spec=spec,
            priority=job.priority,
            started_at=now,
            reclaims=job.reclaims,
            checkpointable=job.checkpointable,
            submitted_at=job.submitted_at,
        )
        self.running[pod.uid] = running
        self.running_changes += 1
        return running

    def mark_terminating(self, uid: str) -> None:
        self.running[uid] = replace(self.running[uid], terminating=True)
        self.running_changes += 1

    def free(self, uid: str) -> RunningPod:
        pod = self.running.pop(uid)
        self.running_changes += 1
        self._free_gpus[pod.node] += pod.spec.gpus
        self._free_cpu[pod.node] += pod.spec.cpu_milli
        self._free_memory[pod.node] += pod.spec.memory_bytes
        self._free_pods[pod.node] += 1
        return pod

    def free_gpus(self, node_name: str) -> int:
        return self._free_gpus[node_name]

    @property
    def free_gpus_by_node(self) -> dict[str, int]:
        """node -> free GPUs, live (read only: a dict so that the wait meter's compiled
        reads are direct)."""
        return self._free_gpus

    def snapshot(self, now: float, usage_history: Mapping[str, float]) -> Snapshot:
        return Snapshot(
            now=now,
            nodes=self.nodes,
            running=tuple(self.running.values()),
            pending=tuple(self.pending.values()),
            usage_history=dict(usage_history),
        )
