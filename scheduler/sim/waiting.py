"""What the cluster does while work waits, measured by the simulator at every instant.

Two figures need the cluster's state (nodes, free GPUs, nominations), not just the
allocation timeline, so the simulator feeds a `WaitMeter` after each instant's events
and cycle; the state then holds until the next instant, so each figure is a rate
integrated over that stretch. The cost is O(nodes + distinct pod sizes + members) per
instant (O(distinct pending job shapes) more when that set changed, or a limit applies),
next to the engine's O(pending x nodes).

Idle while waiting (docs/metrics.md): at an instant where some job is pending, every
idle GPU (held by no pod) is counted once, to one cause, decided per GPU model m:

1. `held`: free GPUs of a node reserved by a nomination (a reclaim or drain whose victims
   are still terminating), up to the GPUs the nominated pods ask for on that node.
2. The other free GPUs of model m, F in total, go to one cause for the whole model, from
   the pending jobs that could run on m (their model is m, or any model), each looked at
   with g = its GPUs, against F and the free GPUs node by node:
   - `other_model`: no pending job can run on m;
   - `placeable`: some job fits node by node and no limit stops it (the engine left it
     waiting: ordering, a gang's topology, a policy it applies beyond these limits);
   - `kept_off_wanted`: only jobs the last cycle kept off nodes whose owners are likely
     to want them back fit node by node with no limit stopping them (what the rule that
     protects reclaimed work leaves idle; `State.kept_off_wanted`);
   - `limits`: some job with g <= F is stopped by a limit: its member's `max_gpus`, the
     GPUs other owners may still lend it (`lending_limit`), or, with borrowing off, its
     entitlement;
   - `fragmentation`: some job has g <= F but its pods do not fit node by node;
   - `too_few_free`: every job asks for more than F.
   The first that applies, in that order, wins: a cause is named only when removing it
   alone would let a waiting job use those GPUs.

Time to entitlement: per (member, model), an episode runs while the member has a
pending job that could use the member's entitlement: its GPUs fit within
`entitlement - allocated` of that model, and its pods fit the model's nodes with only
what the member could never take back left on them: its own pods, other members' pods
within their entitlement on their own nodes, and pods fairpool does not schedule (`Kept`).
Its length is how long the pool kept the member from what it is owed; an episode still
open at the end of the replay ends there. A job that its member's own running work
keeps out (its small jobs scattered over its own nodes) is not owed: no reclaim or move
for it could change that, and standalone it would wait just the same.

Owed past the allowance: an episode longer than the allowance (grace period + minimum
runtime + 60 s, what a reclaim takes at most) gets the cause of its wait, from what held
the member's own nodes of that model at the allowance's end (`OWED_CAUSES`, decided by
the simulator, which knows every pod): the state observed last before that instant.
"""

from __future__ import annotations

import math
from bisect import insort
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from policies.model import Policy
from scheduler.engine.snapshot import Node, PendingJob, RunningPod
from scheduler.engine.terms import terms_of

IDLE_CAUSES = (
    "held",
    "placeable",
    "kept_off_wanted",
    "limits",
    "fragmentation",
    "too_few_free",
    "other_model",
)
FRAGMENTATION_CLAIMABLE = "fragmentation_claimable"
"""Of the `fragmentation` GPUs, those idle while some job blocked by it could claim them:
its member below its fair share of the model (as the last cycle computed it) or the job
within its member's entitlement, the waits consolidation is for. The rest waited only
for jobs of members at or above their fair share, for which nothing is moved. A part of
`fragmentation`, not a cause of its own."""

OWED_CAUSES = (
    "reclaim_limit",
    "reclaim_limit_bigger",
    "others_entitlement",
    "borrowed",
    "elsewhere",
)
"""What held a member's own nodes of a GPU model when its owed episode ran past the
allowance, the first that applies: another member's job at `maxReclaimsPerJob` (never a
victim again) that fits its member's entitlement of the model (it came as cautious
borrowing while the owner was quiet); such a job bigger than that entitlement (it
borrows wherever there is room once `reclaimLimitWindowSeconds` have passed, so it may
hold a busy owner's nodes); another member's work while that member is within its
entitlement (never reclaimed, moved only within the consolidation bound); other
members' borrowed work (reclaimable, but not taken yet: minimum runtimes, victims that
may not go below their entitlement, a drain); none of these (the member's nodes hold only
its own work, or the wait is for room beyond them: a purchased entitlement, a gang bigger
than its nodes)."""

