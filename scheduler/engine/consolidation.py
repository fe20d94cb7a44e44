"""Consolidation: move running work so that a job blocked by fragmentation can start.

A job is blocked by [fragmentation](docs/glossary.md) when enough GPUs of its model are
free on the nodes it may use, but no set of those nodes has room for its pods. Long
small jobs scattered over many nodes keep it waiting for as long as they run, while the
GPUs between them idle. Moving a few of those small jobs to the scattered free GPUs
costs their members only the work since their last start (nothing when checkpointable)
and opens a node (or the gang's nodes) for the waiting job. Consolidation preempts them
and nominates the waiting job on the opened room, as a reclaim does; their jobs go back
to pending and start again on the free GPUs elsewhere.

The cycle tries it for a job that did not fit, just before reclaim, in the order it takes
jobs (the member furthest below its fair share first). A job is a **claimant** when:

- it waits for capacity (no limit, no hold), asks GPUs of one model, and keeps its
  member within its entitlement or its member is below its fair share there (the same
  claim as reclaim);
- its model's free GPUs on the nodes it may use are at least the GPUs it asks for.

A running job may be moved (a **victim**) only when all of this holds:

- it is scheduled by fairpool, none of its pods is terminating, it was not taken by a
  reclaim or another move of the cycle; a gang is moved whole;
- it is the claimant's member's own work, or none of its pods runs within its member's
  entitlement on its member's own nodes (an owner's guaranteed work is never moved for
  another member; a member may move its own small jobs to start its own bigger one);
- it has run `sharing.minRuntimeSeconds` (unless `preemptBelowMinRuntime`), and was
  reclaimed fewer than `sharing.maxReclaimsPerJob` times (a move counts as one);
- it fits elsewhere: its pods can be placed on what stays free once the claimant holds
  its room and the victims before it are placed; or else it holds a reclaimable pod and
  its member is above its fair share and stays at or above it, and at or above its
  entitlement, without the job (it then loses its place, as to a reclaim).

Choice (deterministic: every walk is in a fixed order):

- Each node the claimant could use is priced by what opening room for its biggest pod
  there costs: the victims on the node in the order that loses the least work
  (checkpointable first, then the fewest GPU-seconds since the last start, then the
  lowest priority, then job id: reclaim's order), taken until the pod fits. Its price is
  (GPU-seconds of work thrown away, pods moved, the claimant's own nodes first, node
  name).
- Nodes are opened cheapest first, until a what-if placement of the whole job succeeds
  on the free capacity plus what the victims free; then each victim except the last one
  added is dropped again if the job still fits without it (a minimal set).
- The fit-elsewhere rule is checked on that set; a victim that breaks it is ruled out
  and the search runs again (a few times at most).

Reclaim and a move together: a claimant within its member's entitlement may be stuck
where neither helps alone (its member's own nodes hold borrowed work and its own small
jobs, too few GPUs are free to call it fragmentation, and taking the borrowed work back
leaves no node with room either). When reclaim found nothing for it, the cycle offers it
a move that may also take what a reclaim for it could take (`taking`): other members'
jobs with a reclaimable pod on its member's own nodes, their members staying at or above
their entitlement. Their GPUs count as free for the claimant test; a victim that fits
nowhere may fit on the room taken jobs free (the fewest, least work lost first, at most
`TAKEN_WALKED` tried); a victim that fits nowhere and could be taken so is taken. Taken
jobs lose their place as to a reclaim, and are reported as one (cause `reclaim`): only
the owner's guarantee lets them go, whatever their fit elsewhere. Reclaim runs first:
when a reclaim alone makes room, nothing is moved.

Going home, in the same step: a victim of a member within its entitlement that fits
nowhere may also fit on room made by taking borrowed work on its own member's nodes,
as a reclaim within that member's entitlement would (`_owners_for`): a job whose member
is above its entitlement until then is taken whole, as reclaim takes back an owner's
own nodes (`_may_take`). These victims are looked at after the others, so that what
the claimant's member takes back comes first and keeps its floor. Such a victim runs on
the claimant's node only because its own nodes were lent when it started; leaving it
there keeps the claimant's member out of its own hardware for as long as it runs.

Bounds: a move throws away at most `sharing.maxConsolidationLossSeconds` of the
claimant's GPUs in work, taken jobs included (a node whose opening costs more is not
opened): fragmentation idles the claimant's GPUs until the small jobs end by themselves,
hours when they are long, so a move is worth the work it loses only up to a point. At most
`sharing.maxConsolidationsPerCycle` claimants get a move per cycle (0 turns consolidation
off), so one cycle never empties half the cluster.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from itertools import chain
from typing import TypeVar

from scheduler.engine.entitlement import MemberModel
from scheduler.engine.gangs import Plan, plan_job
from scheduler.engine.placement import ClusterState, Res, spec_res
from scheduler.engine.reclaim import VictimJob
from scheduler.engine.snapshot import Node, PendingJob, PendingPod, RunningPod

_EPS = 1e-9
RETRIES = 3
"""Searches per claimant after a victim broke the fit-elsewhere rule: each retry rules
one more victim out, and a claimant that needs more is better served next cycle."""
NODES_WALKED = 64
"""Nodes opened at most for one claimant: a gang needing more is not blocked by
fragmentation but by the lack of whole nodes, which moving work would not fix cheaply."""
TAKEN_WALKED = 64
"""Borrowed jobs tried at most to make room for one moved victim: each try is a what-if
placement, and a victim needing more is better left where it is."""


@dataclass(frozen=True, slots=True)
class Move:
    """What consolidation decided for one claimant."""

    victims: tuple[VictimJob, ...]
    plan: Plan
    nodes: tuple[str, ...]
    """Names of the nodes the claimant's pods go to, where the victims leave room."""
    elsewhere: frozenset[str]
    """Victim job ids whose pods fit on free GPUs elsewhere (the others' members are
    above their fair share, or are taken)."""
    taken: Mapping[str, str] = field(default_factory=dict)
    """Victim job id -> the owner it is taken back for, as a reclaim within that owner's
    entitlement would take it: borrowed work on the claimant's member's own nodes, or on
    the own nodes of a moved victim's member, to let that victim go home (see the
    module). They lose their place."""
    homes: frozenset[str] = frozenset()
    """Victim job ids that fit elsewhere only on their own member's nodes, once borrowed
    work there is taken (their member is within its entitlement)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why no move opened room for a claimant (`Consolidator.refusal`): the names of the
    nodes it may use that have no room for its biggest pod, by what keeps each closed.
    Worked out only when its explanation is read, on the cycle's final state."""

    guaranteed: tuple[str, ...] = ()
    """Held mostly by other members' work within their entitlement on their own nodes,
    which moves only for its own member."""
    guaranteed_owners: tuple[tuple[str, int], ...] = ()
    """The owners of `guaranteed`, with how many of those nodes each owns, most first
    (then by name): on a large pool the owners say more than forty node names."""
    young: tuple[str, ...] = ()
    """Held mostly by work younger than the minimum runtime."""
    young_soonest: tuple[str, float] | None = None
    """The node of `young` whose young work is all old enough first, and in how many
    seconds: when a move might open it (other rules allowing)."""
    leaving: tuple[str, ...] = ()
    """Held mostly by work already preempted in the cycle."""
    at_limit: tuple[str, ...] = ()
    """Held mostly by work reclaimed `maxReclaimsPerJob` times, never moved again."""
    held: tuple[str, ...] = ()
    """Held mostly by GPUs reserved for other waiting jobs (their nominations)."""
    started: tuple[str, ...] = ()
    """Held mostly by pods bound in this cycle (moved, at the earliest, by the next)."""
    terminating: tuple[str, ...] = ()
    """Held mostly by pods on their way out (their grace period)."""
    unscheduled: tuple[str, ...] = ()
    """Held mostly by pods fairpool does not schedule (another scheduler's, or of no
    member)."""
    fixed: tuple[str, ...] = ()
    """Held by what consolidation cannot move for any other reason (the work there that
    could move holds no GPU of the job's model)."""
    costly: tuple[str, ...] = ()
    """Could be opened, at a loss of work above the move's budget."""
    cheapest_loss_gpu_s: float = 0.0
    """The least work lost opening one of `costly`, in GPU-seconds."""
    openable: tuple[str, ...] = ()
    """Could be opened within the budget: the move failed on the rest of its rules."""
    too_few: bool = False
    """Even with every node of `openable` opened, the whole job would not fit."""
    over_budget: bool = False
    """Opening every node of `openable` would throw away more than the budget (so the
    budget may be what stopped a move needing several of them; else the rule that the
    work leaving must fit elsewhere did)."""


