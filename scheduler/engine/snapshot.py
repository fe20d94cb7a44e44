"""What the engine sees: an immutable snapshot of nodes, running pods and pending jobs.

Adapters (the Kubernetes cluster cache, the simulator) build snapshots; the engine never
reads anything else. Times are float seconds since the Unix epoch (UTC) in the daemon and
seconds since trace start in the simulator: the engine only ever subtracts them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Literal

TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str = ""
    effect: TaintEffect = "NoSchedule"


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str = ""
    """Empty key with operator Exists tolerates every taint."""
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str = ""
    effect: str = ""
    """Empty effect tolerates every effect."""


@dataclass(frozen=True, slots=True)
class SelectorRequirement:
    key: str
    operator: SelectorOperator
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    owner: str | None
    """Member from the `fairpool.io/owner` label; None for nodes nobody contributed."""
    gpu_model: str | None
    """From `nvidia.com/gpu.product`."""
    gpus: int
    """Allocatable `nvidia.com/gpu`."""
    cpu_milli: int
    memory_bytes: int
    max_pods: int = 110
    topology_domain: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    ready: bool = True
    unschedulable: bool = False


@dataclass(frozen=True, slots=True)
class PodSpec:
    """What one pod asks for, and where it may go."""

    gpus: int
    cpu_milli: int = 0
    memory_bytes: int = 0
    gpu_model: str | None = None
    """A required GPU model (from nodeSelector `nvidia.com/gpu.product` or the trace)."""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    affinity: tuple[tuple[SelectorRequirement, ...], ...] = ()
    """Required node affinity: OR over terms, AND within a term; empty = anywhere."""
    tolerations: tuple[Toleration, ...] = ()


@dataclass(frozen=True, slots=True)
class RunningPod:
    """A pod bound to a node. Pods fairpool did not schedule still take resources;
    their member is None unless their namespace maps to one."""

    uid: str
    name: str
    namespace: str
    member: str | None
    job_id: str
    """The gang name, or the pod's own uid for a single pod."""
    node: str
    spec: PodSpec
    priority: int = 0
    started_at: float = 0.0
    """When it started: the daemon reads its `status.startTime`, before the kubelet
    writes that its bind (`PodScheduled`); the simulator, its bind."""
    terminating: bool = False
    """Being evicted: its resources are still taken until it is gone."""
    scheduled_by_fairpool: bool = True
    reclaims: int = 0
    """Times its job was reclaimed before this run (see `PendingJob.reclaims`)."""
    checkpointable: bool | None = None
    """Its job resumes where it stopped when preempted (the `fairpool.io/checkpointable`
    annotation, or the trace's column); None: as its member's `checkpointable` says."""
    submitted_at: float = 0.0
    """When its job was submitted (`PendingJob.submitted_at`): with the priority, its
    place in its member's queue, which decides whether an older waiting job of the
    member may take its GPUs back (see `reclaim.Overtaken`)."""

    def resumes(self, checkpointable_members: AbstractSet[str]) -> bool:
        """It resumes where it stopped when preempted: its own setting, else its
        member's (`checkpointable_members`: the members whose jobs do)."""
        own = self.checkpointable
        return self.member in checkpointable_members if own is None else own


@dataclass(frozen=True, slots=True)
class PendingPod:
    uid: str
    name: str
    namespace: str
    spec: PodSpec
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class PendingJob:
    """A unit of admission: one pod, or a gang that must start whole."""

    job_id: str
    member: str
    pods: tuple[PendingPod, ...]
    min_member: int = 1
    """Pods that must be placed together: the gang size (1 for a single pod). When fewer
    pods than this exist yet, the job waits."""
    priority: int = 0
    submitted_at: float = 0.0
    nominated_nodes: Mapping[str, str] = field(default_factory=dict)
    """pod uid -> node reserved for it by an earlier reclaim."""
    reclaims: int = 0
    """Times the job was reclaimed (preempted by a reclaim) so far. At the policy's
    `maxReclaimsPerJob`, or from the first when it restarts from zero, it is placed
    beyond its entitlement only on its member's own, unowned and quiet owners' nodes."""
    reclaimed_at: float | None = None
    """When the job was last reclaimed (its preemption was decided); None when it never
    was or the time is not known (a job's reclaims are counted but its time was lost).
    A job so kept (see `reclaims`) that is bigger than its member's entitlement is kept
    only for the policy's `reclaimLimitWindowSeconds` after it."""
    checkpointable: bool | None = None
    """The job resumes where it stopped when preempted (see `RunningPod.checkpointable`);
    None: as its member's `checkpointable` says."""

    @property
    def is_gang(self) -> bool:
        return self.min_member > 1

    def resumes(self, checkpointable_members: AbstractSet[str]) -> bool:
        """It resumes where it stopped when preempted: its own setting, else its
        member's (`checkpointable_members`: the members whose jobs do)."""
        own = self.checkpointable
        return self.member in checkpointable_members if own is None else own

    @property
    def gpus(self) -> int:
        return sum(p.spec.gpus for p in self.pods)


@dataclass(frozen=True, slots=True)
class Snapshot:
    now: float
    nodes: tuple[Node, ...]
    running: tuple[RunningPod, ...]
    pending: tuple[PendingJob, ...]
    usage_history: Mapping[str, float] = field(default_factory=dict)
    """Member -> decayed past GPU-seconds (half-life from the policy), lowering heavy
    users' part of the surplus. Empty when the policy sets no half-life."""


def same_items(last: Sequence[object], now: Sequence[object]) -> bool:
    """The same objects in the same order. Snapshot parts are never changed once made,
    so what the engine derived from `last` holds for `now` (its caches ask this)."""
    if len(last) != len(now):
        return False
    # A loop, not all() over a generator: compiled, it runs several times faster. No
    # `strict=True` (the lengths are equal): a call with a keyword goes through Python.
    for before, item in zip(last, now):  # noqa: SIM110, B905
        if before is not item:
            return False
    return True


CHANGED_MOST = 4
"""What the engine derives from the running pods alone (`allocation`, `placement`) is
moved from the last cycle's when the pods that came or went are at most 1 /
`CHANGED_MOST` of the pods before and after together (a quarter); else worked out anew."""


def changed_pods(
    last: tuple[RunningPod, ...], running: tuple[RunningPod, ...]
) -> tuple[list[RunningPod], list[RunningPod]] | None:
    """The pods gone since `last` and the pods come, by identity (a pod that changed, a
    preemption marking it terminating, is one gone and one come), or None when more
    changed than `CHANGED_MOST` allows. Walks both in step:
    the simulator keeps its pods in bind order, so the survivors come in the same
    order. Whatever the order, every pod of `last` is matched by the same pod or gone,
    and every pod of `running` matched or come, so the counts that follow are exact;
    only the work varies. What the engine derives from the running pods alone is moved
    by these from one cycle to the next (`allocation`, `placement`)."""
    most = (len(last) + len(running)) // CHANGED_MOST
    gone: list[RunningPod] = []
    came: list[RunningPod] = []
    i = j = 0
    n, m = len(last), len(running)
    while i < n and j < m:
        before, now = last[i], running[j]
        if before is now:
            i += 1
            j += 1
            continue
        gone.append(before)
        i += 1
        if before.uid == now.uid:
            came.append(now)
            j += 1
        if len(gone) + len(came) > most:
            return None
    gone.extend(last[i:])
    came.extend(running[j:])
    if len(gone) + len(came) > most:
        return None
    return gone, came