BUDGET_CAUSE = "disruption_budget"
"""The daemon's one cause beyond `OWED_CAUSES`: another member's pod that reclaim or
consolidation would take, whose eviction a PodDisruptionBudget refuses (the simulator
has no budgets)."""
DAEMON_OWED_CAUSES = (*OWED_CAUSES[:2], BUDGET_CAUSE, *OWED_CAUSES[2:])
"""The causes `fairpool_member_owed_blocker` reads, in `owed_blocker`'s order."""

OWED_SLACK_S = 60.0
"""Beyond grace period + minimum runtime, what an owed episode may last before it counts
as past the allowance (the time a cycle, a bind and a start take, generously)."""


def owed_allowance_s(policy: Policy) -> float:
    """How long an owed episode may last before it is past the allowance: what a reclaim
    takes at most (the grace period, and the minimum runtime unless the policy preempts
    below it), plus `OWED_SLACK_S`."""
    sharing = policy.sharing
    min_runtime = 0 if sharing.preempt_below_min_runtime else sharing.min_runtime_seconds
    return sharing.reclaim_grace_period_seconds + min_runtime + OWED_SLACK_S


OwedBlocker = Callable[[str, str], str]
"""(member, model) -> the `OWED_CAUSES` entry for the current state."""


def owed_blocker(
    foreign: Iterable[RunningPod],
    model: str,
    job_gpus: Callable[[RunningPod], int],
    allocated: Mapping[tuple[str, str], int],
    entitlement: Mapping[tuple[str, str], int],
    reclaim_limit: int | None,
    refused: Collection[str] = (),
) -> str:
    """What holds a member's own nodes of `model` (`OWED_CAUSES`, the first that
    applies), from the other members' pods on them (`foreign`); pods in their grace
    period are on their way out. `job_gpus`: all the GPUs of a pod's job; `allocated`:
    GPUs held per (member, model), pods in their grace period included. The simulator
    asks it at each owed episode's allowance, the daemon for each cycle it reads
    (`fairpool_member_owed_blocker`), also telling it the pods whose eviction a
    PodDisruptionBudget refuses (`refused`: then `BUDGET_CAUSE`, after the limit)."""
    bigger = within = borrowed = budget = False
    for pod in foreign:
        if pod.terminating:
            continue
        key = (pod.member or "", model)
        if reclaim_limit is not None and pod.reclaims >= reclaim_limit:
            # The two rules that put a job at the limit on a busy owner's node differ:
            # one that fits came while the owner was quiet, a bigger one comes anyway
            # once its window has passed.
            if job_gpus(pod) <= entitlement.get(key, 0):
                return "reclaim_limit"
            bigger = True
        elif pod.uid in refused:
            budget = True
        elif allocated.get(key, 0) <= entitlement.get(key, 0):
            within = True
        else:
            borrowed = True
    if bigger:
        return "reclaim_limit_bigger"
    if budget:
        return BUDGET_CAUSE
    if within:
        return "others_entitlement"
    return "borrowed" if borrowed else "elsewhere"


Shape = tuple[str, str | None, int, int]
"""(member, GPU model or None for any, pods, GPUs per pod) of a pending job."""


def job_shape(job: PendingJob) -> Shape:
    """A gang whose pods are not all created yet (the daemon's, never the simulator's)
    counts at its full size: it cannot start with fewer."""
    spec = job.pods[0].spec if job.pods else None
    model = spec.gpu_model if spec is not None else None
    gpus_per_pod = spec.gpus if spec is not None else 0
    return job.member, model, max(len(job.pods), job.min_member), gpus_per_pod