K = TypeVar("K")


@dataclass(slots=True)
class Holders:
    """GPUs per node of the running work a refusal names (`Consolidator.refusal`). A job
    is guaranteed when a pod of it runs within its member's entitlement on its member's
    own nodes: moved only for that member, so for a claimant of member m the others'
    guaranteed GPUs on node i are `guaranteed[i] - guaranteed_of[i, m]`, and m's own
    young or preempted guaranteed work counts as young or leaving."""

    guaranteed: dict[int, int] = field(default_factory=dict)
    guaranteed_of: dict[tuple[int, str], int] = field(default_factory=dict)
    young: dict[int, int] = field(default_factory=dict)
    """Not guaranteed, younger than the minimum runtime."""
    young_own: dict[tuple[int, str], int] = field(default_factory=dict)
    old_at: dict[int, float] = field(default_factory=dict)
    """When the last of `young`'s work on the node reaches the minimum runtime."""
    old_at_own: dict[tuple[int, str], float] = field(default_factory=dict)
    """The same for `young_own`."""
    leaving: dict[int, int] = field(default_factory=dict)
    """Not guaranteed, preempted in the cycle."""
    leaving_own: dict[tuple[int, str], int] = field(default_factory=dict)


FIXED_CAUSES = ("at_limit", "held", "started", "terminating", "unscheduled")
"""What holds a node no move may open, besides guaranteed, young and leaving work (the
`Refusal` fields of these names). A node is named for the one holding most of its GPUs,
the earlier in this order on a tie."""


