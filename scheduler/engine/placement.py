"""Where a pod may go and where it goes best, over the free capacity of the cycle.

Filters (a node failing any of them is never a target):
- the node is Ready and schedulable (cordoned nodes keep their pods but get no new ones);
- GPU model (`PodSpec.gpu_model`), nodeSelector, required node affinity (OR over terms,
  AND within a term; In, NotIn, Exists, DoesNotExist) against the node's labels, which are
  completed with `nvidia.com/gpu.product`, `fairpool.io/owner` and
  `kubernetes.io/hostname` when the adapter did not copy them;
- taints: every NoSchedule and NoExecute taint must be tolerated; PreferNoSchedule
  taints only lower the score;
- free `nvidia.com/gpu`, CPU, memory and pod slots (all running pods count, terminating
  ones included, since they hold their resources until they are gone).

Score (lowest wins, compared in this order):
1. tier: the member's own nodes first (owner-first: work within entitlement goes home);
   then every other node alike, nodes of no member and other members' nodes together,
   so that bin-packing decides among them. Cautious work (see below) has a third tier:
   other members' nodes whose owner is likely to want them back (`ClusterState.wanted`)
   come last, so that a reclaim there throws away as little as possible.
2. untolerated PreferNoSchedule taints;
3. GPU bin-packing: fewest free GPUs left on the node after the placement (most
   allocated first), so small pods fill the holes of busy nodes and whole nodes stay
   free for gangs and large pods;
4. node name.

Cautious work is a job that borrows (it takes its member beyond its entitlement) and
that is not checkpointable (its own setting, else its member's): reclaiming it throws
its progress away. The engine cannot know how long a job will run, so every such job
counts as long.

Nodes with identical owner, model, labels (hostname aside), taints and topology domain
form an equivalence class; the static filters run once per class and pod shape. For each
pod shape a `View` indexes the admitted nodes by owner, penalty and free GPUs, and is
kept up to date on every placement, so placing a pod never scans the cluster.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

from scheduler.engine.entitlement import UNKNOWN_MODEL
from scheduler.engine.reach import never_detail
from scheduler.engine.snapshot import (
    Node,
    PendingPod,
    PodSpec,
    RunningPod,
    SelectorRequirement,
    Snapshot,
    Taint,
    Toleration,
    changed_pods,
    same_items,
)

HOSTNAME = "kubernetes.io/hostname"
GPU_PRODUCT = "nvidia.com/gpu.product"
OWNER_LABEL = "fairpool.io/owner"

TIER_OWN, TIER_SHARED, TIER_WANTED = 0, 1, 2

SpecKey = tuple[object, ...]


def spec_key(spec: PodSpec) -> SpecKey:
    """A hashable identity of a pod shape (requests and constraints)."""
    selector = spec.node_selector
    return (
        spec.gpus,
        spec.cpu_milli,
        spec.memory_bytes,
        spec.gpu_model,
        # Most pods select nothing: no list to build and sort (a cold cycle keys every job).
        tuple(sorted(selector.items())) if selector else (),
        spec.affinity,
        spec.tolerations,
    )


def tolerates(tolerations: Iterable[Toleration], taint: Taint) -> bool:
    for tol in tolerations:
        if tol.effect and tol.effect != taint.effect:
            continue
        if tol.key == "":
            if tol.operator == "Exists":
                return True
            continue
        if tol.key != taint.key:
            continue
        if tol.operator == "Exists" or tol.value == taint.value:
            return True
    return False


def effective_labels(node: Node) -> dict[str, str]:
    labels = dict(node.labels)
    if node.gpu_model is not None:
        labels.setdefault(GPU_PRODUCT, node.gpu_model)
    if node.owner is not None:
        labels.setdefault(OWNER_LABEL, node.owner)
    labels.setdefault(HOSTNAME, node.name)
    return labels


def requirement_matches(req: SelectorRequirement, labels: Mapping[str, str]) -> bool:
    value = labels.get(req.key)
    if req.operator == "In":
        return value is not None and value in req.values
    if req.operator == "NotIn":
        return value is None or value not in req.values
    if req.operator == "Exists":
        return value is not None
    return value is None  # DoesNotExist


def labels_match(spec: PodSpec, labels: Mapping[str, str]) -> bool:
    for key, value in spec.node_selector.items():
        if labels.get(key) != value:
            return False
    if spec.affinity:
        return any(all(requirement_matches(r, labels) for r in term) for term in spec.affinity)
    return True


def uses_hostname(spec: PodSpec) -> bool:
    return HOSTNAME in spec.node_selector or any(
        r.key == HOSTNAME for term in spec.affinity for r in term
    )


def blocking_taints(taints: Iterable[Taint], tolerations: Iterable[Toleration]) -> list[Taint]:
    tols = tuple(tolerations)
    return [t for t in taints if t.effect in ("NoSchedule", "NoExecute") and not tolerates(tols, t)]


def prefer_penalty(taints: Iterable[Taint], tolerations: Iterable[Toleration]) -> int:
    tols = tuple(tolerations)
    return sum(1 for t in taints if t.effect == "PreferNoSchedule" and not tolerates(tols, t))


@dataclass(slots=True)
class NodeClass:
    cid: int
    owner: str | None
    gpu_model: str | None
    domain: str
    labels: dict[str, str]
    taints: tuple[Taint, ...]
    nodes: list[int] = field(default_factory=list)


GroupKey = tuple[str, int, str]
"""(owner or "", untolerated PreferNoSchedule taints, GPU model)."""


class View:
    """The placeable nodes admitting one pod shape, grouped by owner, PreferNoSchedule
    penalty and GPU model; each group keeps free GPUs -> node indices in name order, so
    the best node is found without scanning the cluster. A plain class: see
    `scheduler.engine.jobinfo.JobInfo`."""

    __slots__ = (
        "groups",
        "order",
        "ranked",
    )

    groups: dict[GroupKey, dict[int, list[int]]]
    order: list[GroupKey]
    ranked: dict[tuple[str, bool], list[Ranked]]
    """(member, cautious) -> the groups by (tier, penalty, group key): the order a search
    for that member's pod visits them in (the tiers depend on `ClusterState.wanted`,
    which is set before any view is built)."""

    def __init__(self) -> None:
        self.groups = {}
        self.order = []
        self.ranked = {}


Ranked = tuple[int, int, str, dict[int, list[int]]]
"""(tier, penalty, owner or "", the group's free GPUs -> node indices)."""
_TIER_PENALTY = itemgetter(0, 1)
"""A ranked group's sort key (a function written in C: the sort calls it per group)."""


Res = tuple[int, int, int, int]
"""(gpus, cpu milli, memory bytes, pod slots)."""


def spec_res(spec: PodSpec) -> Res:
    return (spec.gpus, spec.cpu_milli, spec.memory_bytes, 1)


class _Static:
    """What only depends on the nodes: order, classes and every filter result. Kept
    across cycles for the same nodes tuple (the simulator passes one tuple to every
    cycle), since the static filters are most of a small cycle's cost."""

    def __init__(self, snapshot_nodes: tuple[Node, ...]) -> None:
        nodes = sorted(snapshot_nodes, key=lambda n: n.name)
        self.nodes = nodes
        self.index = {n.name: i for i, n in enumerate(nodes)}
        self.placeable = [n.ready and not n.unschedulable for n in nodes]
        self.domain = [n.topology_domain or "" for n in nodes]
        self.model = [n.gpu_model or UNKNOWN_MODEL for n in nodes]
        self.placeable_per_model: dict[str, int] = {}
        for i, model in enumerate(self.model):
            if self.placeable[i]:
                self.placeable_per_model[model] = self.placeable_per_model.get(model, 0) + 1
        self.classes: list[NodeClass] = []
        self.node_class = [-1] * len(nodes)
        by_key: dict[tuple[object, ...], NodeClass] = {}
        for i, node in enumerate(nodes):
            if not self.placeable[i]:
                continue
            labels = effective_labels(node)
            labels.pop(HOSTNAME, None)
            key = (
                node.owner,
                node.gpu_model,
                self.domain[i],
                tuple(sorted(labels.items())),
                node.taints,
            )
            cls = by_key.get(key)
            if cls is None:
                cls = NodeClass(
                    len(self.classes),
                    node.owner,
                    node.gpu_model,
                    self.domain[i],
                    labels,
                    node.taints,
                )
                by_key[key] = cls
                self.classes.append(cls)
            cls.nodes.append(i)
            self.node_class[i] = cls.cid
        self.spec_classes: dict[SpecKey, list[int]] = {}
        self.penalty: dict[tuple[int, SpecKey], int] = {}
        self.candidates: dict[SpecKey, list[int]] = {}
        self.admitted: dict[SpecKey, frozenset[int]] = {}
        self.feasible: dict[tuple[tuple[SpecKey, ...], str], frozenset[int]] = {}
        self.slots: dict[SpecKey, dict[tuple[str, str], int]] = {}
        self.never: dict[tuple[object, ...], str] = {}


_STATIC: list[tuple[tuple[Node, ...], _Static]] = []
"""The last two node tuples seen and their static part (the entry keeps its tuple alive,
so the identity check cannot be fooled by a recycled id)."""


def _static(nodes: tuple[Node, ...]) -> _Static:
    for seen, found in list(_STATIC):
        if seen is nodes:
            return found
    found = _Static(nodes)
    _STATIC[:] = [(nodes, found), *_STATIC[:1]]
    return found


class _Used:
    """What one snapshot's running pods leave free on each node, before a cycle changes
    anything: kept from one cycle to the next (`_used`). Never changed once made. A
    plain class: see `scheduler.engine.jobinfo.JobInfo`."""

    __slots__ = ("free", "nodes", "running", "term", "term_pods")

    def __init__(
        self,
        nodes: list[Node],
        running: tuple[RunningPod, ...],
        free: tuple[list[int], list[int], list[int], list[int]],
        term: list[tuple[int, int, int, int]],
        term_pods: int,
    ) -> None:
        self.nodes = nodes
        self.running = running
        self.free = free
        """Free GPUs, CPU, memory and pod slots per node."""
        self.term = term
        """Resources of terminating pods per node."""
        self.term_pods = term_pods


_LAST_USED: list[_Used] = []
"""The last one made (the entry holds its pods and nodes, so the identity checks cannot
be fooled by a recycled id)."""


def _used(index: Mapping[str, int], nodes: list[Node], running: tuple[RunningPod, ...]) -> _Used:
    """What the running pods leave free per node (`nodes`: the static part's, in name
    order, which the node indexes follow): from the last snapshot's, moved by the
    pods gone and come (`changed_pods`: most cycles bind or free a few of hundreds), or
    counted over every pod."""
    last = _LAST_USED[0] if _LAST_USED else None
    if last is not None and last.nodes is nodes:
        if same_items(last.running, running):
            return last
        changed = changed_pods(last.running, running)
        if changed is not None:
            gone, came = changed
            free = (list(last.free[0]), list(last.free[1]), list(last.free[2]), list(last.free[3]))
            term = list(last.term)
            term_pods = last.term_pods
            for sign, pods in ((1, gone), (-1, came)):
                term_pods += _count(index, pods, sign, free, term)
            made = _Used(nodes, running, free, term, term_pods)
            _LAST_USED[:] = [made]
            return made
    free = (
        [n.gpus for n in nodes],
        [n.cpu_milli for n in nodes],
        [n.memory_bytes for n in nodes],
        [n.max_pods for n in nodes],
    )
    term = [(0, 0, 0, 0)] * len(nodes)
    term_pods = _count(index, running, -1, free, term)
    made = _Used(nodes, running, free, term, term_pods)
    _LAST_USED[:] = [made]
    return made


def _count(
    index: Mapping[str, int],
    pods: Iterable[RunningPod],
    sign: int,
    free: tuple[list[int], list[int], list[int], list[int]],
    term: list[tuple[int, int, int, int]],
) -> int:
    """Give back (`sign` 1) or take (-1) the pods' resources on their nodes in `free`,
    and count the terminating ones in `term` the other way; the change in terminating
    pods."""
    gpu, cpu, mem, slots = free
    terminating = 0
    for pod in pods:
        i = index.get(pod.node)
        if i is None:
            continue
        s = pod.spec
        gpu[i] += sign * s.gpus
        cpu[i] += sign * s.cpu_milli
        mem[i] += sign * s.memory_bytes
        slots[i] += sign
        if pod.terminating:
            terminating -= sign
            t = term[i]
            term[i] = (
                t[0] - sign * s.gpus,
                t[1] - sign * s.cpu_milli,
                t[2] - sign * s.memory_bytes,
                t[3] - sign,
            )
    return terminating


def pods_when_empty(node: Node, spec: PodSpec) -> int:
    """Pods of `spec` the node takes if nothing ran there: its pod slots, GPUs, CPU and
    memory, each divided by what one pod asks."""
    pods = node.max_pods
    for have, need in (
        (node.gpus, spec.gpus),
        (node.cpu_milli, spec.cpu_milli),
        (node.memory_bytes, spec.memory_bytes),
    ):
        if need > 0:
            pods = min(pods, have // need)
    return max(0, pods)


class ClusterState:
    """Free capacity of every node during one cycle, with the indexes placement needs."""

    def __init__(self, snapshot: Snapshot) -> None:
        static = _static(snapshot.nodes)
        nodes = static.nodes
        self.nodes = nodes
        self.index = static.index
        self.placeable = static.placeable
        self.domain = static.domain
        self.model = static.model
        """GPU model per node (`entitlement.UNKNOWN_MODEL` when unlabelled)."""
        self.placeable_per_model = static.placeable_per_model
        self.classes = static.classes
        self.node_class = static.node_class
        self._spec_classes = static.spec_classes
        self._penalty = static.penalty
        self._candidates = static.candidates
        self._admitted = static.admitted
        self._feasible = static.feasible
        self._slots = static.slots
        self._never = static.never
        used = _used(self.index, nodes, snapshot.running)
        self.free_gpu = list(used.free[0])
        self.free_cpu = list(used.free[1])
        self.free_mem = list(used.free[2])
        self.free_pods = list(used.free[3])
        self.term: list[list[int]] = [list(t) for t in used.term]
        """Resources of terminating pods not yet promised to a nominated job."""
        self.term_pods = used.term_pods
        """Terminating pods (counted in `term`) over all nodes."""
        self.wanted: frozenset[tuple[str, str]] = frozenset()
        """(owner, GPU model) whose owner is likely to want its nodes of that model back;
        set by the cycle from the owners' demand and usage history."""
        self.holds: dict[str, list[tuple[int, Res, Res]]] = {}
        """job id -> (node, taken from terminating, taken from free)."""
        self.version = 0
        """Counts the changes of capacity during the cycle (binds, holds, releases,
        preemptions, hence nominations and moves too): an outcome found at one version
        holds while it is unchanged."""
        self._keys: dict[int, tuple[PodSpec, SpecKey]] = {}
        """id(spec) -> (spec, its key): a pod shape's key is a deep tuple, built once per
        spec object and cycle (the entry keeps the spec alive, so ids are not recycled)."""
        self.class_sides: list[list[dict[int, list[int]]]] = [[] for _ in self.classes]
        """Per class, the view groups (one per pod shape) its nodes are indexed in."""
        self._views: dict[SpecKey, View] = {}
        self._feasible_of: dict[tuple[int, str], tuple[Sequence[PendingPod], frozenset[int]]] = {}
        """(id(pods), model) -> (the pods, `feasible_of`): the entry keeps the pods alive,
        so ids are not recycled."""

    def key(self, spec: PodSpec) -> SpecKey:
        """`spec_key(spec)`, computed once per spec object in the cycle."""
        found = self._keys.get(id(spec))
        if found is None:
            found = self._keys[id(spec)] = (spec, spec_key(spec))
        return found[1]

    def feasible(self, specs: Iterable[PodSpec], model: str) -> frozenset[int]:
        """Nodes of `model` that could take a pod of one of the shapes (static: kept as
        long as the nodes are)."""
        by_key = {self.key(s): s for s in specs}
        # One shape (every pod of most gangs): nothing to order.
        if len(by_key) == 1:
            keys = tuple(by_key.items())
        else:
            keys = tuple(sorted(by_key.items(), key=lambda kv: repr(kv[0])))
        cache_key = (tuple(k for k, _ in keys), model)
        found = self._feasible.get(cache_key)
        if found is None:
            found = frozenset(
                i for _, spec in keys for i in self.candidate_nodes(spec) if self.model[i] == model
            )
            self._feasible[cache_key] = found
        return found

    def feasible_of(self, pods: Sequence[PendingPod], model: str) -> frozenset[int]:
        """`feasible` for a job's pods, found once per job and model in the cycle: a
        claimant asks for consolidation's test, reclaim's room and a move's search, and
        its shapes are deep tuples that `feasible` hashes anew at every call."""
        key = (id(pods), model)
        found = self._feasible_of.get(key)
        if found is None or found[0] is not pods:
            found = self._feasible_of[key] = (pods, self.feasible((p.spec for p in pods), model))
        return found[1]

    # -- views ---------------------------------------------------------------------------
    def view(self, spec: PodSpec, key: SpecKey | None = None) -> View:
        """The view of the pod shape (`key`: its `spec_key`, when the caller knows it)."""
        if key is None:
            key = self.key(spec)
        view = self._views.get(key)
        if view is None:
            view = View()
            host = uses_hostname(spec)
            for cid in self.classes_for(spec):
                cls = self.classes[cid]
                gk = (cls.owner or "", self.penalty(cid, spec), cls.gpu_model or UNKNOWN_MODEL)
                side = view.groups.get(gk)
                if side is None:
                    side = view.groups[gk] = {}
                self.class_sides[cid].append(side)
                for i in cls.nodes:
                    if not host or self.node_admits(i, spec):
                        _insert(side, max(0, self.free_gpu[i]), i)
            view.order = sorted(view.groups)
            self._views[key] = view
        return view

    # -- capacity changes ----------------------------------------------------------------
    def take(self, i: int, res: Res) -> None:
        self.version += 1
        g = res[0]
        cid = self.node_class[i]
        if g != 0 and cid >= 0:
            free = self.free_gpu[i]
            old = free if free > 0 else 0
            new = free - g if free > g else 0
            if old != new:
                # Move the node from its old free-GPU level to the new one in every view
                # that holds it (a hostname-bound view may not).
                for side in self.class_sides[cid]:
                    bucket = side.get(old)
                    if bucket is None:
                        continue
                    k = bisect_left(bucket, i)
                    if k < len(bucket) and bucket[k] == i:
                        del bucket[k]
                        if not bucket:
                            del side[old]
                        _insert(side, new, i)
        self.free_gpu[i] -= g
        self.free_cpu[i] -= res[1]
        self.free_mem[i] -= res[2]
        self.free_pods[i] -= res[3]

    def give(self, i: int, res: Res) -> None:
        self.take(i, (-res[0], -res[1], -res[2], -res[3]))

    def hold(self, job_id: str, i: int, res: Res) -> None:
        """Reserve `res` on node i for a nominated job: terminating capacity first, then
        free capacity (never below zero: what is missing simply is not there yet)."""
        t = self.term[i]
        from_term = tuple(min(max(0, t[k]), res[k]) for k in range(4))
        for k in range(4):
            t[k] -= from_term[k]
        self.term_pods -= from_term[3]
        free = (self.free_gpu[i], self.free_cpu[i], self.free_mem[i], self.free_pods[i])
        from_free = tuple(max(0, min(free[k], res[k] - from_term[k])) for k in range(4))
        self.take(i, from_free)  # type: ignore[arg-type]
        self.holds.setdefault(job_id, []).append((i, from_term, from_free))  # type: ignore[arg-type]

    def release(self, job_id: str) -> None:
        for i, from_term, from_free in self.holds.pop(job_id, []):
            t = self.term[i]
            for k in range(4):
                t[k] += from_term[k]
            self.term_pods += from_term[3]
            self.give(i, from_free)

    def idle_gpus(self, nodes: Iterable[int]) -> int:
        """Free GPUs on the nodes (a node over-committed by terminating pods counts 0)."""
        free = self.free_gpu
        return sum([g for i in nodes if (g := free[i]) > 0])

    def add_terminating(self, i: int, res: Res) -> None:
        """A pod on node i was just preempted: its resources will come free."""
        self.version += 1
        t = self.term[i]
        for k in range(4):
            t[k] += res[k]
        self.term_pods += res[3]

    # -- filters -------------------------------------------------------------------------
    def classes_for(self, spec: PodSpec) -> list[int]:
        """Classes whose static properties admit this pod shape."""
        key = self.key(spec)
        found = self._spec_classes.get(key)
        if found is None:
            found = []
            for cls in self.classes:
                if spec.gpu_model is not None and cls.gpu_model != spec.gpu_model:
                    continue
                if blocking_taints(cls.taints, spec.tolerations):
                    continue
                if not uses_hostname(spec) and not labels_match(spec, cls.labels):
                    continue
                found.append(cls.cid)
            self._spec_classes[key] = found
        return found

    def node_admits(self, i: int, spec: PodSpec) -> bool:
        """Per-node part of the filter (only hostname-bound shapes need it)."""
        if not uses_hostname(spec):
            return True
        return labels_match(spec, effective_labels(self.nodes[i]))

    def penalty(self, cid: int, spec: PodSpec) -> int:
        key = (cid, self.key(spec))
        found = self._penalty.get(key)
        if found is None:
            found = prefer_penalty(self.classes[cid].taints, spec.tolerations)
            self._penalty[key] = found
        return found

    def tier(self, cid: int, member: str, cautious: bool) -> int:
        cls = self.classes[cid]
        return self.owner_tier(cls.owner or "", cls.gpu_model, member, cautious)

    def owner_tier(self, owner: str, model: str | None, member: str, cautious: bool) -> int:
        """The tier of a node of `owner` ("" for none) and `model` for `member`'s work."""
        if owner == member:
            return TIER_OWN
        if cautious and owner and (owner, model or UNKNOWN_MODEL) in self.wanted:
            return TIER_WANTED
        return TIER_SHARED

    def node_tier(self, i: int, member: str, cautious: bool = False) -> int:
        return self.tier(self.node_class[i], member, cautious)

    def room_when_empty(self, i: int, res: Res) -> bool:
        """Node i could take a pod of `res` if nothing ran there (its whole capacity)."""
        n = self.nodes[i]
        return (
            n.gpus >= res[0]
            and n.cpu_milli >= res[1]
            and n.memory_bytes >= res[2]
            and n.max_pods >= 1
        )

    def slots_when_empty(self, spec: PodSpec) -> dict[tuple[str, str], int]:
        """(GPU model, owner or "") -> how many pods of `spec` the nodes admitting it could
        take if nothing ran there (static: kept as long as the nodes are)."""
        key = self.key(spec)
        found = self._slots.get(key)
        if found is None:
            found = {}
            nodes, model = self.nodes, self.model
            for i in self.candidate_nodes(spec):
                n = nodes[i]
                pods = pods_when_empty(n, spec)
                if pods > 0:
                    where = (model[i], n.owner or "")
                    found[where] = found.get(where, 0) + pods
            self._slots[key] = found
        return found

    def never_held(
        self,
        spec: PodSpec,
        pods: int,
        member: str,
        model: str | None,
        lenders: tuple[tuple[str, int], ...],
    ) -> str:
        """`reach.never_detail` for a job of `pods` pods of `spec` (static: kept as long as
        the nodes are, per member, model asked and the policy's lending limits)."""
        key = (self.key(spec), pods, member, model, lenders)
        found = self._never.get(key)
        if found is None:
            found = never_detail(
                member, pods, spec.gpus, model, self.slots_when_empty(spec), dict(lenders)
            )
            self._never[key] = found
        return found

    def fits(self, i: int, res: Res, extra: Mapping[int, Res] | None = None) -> bool:
        e = extra.get(i) if extra else None
        if e is None:
            return (
                self.free_gpu[i] >= res[0]
                and self.free_cpu[i] >= res[1]
                and self.free_mem[i] >= res[2]
                and self.free_pods[i] >= res[3]
            )
        return (
            self.free_gpu[i] + e[0] >= res[0]
            and self.free_cpu[i] + e[1] >= res[1]
            and self.free_mem[i] + e[2] >= res[2]
            and self.free_pods[i] + e[3] >= res[3]
        )

    def room(self, i: int, res: Res, extra: Mapping[int, Res] | None = None) -> int:
        """How many pods of shape `res` fit on node i."""
        e = extra.get(i) if extra else None
        free = (self.free_gpu[i], self.free_cpu[i], self.free_mem[i], self.free_pods[i])
        if e is not None:
            free = (free[0] + e[0], free[1] + e[1], free[2] + e[2], free[3] + e[3])
        n = free[3]
        for k in range(3):
            if res[k] > 0:
                n = min(n, free[k] // res[k])
        return max(0, n)

    # -- single pod fast path ------------------------------------------------------------
    def best_node(
        self,
        spec: PodSpec,
        member: str,
        allowed: Mapping[str, int] | None = None,
        cautious: bool = False,
        view: View | None = None,
    ) -> int | None:
        """The best node for one pod, or None. `allowed` maps an owner to the GPUs it may
        still lend (owners absent from it are unlimited); `cautious`: the pod borrows and
        would lose its progress if reclaimed (see the module's score); `view`: the shape's
        view, when the caller has it at hand."""
        g = spec.gpus
        cpu, mem = spec.cpu_milli, spec.memory_bytes
        free_cpu, free_mem, free_pods = self.free_cpu, self.free_mem, self.free_pods
        best: tuple[int, int, int, int] | None = None
        if view is None:
            view = self.view(spec)
        ranked = view.ranked.get((member, cautious))
        if ranked is None:
            ranked = view.ranked[(member, cautious)] = self._rank(view, member, cautious)
        for tier, pen, owner, side in ranked:
            if best is not None and (tier, pen) > best[:2]:
                break  # every later group ranks lower still
            if allowed and owner and owner != member and allowed.get(owner, g) < g:
                continue
            if not side:
                continue
            for level in sorted(side):
                if level < g:
                    continue
                head = (tier, pen, level - g)
                if best is not None and head > best[:3]:
                    break
                found = -1
                same = best is not None and head == best[:3]
                for i in side[level]:
                    if same and best is not None and i > best[3]:
                        break
                    if free_cpu[i] >= cpu and free_mem[i] >= mem and free_pods[i] >= 1:
                        found = i
                        break
                if found >= 0:
                    cand = (tier, pen, level - g, found)
                    if best is None or cand < best:
                        best = cand
                    break
        return None if best is None else best[3]

    def _rank(self, view: View, member: str, cautious: bool) -> list[Ranked]:
        out = [
            (self.owner_tier(gk[0], gk[2], member, cautious), gk[1], gk[0], view.groups[gk])
            for gk in view.order
        ]
        # Stable: groups of equal tier and penalty stay in group-key order.
        out.sort(key=_TIER_PENALTY)
        return out

    def admits(self, spec: PodSpec) -> Callable[[int], bool]:
        """Membership test for `candidate_nodes(spec)`."""
        key = self.key(spec)
        found = self._admitted.get(key)
        if found is None:
            found = frozenset(self.candidate_nodes(spec))
            self._admitted[key] = found
        return found.__contains__

    def candidate_nodes(self, spec: PodSpec) -> list[int]:
        """Every placeable node admitting the shape, in name order (static: cached)."""
        key = self.key(spec)
        out = self._candidates.get(key)
        if out is None:
            out = []
            host = uses_hostname(spec)
            for cid in self.classes_for(spec):
                nodes = self.classes[cid].nodes
                out.extend(i for i in nodes if not host or self.node_admits(i, spec))
            out.sort()
            self._candidates[key] = out
        return out


def _insert(side: dict[int, list[int]], level: int, i: int) -> None:
    bucket = side.get(level)
    if bucket is None:
        side[level] = [i]
    elif bucket[-1] < i:
        bucket.append(i)
    else:
        insort(bucket, i)