def remember_fits(
    shape: Shape, by_model: dict[str, ModelNodes], fits_empty: dict[tuple[str, int, int], bool]
) -> None:
    """Fill `fits_empty` ((model, pods, GPUs per pod) -> its pods fit the model's empty
    nodes) for each model the shape may run on, what `owed_keys` reads."""
    _, job_model, pods, per_pod = shape
    for model, nodes in by_model.items():
        if job_model is not None and job_model != model:
            continue
        key = (model, pods, per_pod)
        if key not in fits_empty:
            fits_empty[key] = slots(nodes.gpus, per_pod) >= pods


def slots(free: list[int], gpus_per_pod: int) -> int:
    """How many pods of `gpus_per_pod` GPUs fit node by node into `free`."""
    if gpus_per_pod <= 0:
        return 1 << 30
    if gpus_per_pod == 1:
        return sum(f for f in free if f > 0)
    return sum(f // gpus_per_pod for f in free if f >= gpus_per_pod)


class ModelNodes:
    """One GPU model's nodes as the meter reads them at every instant: their names, GPUs
    and owners ("" for none) side by side, in the nodes' order. Compiled (`make
    engine`), reading a field of a `Node` goes through Python's attribute protocol (the
    engine's classes live in another library); these lists are read directly."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        self.names = [n.name for n in nodes]
        self.gpus = [n.gpus for n in nodes]
        self.owners = [n.owner or "" for n in nodes]


def nodes_by_model(nodes: Iterable[Node]) -> dict[str, ModelNodes]:
    """The nodes with GPUs of a known model, per model, in the order given."""
    found: dict[str, list[Node]] = {}
    for node in nodes:
        if node.gpu_model is not None and node.gpus > 0:
            found.setdefault(node.gpu_model, []).append(node)
    return {model: ModelNodes(of_model) for model, of_model in found.items()}


@dataclass(frozen=True)
class Limits:
    """What stops a member from holding more GPUs, besides free capacity."""

    max_gpus: dict[str, int]
    lending_limit: dict[str, int]
    borrowing: bool

    @staticmethod
    def of(policy: Policy) -> Limits:
        """The limits as the engine reads them (`scheduler.engine.terms`)."""
        terms = terms_of(policy)
        return Limits(
            max_gpus=dict(terms.max_gpus),
            lending_limit=dict(terms.lending_limit),
            borrowing=terms.borrowing,
        )


@dataclass(frozen=True)
class Kept:
    """GPUs per node that a waiting member could never get back (module docstring)."""

    everyone: dict[str, int]
    """node -> GPUs of pods every member must work around: other members' pods within
    their entitlement on their own nodes, pods of no member."""
    own: dict[str, dict[str, int]]
    """member -> node -> GPUs of its other pods (not terminating)."""

    def free_for(self, member: str, nodes: ModelNodes) -> list[int]:
        """Per node, the GPUs the member could have if everything else were taken back."""
        own = self.own.get(member, {})
        everyone = self.everyone
        names, gpus = nodes.names, nodes.gpus
        # Indexed, not `zip(..., strict=True)`: compiled, a call with a keyword goes
        # through Python's call protocol.
        return [
            gpus[k] - everyone.get(names[k], 0) - own.get(names[k], 0) for k in range(len(names))
        ]


class KeptBook:
    """`Kept`, moved pod by pod as the simulator binds, marks terminating (a terminating
    pod is on its way out) and frees them, rather than worked out from every running pod
    whenever one changes (on a contended replay that is nearly every instant). Pods of
    no member and each member's pods on its own nodes within its entitlement count for
    everyone, the member's other pods for it alone. Those own-node pods are kept per
    (member, model) in fill order (start time, then uid, as `engine.allocation` fills
    the entitlement); a pod coming or going there fills that one group again. The
    tables are read at once by `owed_keys`: a `Kept` from `kept` shows them as they are
    now. A plain class: see `scheduler.engine.jobinfo.JobInfo`."""

    def __init__(
        self,
        node_owner: dict[str, str],
        node_model: dict[str, str],
        entitlement: dict[tuple[str, str], int],
    ) -> None:
        self._owner = node_owner
        self._model = node_model
        self._entitlement = entitlement
        self.everyone: dict[str, int] = {}
        self.own: dict[str, dict[str, int]] = {}
        self._home: dict[tuple[str, str], list[tuple[float, str, str, int]]] = {}
        """(member, model) -> its pods on its own nodes: (start, uid, node, GPUs), in
        fill order."""
        self._filled: dict[tuple[str, str], tuple[list[tuple[str, int]], list[tuple[str, int]]]]
        self._filled = {}
        """(member, model) -> (node, GPUs) of its own-node pods within its entitlement
        (counted in `everyone`), and of those beyond it (in `own`)."""

    def kept(self) -> Kept:
        return Kept(self.everyone, self.own)

    def change(self, pod: RunningPod, sign: int) -> None:
        """Count a pod in (`sign` 1: bound) or out (-1: freed, or marked terminating:
        a terminating pod is never counted)."""
        gpus = pod.spec.gpus
        if gpus <= 0 or self._away(pod, gpus, sign):
            return
        member = pod.member or ""
        key = (member, self._model[pod.node])
        pods = self._home.setdefault(key, [])
        entry = (pod.started_at, pod.uid, pod.node, gpus)
        if sign > 0:
            insort(pods, entry)
        else:
            pods.remove(entry)
        self._fill(key, member, pods)

    def extend(self, pods: Iterable[RunningPod]) -> None:
        """`change(pod, 1)` for each pod, each member's own-node group filled once at the
        end rather than at every pod (a whole cluster's pods at once: `after_cycle`)."""
        touched: dict[tuple[str, str], str] = {}
        for pod in pods:
            gpus = pod.spec.gpus
            if gpus <= 0 or self._away(pod, gpus, 1):
                continue
            member = pod.member or ""
            key = (member, self._model[pod.node])
            self._home.setdefault(key, []).append((pod.started_at, pod.uid, pod.node, gpus))
            touched[key] = member
        for key, member in touched.items():
            group = self._home[key]
            group.sort()
            self._fill(key, member, group)

    def _away(self, pod: RunningPod, gpus: int, sign: int) -> bool:
        """Count a pod of no member (for everyone) or on another member's node (for its
        member alone); False for a pod on its member's own node, left to the caller."""
        node, member = pod.node, pod.member
        if member is None:
            self.everyone[node] = self.everyone.get(node, 0) + sign * gpus
            return True
        if self._owner[node] != member:
            mine = self.own.setdefault(member, {})
            mine[node] = mine.get(node, 0) + sign * gpus
            return True
        return False

    def _fill(
        self, key: tuple[str, str], member: str, pods: list[tuple[float, str, str, int]]
    ) -> None:
        everyone = self.everyone
        mine = self.own.setdefault(member, {})
        before = self._filled.get(key)
        if before is not None:
            for node, gpus in before[0]:
                everyone[node] -= gpus
            for node, gpus in before[1]:
                mine[node] -= gpus
        within: list[tuple[str, int]] = []
        beyond: list[tuple[str, int]] = []
        room = self._entitlement.get(key, 0)
        for _, _, node, gpus in pods:
            if gpus <= room:
                room -= gpus
                within.append((node, gpus))
                everyone[node] = everyone.get(node, 0) + gpus
            else:
                room = -1  # the first pod beyond the entitlement, and every later one
                beyond.append((node, gpus))
                mine[node] = mine.get(node, 0) + gpus
        self._filled[key] = (within, beyond)


@dataclass(init=False, slots=True)
class State:
    """The cluster at one instant, as the meter needs it. Its own `__init__`, not the
    dataclass one: compiled (`make engine`), the simulator makes one per instant, and the
    generated one runs interpreted (see `scheduler.engine.decisions.MemberShare`). Not
    frozen for the same reason (nothing changes one once made). Its tables are dicts,
    which compiled code reads directly (a `Mapping`'s `get` is a method call)."""

    free: dict[str, int]
    """node -> free GPUs."""
    shapes: dict[Shape, int]
    """pending job shape -> how many pending jobs have it."""
    nominated: dict[str, int]
    """node -> GPUs that nominated pending pods ask for there."""
    allocated: dict[tuple[str, str], int]
    """(member, model) -> allocated GPUs (pods in their grace period included)."""
    lent: dict[str, int]
    """owner -> GPUs of other members' pods on its nodes, over all models."""
    kept: Callable[[], Kept] | None
    """What waiting members could never get back, computed when an owed key needs it
    (None: not known, only the empty nodes are checked)."""
    fair: dict[tuple[str, str], float]
    """(member, model) -> fair share, from the last engine cycle (for
    `FRAGMENTATION_CLAIMABLE`; missing: 0)."""
    shapes_version: int | None
    """Changes whenever a shape appears in `shapes` or leaves it (None: not known):
    what the meter derives from the set of shapes alone holds while it stays."""
    kept_off_wanted: frozenset[Shape]
    """The shapes of `shapes` all of whose jobs the last cycle kept off nodes whose
    owners are likely to want them back (`Decisions.kept_off_wanted`)."""

    def __init__(
        self,
        free: dict[str, int],
        shapes: dict[Shape, int],
        nominated: dict[str, int],
        allocated: dict[tuple[str, str], int],
        lent: dict[str, int],
        kept: Callable[[], Kept] | None = None,
        fair: dict[tuple[str, str], float] | None = None,
        shapes_version: int | None = None,
        kept_off_wanted: frozenset[Shape] = frozenset(),
    ) -> None:
        self.free = free
        self.shapes = shapes
        self.nominated = nominated
        self.allocated = allocated
        self.lent = lent
        self.kept = kept
        self.fair = {} if fair is None else fair
        self.shapes_version = shapes_version
        self.kept_off_wanted = kept_off_wanted


@dataclass(frozen=True)
class ShapeIndex:
    """The pending shapes as the figures read them when no limit applies, built once per
    set of shapes: an arrival, bind or completion of a job whose shape stays pending
    leaves the set as it is (about half the instants the meter works its figures out at,
    on the simulator benchmark's replays at loads 0.6 and 1.2)."""

    sizes: dict[str, dict[int, int]]
    """model -> GPUs per pod -> the fewest pods of a shape with pods that size that may
    run on the model (a job fits node by node when some size's fewest fit)."""
    smallest: dict[str, dict[str, int]]
    """model -> member -> GPUs of the member's smallest job that may run on the model."""
    owed: dict[tuple[str, str], list[tuple[int, int, int]]]
    """(member, model) -> (GPUs, pods, GPUs per pod) of the member's jobs that may use
    the model and fit its empty nodes, smallest first (`owed_keys`)."""

    @staticmethod
    def of(
        shapes: Iterable[Shape],
        models: tuple[str, ...],
        fits_empty: dict[tuple[str, int, int], bool],
    ) -> ShapeIndex:
        sizes: dict[str, dict[int, int]] = {}
        smallest: dict[str, dict[str, int]] = {}
        owed: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
        for member, job_model, pods, per_pod in shapes:
            gpus = pods * per_pod
            for model in models if job_model is None else (job_model,):
                size = sizes.setdefault(model, {})
                size[per_pod] = min(size.get(per_pod, pods), pods)
                mine = smallest.setdefault(model, {})
                mine[member] = min(mine.get(member, gpus), gpus)
                if gpus > 0 and fits_empty.get((model, pods, per_pod), False):
                    owed.setdefault((member, model), []).append((gpus, pods, per_pod))
        for found in owed.values():
            found.sort()
        return ShapeIndex(sizes, smallest, owed)


def _claims(
    member: str,
    model: str,
    gpus: int,
    state: State,
    entitlement: dict[tuple[str, str], int],
) -> bool:
    """The job could claim GPUs of the model: it keeps its member within its entitlement,
    or the member is below its fair share (`FRAGMENTATION_CLAIMABLE`)."""
    key = (member, model)
    held = state.allocated.get(key, 0)
    return held + gpus <= entitlement.get(key, 0) or held < state.fair.get(key, 0.0) - 1e-9


def idle_by_cause(
    state: State,
    nodes_by_model: dict[str, ModelNodes],
    entitlement: dict[tuple[str, str], int],
    limits: Limits,
    index: ShapeIndex | None = None,
    by_model: dict[str, dict[str, int]] | None = None,
) -> dict[str, int]:
    """Idle GPUs per cause at one instant with pending work (module docstring), and
    under `FRAGMENTATION_CLAIMABLE` the part of the fragmentation's that it is. `index`:
    `state.shapes` indexed (built here when not given), read when no limit applies.
    `by_model`, when given, gets the same split per GPU model (the daemon's gauge: the
    simulator sums over models and passes none)."""
    out = dict.fromkeys((*IDLE_CAUSES, FRAGMENTATION_CLAIMABLE), 0)
    held_total = 0
    limited = bool(limits.lending_limit or limits.max_gpus) or not limits.borrowing
    member_total: dict[str, int] = {}
    if limited:
        for (member, _), gpus in state.allocated.items():
            member_total[member] = member_total.get(member, 0) + gpus
    elif index is None:
        index = ShapeIndex.of(state.shapes, tuple(nodes_by_model), {})
    all_free, nominated = state.free, state.nominated
    for model, nodes in nodes_by_model.items():
        names = nodes.names
        free = [all_free[name] for name in names]
        held_here = 0
        if nominated:
            for i, name in enumerate(names):
                held = min(free[i], nominated.get(name, 0))
                held_here += held
                free[i] -= held
        held_total += held_here
        total = 0
        for f in free:
            total += f
        if by_model is not None:
            mine = by_model[model] = dict.fromkeys(IDLE_CAUSES, 0)
            mine["held"] = held_here
        if total <= 0:
            continue
        if index is None or limited:
            cause, claimable = _cause_within_limits(
                model, nodes, free, total, state, member_total, entitlement, limits
            )
        else:
            cause, claimable = _cause(model, free, total, state, entitlement, index)
        named = "other_model" if cause is None else cause
        out[named] += total
        if cause == "fragmentation" and claimable:
            out[FRAGMENTATION_CLAIMABLE] += total
        if by_model is not None:
            by_model[model][named] += total
    out["held"] = held_total
    return out


def _cause(
    model: str,
    free: list[int],
    total: int,
    state: State,
    entitlement: dict[tuple[str, str], int],
    index: ShapeIndex,
) -> tuple[str | None, bool]:
    """The cause of a model's `total` idle GPUs when no limit applies (None: no pending
    job can run on it), and whether that is fragmentation some job could claim: with no
    limit a job that fits node by node is placeable, and of the jobs a member could
    claim with, its smallest is the likeliest (`_claims` only gets easier with fewer
    GPUs)."""
    sizes = index.sizes.get(model)
    if not sizes:
        return None, False
    if any(slots(free, per_pod) >= pods for per_pod, pods in sizes.items()):
        if state.kept_off_wanted and not _fits_unkept(model, free, state):
            return "kept_off_wanted", False
        return "placeable", False
    smallest = index.smallest[model]
    if min(smallest.values()) > total:
        return "too_few_free", False
    claimable = any(
        gpus <= total and _claims(member, model, gpus, state, entitlement)
        for member, gpus in smallest.items()
    )
    return "fragmentation", claimable


def _fits_unkept(model: str, free: list[int], state: State) -> bool:
    """Some pending job that may run on the model, not kept off wanted nodes, fits the
    free GPUs node by node (asked only when some job does)."""
    kept_shapes = state.kept_off_wanted
    slots_of: dict[int, int] = {}  # a few pod sizes for many shapes
    for shape in state.shapes:
        _, job_model, pods, per_pod = shape
        if job_model is not None and job_model != model:
            continue
        room = slots_of.get(per_pod)
        if room is None:
            room = slots_of[per_pod] = slots(free, per_pod)
        if room >= pods and shape not in kept_shapes:
            return True
    return False


def _cause_within_limits(
    model: str,
    nodes: ModelNodes,
    free: list[int],
    total: int,
    state: State,
    member_total: dict[str, int],
    entitlement: dict[tuple[str, str], int],
    limits: Limits,
) -> tuple[str | None, bool]:
    """`_cause` for a policy with a lending limit, a cap or borrowing off: job by job."""
    free_by_owner: dict[str, int] = {}
    owners = nodes.owners
    for k in range(len(owners)):
        f = free[k]
        if f:
            free_by_owner[owners[k]] = free_by_owner.get(owners[k], 0) + f
    flags = {"placeable": False, "kept_off_wanted": False, "limits": False, "fragmentation": False}
    kept_shapes = state.kept_off_wanted
    candidates = claimable = False
    # Per model, slots depend only on the pod size and reach only on the member:
    # a few distinct values for many pending shapes.
    slots_of: dict[int, int] = {}
    reach_of: dict[str, int] = {}
    for shape in state.shapes:
        member, job_model, pods, per_pod = shape
        if job_model is not None and job_model != model:
            continue
        candidates = True
        gpus = pods * per_pod
        if per_pod not in slots_of:
            slots_of[per_pod] = slots(free, per_pod)
        if member not in reach_of:
            reach_of[member] = _reach(member, state, free_by_owner, limits)
        limited = reach_of[member] < gpus or _capped(
            member, model, gpus, state, member_total, entitlement, limits
        )
        placeable = slots_of[per_pod] >= pods
        if placeable and not limited:
            if shape in kept_shapes:
                flags["kept_off_wanted"] = True
                continue
            flags["placeable"] = True
            break
        if gpus <= total and limited:
            flags["limits"] = True
        elif gpus <= total and not placeable:
            flags["fragmentation"] = True
            claimable = claimable or _claims(member, model, gpus, state, entitlement)
    if not candidates:
        return None, False
    return next((c for c, on in flags.items() if on), "too_few_free"), claimable


def _capped(
    member: str,
    model: str,
    gpus: int,
    state: State,
    member_total: dict[str, int],
    entitlement: dict[tuple[str, str], int],
    limits: Limits,
) -> bool:
    """The member's `max_gpus`, or with borrowing off its entitlement, stops the job."""
    cap = limits.max_gpus.get(member)
    if cap is not None and member_total.get(member, 0) + gpus > cap:
        return True
    held = state.allocated.get((member, model), 0)
    return not limits.borrowing and held + gpus > entitlement.get((member, model), 0)


def _reach(member: str, state: State, free_by_owner: dict[str, int], limits: Limits) -> int:
    """Free GPUs of a model the member may use: its own and unowned ones, and what each
    other owner may still lend."""
    reach = 0
    for owner, free in free_by_owner.items():
        limit = limits.lending_limit.get(owner)
        if owner == member or not owner or limit is None:
            reach += free
        else:
            reach += min(free, max(0, limit - state.lent.get(owner, 0)))
    return reach


def owed_keys(
    state: State,
    entitlement: dict[tuple[str, str], int],
    models: tuple[str, ...],
    fits_empty: dict[tuple[str, int, int], bool],
    nodes_by_model: dict[str, ModelNodes] | None = None,
    index: ShapeIndex | None = None,
) -> set[tuple[str, str]]:
    """(member, model) keys whose member has a pending job that could use its
    entitlement of that model (module docstring). With `nodes_by_model` and
    `state.kept`, the job's pods must also fit what the member could get back.
    `index`: `state.shapes` indexed with these `models` and `fits_empty` (built here when
    not given)."""
    if index is None:
        index = ShapeIndex.of(state.shapes, models, fits_empty)
    out: set[tuple[str, str]] = set()
    kept: Kept | None = None
    for key, jobs in index.owed.items():
        room = entitlement.get(key, 0) - state.allocated.get(key, 0)
        if jobs[0][0] > room:
            continue  # not even its smallest job fits within the entitlement
        if nodes_by_model is None or state.kept is None:
            out.add(key)
            continue
        if kept is None:
            kept = state.kept()
        nodes = nodes_by_model.get(key[1])
        free = [] if nodes is None else kept.free_for(key[0], nodes)
        for gpus, pods, per_pod in jobs:
            if gpus > room:
                break
            if slots(free, per_pod) >= pods:
                out.add(key)
                break
    return out


@dataclass
class WaitMeter:
    """Integrates idle-while-waiting per cause and times owed episodes (module docstring)."""

    nodes: tuple[Node, ...]
    entitlement: dict[tuple[str, str], int]
    limits: Limits
    idle_gpu_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(IDLE_CAUSES, 0.0))
    fragmentation_claimable_gpu_s: float = 0.0
    """The part of `idle_gpu_s["fragmentation"]` that was `FRAGMENTATION_CLAIMABLE`."""
    capacity_gpu_s_while_pending: float = 0.0
    """Cluster GPUs x seconds during which some job was pending."""
    entitlement_episodes: list[tuple[str, str, float, float]] = field(default_factory=list)
    """(member, model, start, end) of every owed episode."""
    allowance_s: float = math.inf
    """Episodes longer than this get a cause (module docstring)."""
    blocker: OwedBlocker | None = None
    owed_past_allowance: list[tuple[str, str, float, float, str]] = field(default_factory=list)
    """(member, model, start, end, cause) of every episode longer than `allowance_s`."""
    _cause: dict[tuple[str, str], str] = field(default_factory=dict)
    """Open episode -> its cause in the state observed last, until the allowance ends."""
    _rates: dict[str, int] = field(default_factory=dict)
    _pending: bool = False
    _since: float = 0.0
    _owed_since: dict[tuple[str, str], float] = field(default_factory=dict)
    _by_model: dict[str, ModelNodes] = field(default_factory=dict)
    _fits_empty: dict[tuple[str, int, int], bool] = field(default_factory=dict)
    _shapes_seen: set[Shape] = field(default_factory=set)
    """Shapes `_fits_empty` already holds the answers for."""
    _gpus: int = 0
    _index: tuple[int, ShapeIndex] | None = None
    """The last index built, with the `State.shapes_version` it was built at."""
    _same_as: Hashable | None = None
    """The last call's `same_as`."""

    def __post_init__(self) -> None:
        self._by_model = nodes_by_model(self.nodes)
        self._gpus = sum(sum(ns.gpus) for ns in self._by_model.values())

    def observe(self, now: float, state: State, same_as: Hashable | None = None) -> None:
        """The state from `now` on (until the next call). `same_as`: a value equal to the
        last call's only when every figure this state gives equals that call's (the
        caller's account of what changed; None: not known): the last rates and owed
        episodes then stand, and only time is accrued."""
        self._accrue(now)
        if same_as is not None and same_as == self._same_as:
            return
        self._same_as = same_as
        self._pending = bool(state.shapes)
        if not self._pending:
            self._rates = {}
            self._close(set(), now)
            return
        index = self._index_of(state)
        self._rates = idle_by_cause(state, self._by_model, self.entitlement, self.limits, index)
        owed = owed_keys(
            state, self.entitlement, tuple(self._by_model), self._fits_empty, self._by_model, index
        )
        self._close(owed, now)

    def _index_of(self, state: State) -> ShapeIndex:
        """`state.shapes` indexed, anew only when the set of shapes changed."""
        version = state.shapes_version
        if version is not None and self._index is not None and version == self._index[0]:
            return self._index[1]
        seen = self._shapes_seen
        for shape in state.shapes:
            if shape not in seen:
                seen.add(shape)
                remember_fits(shape, self._by_model, self._fits_empty)
        index = ShapeIndex.of(state.shapes, tuple(self._by_model), self._fits_empty)
        if version is not None:
            self._index = (version, index)
        return index

    def finish(self, end: float) -> None:
        self._accrue(end)
        self._close(set(), end)

    def _accrue(self, now: float) -> None:
        dt = now - self._since
        if dt > 0 and self._pending:
            self.capacity_gpu_s_while_pending += self._gpus * dt
            for cause, gpus in self._rates.items():
                if cause == FRAGMENTATION_CLAIMABLE:
                    self.fragmentation_claimable_gpu_s += gpus * dt
                else:
                    self.idle_gpu_s[cause] += gpus * dt
        self._since = max(self._since, now)

    def _close(self, owed: set[tuple[str, str]], now: float) -> None:
        for key in [k for k in self._owed_since if k not in owed]:
            start = self._owed_since.pop(key)
            self.entitlement_episodes.append((key[0], key[1], start, now))
            cause = self._cause.pop(key, None)
            if cause is not None and now - start > self.allowance_s:
                self.owed_past_allowance.append((key[0], key[1], start, now, cause))
        for key in sorted(owed):  # episodes in a reproducible order (a set's is not)
            start = self._owed_since.setdefault(key, now)
            # This state holds until the next observation: while the allowance has not
            # run out by now, it may be the state at its end.
            if self.blocker is not None and now <= start + self.allowance_s:
                self._cause[key] = self.blocker(key[0], key[1])