def unmovable(
    state: ClusterState, running: Sequence[RunningPod], max_reclaims: int | None
) -> dict[int, dict[str, int]]:
    """Node -> GPUs per `FIXED_CAUSES` entry but nominations (`_held_for_others`): pods
    at the reclaim limit, terminating pods, pods fairpool does not schedule."""
    out: dict[int, dict[str, int]] = {}
    index = state.index
    for pod in running:
        i = index.get(pod.node)
        g = pod.spec.gpus
        if i is None or g <= 0:
            continue
        if pod.terminating:
            cause = "terminating"
        elif pod.member is None or not pod.scheduled_by_fairpool:
            cause = "unscheduled"
        elif max_reclaims is not None and pod.reclaims >= max_reclaims:
            cause = "at_limit"
        else:
            continue
        _bump(out.setdefault(i, {}), cause, g)
    return out


def _held_for_others(state: ClusterState, claimant: str) -> dict[int, int]:
    """Node -> GPUs nominations hold there for jobs other than `claimant` (its own are
    its to use)."""
    out: dict[int, int] = {}
    for job_id, holds in state.holds.items():
        if job_id != claimant:
            for i, from_term, from_free in holds:
                _bump(out, i, from_term[0] + from_free[0])
    return out


def _fixed_by(counts: Mapping[str, int], held: int, started: int) -> str:
    """The `FIXED_CAUSES` entry holding most of a node's GPUs ("fixed" when none does)."""
    both = {**counts, "held": held, "started": started}
    most = max(both.values())
    if most <= 0:
        return "fixed"
    return next(c for c in FIXED_CAUSES if both.get(c, 0) == most)


def _bump(counts: dict[K, int], key: K, n: int) -> None:
    counts[key] = counts.get(key, 0) + n


@dataclass(frozen=True, slots=True)
class Positions:
    """Members' positions, shared with the cycle (it updates `alloc` as it preempts)."""

    alloc: dict[MemberModel, int]
    fair: dict[MemberModel, float]
    entitlement: dict[MemberModel, int]


def _add(extra: dict[K, Res], i: K, r: Res, sign: int) -> None:
    e = extra.get(i, (0, 0, 0, 0))
    extra[i] = (e[0] + sign * r[0], e[1] + sign * r[1], e[2] + sign * r[2], e[3] + sign * r[3])


def _count(taken: dict[MemberModel, int], job: VictimJob) -> None:
    for m, g in job.by_model.items():
        taken[(job.member, m)] = taken.get((job.member, m), 0) + g


def _as_pending(job: VictimJob) -> tuple[PendingPod, ...]:
    return tuple(PendingPod(p.uid, p.name, p.namespace, p.spec) for p, _ in job.pods)


def _trimmed(
    state: ClusterState,
    pods: Sequence[PendingPod],
    member: str,
    chosen: list[VictimJob],
    plan: Plan,
    extra: dict[int, Res],
    lendable: Mapping[str, int],
    models: frozenset[str],
) -> Plan:
    """Drop from `chosen` (and `extra`, the room they free) each job but the last one
    added when the pods still fit without it: a minimal set. The plan that fits."""
    for victim in list(reversed(chosen[:-1])):
        for p, j in victim.pods:
            _add(extra, j, spec_res(p.spec), -1)
        trial = plan_job(state, pods, member, lendable, extra, models)
        if trial is not None:
            chosen.remove(victim)
            plan = trial
        else:
            for p, j in victim.pods:
                _add(extra, j, spec_res(p.spec), 1)
    return plan


def _guaranteed(job: VictimJob, nodes: Sequence[Node], reclaimable_pods: AbstractSet[str]) -> bool:
    """A pod of the job runs within its member's entitlement on its member's own nodes:
    the job moves only for its own member."""
    return any(nodes[i].owner == job.member and p.uid not in reclaimable_pods for p, i in job.pods)


def fragmented(
    state: ClusterState,
    job: PendingJob,
    model: str,
    takeable: int = 0,
    closed: AbstractSet[str] = frozenset(),
) -> bool:
    """Enough GPUs of the model are free on the nodes the job may use (not those of the
    `closed` owners), counting `takeable` ones a reclaim for it could take (it did not
    fit: so they are scattered). Needs no victim index, which most cycles never build."""
    feasible = state.feasible_of(job.pods, model)
    if closed:
        nodes = state.nodes
        feasible = frozenset(i for i in feasible if nodes[i].owner not in closed)
    return state.idle_gpus(feasible) + takeable >= job.gpus


class Consolidator:
    """Victim index and search for one cycle (built on first use: most cycles have no
    claimant)."""

    def __init__(
        self,
        state: ClusterState,
        jobs: Sequence[VictimJob],
        gone: set[str],
        reclaimable_pods: set[str] | frozenset[str],
        positions: Positions,
        now: float,
        min_runtime: int,
        below_min_runtime: bool,
        loss_seconds: float,
    ) -> None:
        self.state = state
        self.loss_seconds = loss_seconds
        """At most this long of the claimant's GPUs is thrown away in work per move."""
        self.gone = gone
        """Job ids already preempted in the cycle (shared with reclaim)."""
        self.pos = positions
        self.now = now
        self.min_runtime = min_runtime
        self.reclaimable = reclaimable_pods
        self.on_node: dict[int, list[VictimJob]] = {}
        """Node -> victims with a pod on it, least work lost first."""
        self.borrowed_on: dict[str, list[VictimJob]] = {}
        """Owner -> other members' jobs with a reclaimable pod on its nodes, least work
        lost first: what a reclaim within the owner's entitlement could take."""
        self.away_on: dict[str, list[VictimJob]] = {}
        """Owner -> other members' jobs on its nodes that are neither borrowed nor
        guaranteed (their members are within their entitlement, on foreign nodes): moved
        home when the owner wants its nodes (`_owners_for`)."""
        self.guaranteed: set[str] = set()
        """Jobs with a pod within their member's entitlement on their member's own nodes:
        moved only for their own member."""
        self.movable: dict[int, Res] = {}
        """Node -> what the jobs of `on_node` there that any member may move would free
        (`_could_open`)."""
        self.movable_own: dict[tuple[int, str], Res] = {}
        """(node, member) -> what the member's `guaranteed` jobs there would free: only
        that member may move them."""
        self.jobs = jobs
        self.young_ids: set[str] = set()
        """Jobs too young to move, kept only to explain a refusal (`refusal`)."""
        self._held: Holders | None = None
        self._unmovable: dict[int, dict[str, int]] | None = None
        """What holds each node nothing may move (`unmovable`), at the first refusal."""
        nodes = state.nodes
        on_node, movable, movable_own = self.on_node, self.movable, self.movable_own
        # `jobs` come in the common order (`Reclaimer.jobs`), which every list keeps.
        for job in jobs:
            if not below_min_runtime and now - job.youngest_start < min_runtime:
                self.young_ids.add(job.job_id)
                continue  # too young to move: the one rule that does not need the claimant
            member = job.member
            guaranteed = _guaranteed(job, nodes, reclaimable_pods)
            if guaranteed:
                self.guaranteed.add(job.job_id)
            pods = job.pods
            if len(pods) == 1:
                on_node.setdefault(pods[0][1], []).append(job)
            else:
                for i in sorted({i for _, i in pods}):
                    on_node.setdefault(i, []).append(job)
            for p, i in pods:
                if guaranteed:
                    _add(movable_own, (i, member), spec_res(p.spec), 1)
                else:
                    _add(movable, i, spec_res(p.spec), 1)
            on = self.borrowed_on if job.reclaimable else None if guaranteed else self.away_on
            if on is not None:
                for owner in sorted({nodes[i].owner or "" for _, i in pods}):
                    if owner and owner != member:
                        on.setdefault(owner, []).append(job)

    def takeable(self, job: PendingJob, model: str) -> int:
        """GPUs of `model` on the job's member's own nodes, that the job may use, held by
        pods of other members' jobs a reclaim within its entitlement could take, or that
        could go home to their own member's nodes (an upper bound: whether they can is
        the search's to find)."""
        state = self.state
        feasible = state.feasible_of(job.pods, model)
        away = (v for v in self.away_on.get(job.member, ()) if self._within_entitlement(v))
        return sum(
            p.spec.gpus
            for victim in chain(self.borrowed_on.get(job.member, ()), away)
            if self._may_move(victim, job.member, model, set())
            for p, i in victim.pods
            if i in feasible and state.nodes[i].owner == job.member
        )

    def find(
        self, job: PendingJob, model: str, lendable: Mapping[str, int], taking: bool = False
    ) -> Move | None:
        """A move that lets the job start, or None. `taking`: the job keeps its member
        within its entitlement, and the move may take what a reclaim for it could."""
        ruled_out: set[str] = set()
        for _ in range(RETRIES + 1):
            found = self._search(job, model, lendable, ruled_out)
            if found is None:
                return None
            victims, plan = found
            stays = self._stays(job, model, victims, plan, lendable, ruled_out, taking)
            if isinstance(stays, str):
                ruled_out.add(stays)
                continue
            fits, taken, homes = stays
            budget = job.gpus * self.loss_seconds
            ids = {v.job_id for v in victims}
            every = [*victims, *(t for t, _ in taken if t.job_id not in ids)]
            if sum(v.run_gpu_s for v in every if not v.checkpointable) > budget:
                return None
            names = tuple(sorted({self.state.nodes[i].name for _, i in plan.pods}))
            return Move(tuple(every), plan, names, fits, {t.job_id: o for t, o in taken}, homes)
        return None

    def refusal(
        self,
        job: PendingJob,
        model: str,
        lendable: Mapping[str, int],
        running: Sequence[RunningPod] = (),
        max_reclaims: int | None = None,
        started: Mapping[int, int] | None = None,
    ) -> Refusal:
        """Why no move opens room for the job, node by node, on the state as it is now
        (the explanation's: see `Refusal`). Only read, never decided on: the search
        itself stops at its first failure and keeps no reasons, which costs nothing in
        the cycles nobody asks about. `running` (the snapshot's pods), `max_reclaims`
        and `started` (node -> GPUs bound in the cycle) tell what holds a node nothing
        may move (`unmovable`); without them such a node is only `fixed`."""
        state = self.state
        held_for_others: dict[int, int] | None = None
        soonest = (math.inf, "")
        member = job.member
        biggest, feasible, budget = self._claimant(job, model)
        found: dict[str, list[str]] = {}
        cheapest = math.inf
        extra: dict[int, Res] = {}
        opening_loss = 0.0
        owners: dict[str, int] = {}
        for i in sorted(feasible):
            if state.fits(i, biggest):
                continue
            if not state.room_when_empty(i, biggest):
                # Too small for the pod even empty: no move could open it, and naming its
                # work would send the user after work that was never in the way.
                continue
            if not self._could_open(i, biggest, member):
                cause = self._closed_by(i, member)
            else:
                opening = self._opening(i, biggest, member, model, set(), math.inf)
                if opening is None:
                    # What could move is gone in the cycle already, or holds no GPU of
                    # the model (the search moves only work that does).
                    gone = any(v.job_id in self.gone for v in self.on_node.get(i, ()))
                    cause = "leaving" if gone else "fixed"
                elif opening[0][0] > budget:
                    cause = "costly"
                    cheapest = min(cheapest, opening[0][0])
                else:
                    cause = "openable"
                    opening_loss += opening[0][0]
                    for victim in opening[1]:
                        for p, j in victim.pods:
                            _add(extra, j, spec_res(p.spec), 1)
            if cause == "fixed":
                if self._unmovable is None:
                    self._unmovable = unmovable(state, running, max_reclaims)
                if held_for_others is None:
                    held_for_others = _held_for_others(state, job.job_id)
                cause = _fixed_by(
                    self._unmovable.get(i, {}),
                    held_for_others.get(i, 0),
                    started.get(i, 0) if started else 0,
                )
            node = state.nodes[i]
            found.setdefault(cause, []).append(node.name)
            if cause == "young":
                soonest = min(soonest, (self._old_at(i, member), node.name))
            if cause == "guaranteed" and node.owner is not None:
                owners[node.owner] = owners.get(node.owner, 0) + 1
        openable = tuple(found.get("openable", ()))
        too_few = bool(openable) and (
            plan_job(state, job.pods, member, lendable, extra, frozenset({model})) is None
        )
        return Refusal(
            guaranteed=tuple(found.get("guaranteed", ())),
            guaranteed_owners=tuple(sorted(owners.items(), key=lambda kv: (-kv[1], kv[0]))),
            young=tuple(found.get("young", ())),
            young_soonest=(
                (soonest[1], max(0.0, soonest[0] - self.now)) if math.isfinite(soonest[0]) else None
            ),
            leaving=tuple(found.get("leaving", ())),
            at_limit=tuple(found.get("at_limit", ())),
            held=tuple(found.get("held", ())),
            started=tuple(found.get("started", ())),
            terminating=tuple(found.get("terminating", ())),
            unscheduled=tuple(found.get("unscheduled", ())),
            fixed=tuple(found.get("fixed", ())),
            costly=tuple(found.get("costly", ())),
            cheapest_loss_gpu_s=cheapest if math.isfinite(cheapest) else 0.0,
            openable=openable,
            too_few=too_few,
            over_budget=opening_loss > budget,
        )

    def _holders(self) -> Holders:
        """Who holds the GPUs no claimant may move, per node (see `Holders`): built at
        the first refusal, once the cycle has decided (its `gone` no longer grows)."""
        if self._held is not None:
            return self._held
        held = self._held = Holders()
        nodes = self.state.nodes
        for job in self.jobs:
            young = job.job_id in self.young_ids
            guaranteed = _guaranteed(job, nodes, self.reclaimable)
            gone = job.job_id in self.gone
            old_at = job.youngest_start + self.min_runtime
            for p, i in job.pods:
                g = p.spec.gpus
                if guaranteed:
                    _bump(held.guaranteed, i, g)
                    _bump(held.guaranteed_of, (i, job.member), g)
                    if young:
                        own = (i, job.member)
                        _bump(held.young_own, own, g)
                        held.old_at_own[own] = max(held.old_at_own.get(own, old_at), old_at)
                    elif gone:
                        _bump(held.leaving_own, (i, job.member), g)
                elif young:
                    _bump(held.young, i, g)
                    held.old_at[i] = max(held.old_at.get(i, old_at), old_at)
                elif gone:
                    _bump(held.leaving, i, g)
        return held

    def _old_at(self, i: int, member: str) -> float:
        """When the young work `member`'s claimant would have to move off node i is all
        old enough to move."""
        held = self._holders()
        return max(held.old_at.get(i, -math.inf), held.old_at_own.get((i, member), -math.inf))

    def _closed_by(self, i: int, member: str) -> str:
        """What holds most of node i's GPUs that `member`'s claimant may not move: other
        members' guaranteed work, then young work, then work preempted in the cycle."""
        held = self._holders()
        own = (i, member)
        others = held.guaranteed.get(i, 0) - held.guaranteed_of.get(own, 0)
        young = held.young.get(i, 0) + held.young_own.get(own, 0)
        leaving = held.leaving.get(i, 0) + held.leaving_own.get(own, 0)
        most = max(others, young, leaving)
        if most <= 0:
            return "fixed"
        return "guaranteed" if others == most else "young" if young == most else "leaving"

    # -- the search ----------------------------------------------------------------------
    def _claimant(self, job: PendingJob, model: str) -> tuple[Res, frozenset[int], float]:
        """The job's biggest pod, the nodes of `model` it may use, and its loss budget
        (GPU-seconds of work a move for it may throw away)."""
        biggest = max((spec_res(p.spec) for p in job.pods), key=lambda r: (r[0], r))
        feasible = self.state.feasible_of(job.pods, model)
        return biggest, feasible, job.gpus * self.loss_seconds

    def _may_move(self, job: VictimJob, member: str, model: str, ruled_out: set[str]) -> bool:
        if job.member != member and job.job_id in self.guaranteed:
            return False
        return job.job_id not in self.gone and job.job_id not in ruled_out and model in job.by_model

    def _margins(
        self, job: VictimJob, taken: dict[MemberModel, int] | None = None, without: bool = False
    ) -> Iterator[int]:
        """Per GPU model the job holds: what its member holds above its entitlement, less
        what `taken` takes from it and (`without`) the job's own GPUs."""
        alloc, ent, taken = self.pos.alloc, self.pos.entitlement, taken or {}
        for m, g in job.by_model.items():
            if g > 0:
                key = (job.member, m)
                gone = taken.get(key, 0) + (g if without else 0)
                yield alloc.get(key, 0) - gone - ent.get(key, 0)

    def _keeps_entitlement(self, job: VictimJob, taken: dict[MemberModel, int]) -> bool:
        return all(m >= 0 for m in self._margins(job, taken, without=True))

    def _could_open(self, i: int, res: Res, member: str) -> bool:
        """Node i could take a pod of `res` with every job there that `member` may move
        gone. Without that `_opening` finds nothing, and this is far cheaper to ask."""
        own = self.movable_own.get((i, member))
        if own is None:
            return self.state.fits(i, res, self.movable)
        extra = {i: self.movable.get(i, (0, 0, 0, 0))}
        _add(extra, i, own, 1)
        return self.state.fits(i, res, extra)

    def _opening(
        self, i: int, res: Res, member: str, model: str, ruled_out: set[str], budget: float
    ) -> tuple[tuple[float, int, int, int], list[VictimJob]] | None:
        """Victims that open room for one pod of `res` on node i and their price, or None
        when the node's movable work is not enough or would throw away more than
        `budget` GPU-seconds (the price only grows as victims are added)."""
        state = self.state
        foreign = 0 if state.nodes[i].owner == member else 1
        if state.fits(i, res):
            return (0.0, 0, foreign, i), []
        extra: dict[int, Res] = {}
        chosen: list[VictimJob] = []
        lost = 0.0
        pods = 0
        for job in self.on_node.get(i, ()):
            if not self._may_move(job, member, model, ruled_out):
                continue
            chosen.append(job)
            if not job.checkpointable:
                lost += job.run_gpu_s
                if lost > budget:
                    return None
            pods += len(job.pods)
            for p, j in job.pods:
                if j == i:
                    _add(extra, i, spec_res(p.spec), 1)
            if state.fits(i, res, extra):
                return (lost, pods, foreign, i), chosen
        return None

    def _search(
        self, job: PendingJob, model: str, lendable: Mapping[str, int], ruled_out: set[str]
    ) -> tuple[list[VictimJob], Plan] | None:
        state = self.state
        member = job.member
        biggest, feasible, budget = self._claimant(job, model)
        priced = []
        for i in sorted(feasible):
            if not self._could_open(i, biggest, member):
                continue
            found = self._opening(i, biggest, member, model, ruled_out, budget)
            if found is not None and found[0][0] <= budget:
                priced.append(found)
        priced.sort(key=lambda pv: pv[0])
        models = frozenset({model})
        extra: dict[int, Res] = {}
        chosen: list[VictimJob] = []
        seen: set[str] = set()
        plan: Plan | None = None
        for _, victims in priced[:NODES_WALKED]:
            added = False
            for victim in victims:
                if victim.job_id in seen:
                    continue
                seen.add(victim.job_id)
                chosen.append(victim)
                added = True
                for p, j in victim.pods:
                    _add(extra, j, spec_res(p.spec), 1)
            if not added:
                continue  # the free capacity alone did not fit it in the cycle
            plan = plan_job(state, job.pods, member, lendable, extra, models)
            if plan is not None:
                break
        if plan is None or not chosen:
            return None
        chosen, plan = self._minimal(job, chosen, plan, extra, lendable, models)
        if sum(v.run_gpu_s for v in chosen if not v.checkpointable) > budget:
            return None
        return chosen, plan

    def _minimal(
        self,
        job: PendingJob,
        chosen: list[VictimJob],
        plan: Plan,
        extra: dict[int, Res],
        lendable: Mapping[str, int],
        models: frozenset[str],
    ) -> tuple[list[VictimJob], Plan]:
        """Drop each victim but the last one added when the job fits without it."""
        plan = _trimmed(self.state, job.pods, job.member, chosen, plan, extra, lendable, models)
        return chosen, plan

    # -- the fit-elsewhere rule ----------------------------------------------------------
    def _stays(
        self,
        job: PendingJob,
        model: str,
        victims: Sequence[VictimJob],
        plan: Plan,
        lendable: Mapping[str, int],
        ruled_out: set[str],
        taking: bool,
    ) -> tuple[frozenset[str], list[tuple[VictimJob, str]], frozenset[str]] | str:
        """The victims that fit elsewhere, the jobs taken with the owner each is taken
        for, and the victims going home (see `Move`); or the id of the first victim that
        neither fits elsewhere, nor belongs to a member that stays at or above its fair
        share, nor may be taken."""
        after: dict[int, Res] = {}
        for victim in victims:
            for p, j in victim.pods:
                _add(after, j, spec_res(p.spec), 1)
        specs = {p.uid: p.spec for p in job.pods}
        for uid, i in plan.pods:
            _add(after, i, spec_res(specs[uid]), -1)
        taken: dict[MemberModel, int] = {}
        fits: set[str] = set()
        took: list[tuple[VictimJob, str]] = []
        homes: set[str] = set()
        # A victim that can only go home is looked at again after the others: what a
        # reclaim for the claimant takes from a member is counted before a move home
        # takes from it too (which may take it below its entitlement, `_may_take`).
        queue = list(victims)
        deferred: set[str] = set()
        for victim in queue:
            elsewhere = plan_job(
                self.state,
                _as_pending(victim),
                victim.member,
                lendable,
                after,
                frozenset(victim.by_model),
            )
            if elsewhere is None and taking:
                if self._may_take(job.member, victim, taken):
                    _count(taken, victim)
                    took.append((victim, job.member))
                    continue
                skip = {v.job_id for v in victims} | {t.job_id for t, _ in took}
                owners = self._owners_for(job.member, victim)
                if len(owners) > 1 and victim.job_id not in deferred:
                    deferred.add(victim.job_id)
                    queue.append(victim)
                    continue
                for owner in owners:
                    more = self._take_for(
                        job.member, owner, model, victim, skip, after, taken, ruled_out, lendable
                    )
                    if more is not None:
                        elsewhere, extra = more
                        for t in extra:
                            _count(taken, t)
                        took.extend((t, owner) for t in extra)
                        if owner != job.member:
                            homes.add(victim.job_id)
                        break
            if elsewhere is not None:
                fits.add(victim.job_id)
                specs_v = {p.uid: p.spec for p, _ in victim.pods}
                for uid, i in elsewhere.pods:
                    _add(after, i, spec_res(specs_v[uid]), -1)
                continue
            if not (
                victim.reclaimable
                and self._above_share(victim, taken)
                and self._keeps_entitlement(victim, taken)
            ):
                return victim.job_id
            _count(taken, victim)
        return frozenset(fits), took, frozenset(homes)

    def _may_take(
        self, member: str, victim: VictimJob, taken: dict[MemberModel, int], whole: bool = False
    ) -> bool:
        """A reclaim within `member`'s entitlement could take the job: another member's,
        with a reclaimable pod on `member`'s own nodes, its member staying at or above its
        entitlement without it, or (`whole`: for a victim going home) above that
        entitlement until now, taken whole as a reclaim takes back an owner's own nodes:
        a borrower that pushed a member off its node, and sits on the node the member
        then took, may lose both. Not for the claimant's own takes: allowed there too, it
        took members below their entitlement often enough on the Philly-shaped trace to
        leave 4 of 15 members worse off pooled instead of 1."""
        nodes = self.state.nodes
        return (
            victim.member != member
            and victim.reclaimable
            and any(nodes[i].owner == member for _, i in victim.pods)
            and (
                self._keeps_entitlement(victim, taken)
                or (whole and self._above_entitlement(victim, taken))
            )
        )

    def _above_entitlement(self, victim: VictimJob, taken: dict[MemberModel, int]) -> bool:
        return all(m > 0 for m in self._margins(victim, taken))

    def _owners_for(self, member: str, victim: VictimJob) -> tuple[str, ...]:
        """Whose borrowed work may be taken to make room for a moved victim: the
        claimant's member's, as a reclaim for the claimant would take it; then, when the
        victim's member is within its entitlement (the victim runs on another owner's
        nodes because its own are lent), that member's, as a reclaim within its
        entitlement would: the victim goes home. Without that second step an owner
        whose nodes hold such a victim waits until it ends, hours after the grace
        period, while the borrower that pushed it out keeps the victim's nodes."""
        if victim.member == member or not self._within_entitlement(victim):
            return (member,)
        return (member, victim.member)

    def _within_entitlement(self, victim: VictimJob) -> bool:
        return all(m <= 0 for m in self._margins(victim))

    def _take_for(
        self,
        member: str,
        owner: str,
        model: str,
        victim: VictimJob,
        skip: set[str],
        after: dict[int, Res],
        taken: dict[MemberModel, int],
        ruled_out: set[str],
        lendable: Mapping[str, int],
    ) -> tuple[Plan, list[VictimJob]] | None:
        """Room for a moved victim made by taking borrowed work on `owner`'s own nodes,
        as a reclaim within `owner`'s entitlement would (`member`: the claimant's): the
        victim's plan and the taken jobs (least work lost first, then a minimal set), or
        None. On success `after` gets what the taken jobs free."""
        state = self.state
        pods = _as_pending(victim)
        models = frozenset(victim.by_model)
        extra: dict[int, Res] = dict(after)
        chosen: list[VictimJob] = []
        counted = dict(taken)
        plan: Plan | None = None
        for other in self.borrowed_on.get(owner, ())[:TAKEN_WALKED]:
            if (
                other.job_id in skip
                or not self._may_move(other, member, model, ruled_out)
                or not self._may_take(owner, other, counted, whole=owner != member)
            ):
                continue
            _count(counted, other)
            chosen.append(other)
            for p, j in other.pods:
                _add(extra, j, spec_res(p.spec), 1)
            plan = plan_job(state, pods, victim.member, lendable, extra, models)
            if plan is not None:
                break
        if plan is None:
            return None
        plan = _trimmed(state, pods, victim.member, chosen, plan, extra, lendable, models)
        for other in chosen:
            for p, j in other.pods:
                _add(after, j, spec_res(p.spec), 1)
        return plan, chosen

    def _above_share(self, victim: VictimJob, taken: dict[MemberModel, int]) -> bool:
        alloc, fair = self.pos.alloc, self.pos.fair
        return all(
            alloc.get((victim.member, m), 0) - taken.get((victim.member, m), 0) - g
            >= fair.get((victim.member, m), 0.0) - _EPS
            and alloc.get((victim.member, m), 0) > fair.get((victim.member, m), 0.0) + _EPS
            for m, g in victim.by_model.items()
            if g > 0
        )
