"""Reclaim: preempt reclaimable pods so that a member gets back its entitlement, or gets
up to its fair share.

Reclaim runs for a job that did not fit when the job keeps its member within its
entitlement, or when its member is below its fair share, for the job's GPU model,
counting GPUs already held for its nominated jobs (so one shortfall is not reclaimed
twice). Which rules apply depends on that position:

Within the entitlement (`WithinEntitlement`: allocated + held for nominations + the job's
GPUs <= entitlement for that model) the guarantee applies: an entitlement is what a
member can always get back, and reclaimable pods are there to be taken back.

- Victims may be ANY job of another member holding a reclaimable pod (see `allocation`),
  even if that member falls below its fair share, but never below its entitlement on any
  model the victim job holds. Without this a member below its entitlement could wait
  forever behind fragmentation: it needs 8 GPUs on one node, 2 + 2 are free elsewhere,
  and the borrower on its node sits exactly at its fair share.
- Victims are tried on the reclaiming member's own nodes first, then by member, furthest
  above its fair share first (allocated / fair share at the start of the attempt), then
  in the common order below.
- Taking back its own nodes: when no set within the victims' entitlements makes room,
  any job on the reclaiming member's OWN nodes whose member is above its entitlement is
  taken whole (whether `allocation` counted its pods reclaimable or not: that only says
  which of the member's pods are the extra ones), even below that entitlement. Otherwise
  a borrower whose gang straddles its entitlement (18 of 16 GPUs: a 2 x 8 gang on the
  owner's two nodes, its own nodes lent or fragmented) keeps the owner at 0 of its
  contribution for as long as the gang runs; the borrower, now below its entitlement,
  gets its own nodes back by the same rules.

Beyond the entitlement, up to the fair share (`UpToFairShare`), the fair-share rules:

- Victims are jobs of members above their own fair share for that model that hold a
  reclaimable pod. A victim whose member would fall below its fair share once it is gone is
  skipped.
- When the member stays within its fair share with the job, any member above its own fair
  share may give up reclaimable pods. When the job would take it above its fair share (a big
  gang, or a fractional fair share), only members further above theirs may: the victim
  member's allocated / fair share must exceed the reclaimer's once the job runs. Without
  this, a member just below its share could never run a gang bigger than the gap, while
  others sit far above theirs on its hardware.
- Victims are tried on the reclaiming member's own nodes first (the owner gets its
  hardware back), then in the common order below.

Common to both (`Reclaimer` and the victim-set search, `_Attempt.select`):

- Victims are whole jobs (a gang is preempted with all its pods) of *other* members
  (but for `Overtaken`, below);
  pods not scheduled by fairpool and terminating pods are never victims. Only victims
  with a pod on a node the job could use are considered.
- The common order loses the least work first: checkpointable jobs (they resume where
  they stopped: the pods' `checkpointable`, else their member's), then the fewest
  GPU-seconds run since their last start (what a restart throws away), then the lowest
  priority, then job id.
- A job already reclaimed `sharing.max_reclaims_per_job` times is never a victim.
- Terminating pods already count as capacity being freed: if the job fits once they are
  gone, nothing is preempted, the job is only nominated.
- Victims are added in order until a what-if placement of the whole job succeeds on the
  free capacity plus what they free; then each victim except the last one added is
  dropped again if the job still fits without it (a minimal set).
- Pods younger than `sharing.min_runtime_seconds` are skipped unless
  `sharing.preempt_below_min_runtime` is set.

Taking back from overtaking jobs (`Overtaken`, with `sharing.reclaim_overtaken_after_seconds`):
the one mode whose victims are the reclaiming member's own jobs, those after the waiting
job in its queue, smaller than it, that resume; run by the cycle when the job has waited
that long and neither mode above nor a move made room (docs/glossary.md, "overtaken").

Drain (`_drain`): when only pods younger than the minimum runtime would make room,
nothing is preempted; the free capacity the job would use is held for it until they are
old enough. Otherwise a big job could starve behind a stream of young reclaimable pods,
each new one taking the capacity freed by the last.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from enum import Enum
from itertools import chain

from scheduler.engine.entitlement import MemberModel
from scheduler.engine.explain import at_limit_detail
from scheduler.engine.gangs import Plan, plan_job
from scheduler.engine.placement import ClusterState, Res
from scheduler.engine.snapshot import PendingPod, RunningPod

_EPS = 1e-9


class VictimJob:
    """A running job as a possible victim. A plain class, not a dataclass: see
    `scheduler.engine.jobinfo.JobInfo`."""

    __slots__ = (
        "by_model",
        "checkpointable",
        "job_id",
        "member",
        "owners",
        "pods",
        "priority",
        "reclaimable",
        "run_gpu_s",
        "submitted_at",
        "youngest_start",
    )

    job_id: str
    member: str
    pods: list[tuple[RunningPod, int]]
    """(pod, node index); pods whose node is gone are left out."""
    youngest_start: float
    priority: int
    reclaimable: bool
    """It has a reclaimable pod."""
    owners: frozenset[str | None]
    """Owners of the nodes its pods run on."""
    by_model: dict[str, int]
    """GPUs it holds per GPU model."""
    run_gpu_s: float
    """GPU-seconds its pods ran since they last started: lost if it restarts from zero."""
    checkpointable: bool
    """It resumes where it stopped when preempted (every pod's `checkpointable`, else its
    member's): reclaiming it loses nothing."""
    submitted_at: float
    """When it was submitted (its earliest pod's `submitted_at`)."""

    def __init__(
        self,
        job_id: str,
        member: str,
        pods: list[tuple[RunningPod, int]],
        youngest_start: float = float("-inf"),
        priority: int = -(2**62),
        reclaimable: bool = False,
        owners: frozenset[str | None] = frozenset(),
        by_model: dict[str, int] | None = None,
        run_gpu_s: float = 0.0,
        checkpointable: bool = False,
        submitted_at: float = float("inf"),
    ) -> None:
        self.job_id = job_id
        self.member = member
        self.pods = pods
        self.youngest_start = youngest_start
        self.priority = priority
        self.reclaimable = reclaimable
        self.owners = owners
        self.by_model = {} if by_model is None else by_model
        self.run_gpu_s = run_gpu_s
        self.checkpointable = checkpointable
        self.submitted_at = submitted_at

    def loss_key(self) -> tuple[int, float, int, str]:
        """The common order: least work lost first (see the module)."""
        return (0 if self.checkpointable else 1, self.run_gpu_s, self.priority, self.job_id)


@dataclass(init=False, unsafe_hash=True, slots=True)
class ReclaimResult:
    """Its own `__init__`: see `scheduler.engine.decisions.MemberShare`."""

    victims: tuple[VictimJob, ...]
    plan: Plan
    wait: bool
    """A drain: some victims have not run `min_runtime_seconds` yet, so nothing is
    preempted now, but the free capacity of the plan is held for the job so that it is
    not handed to others while the victims age."""

    def __init__(
        self,
        victims: tuple[VictimJob, ...],
        plan: Plan,
        wait: bool = False,
    ) -> None:
        self.victims = victims
        self.plan = plan
        self.wait = wait


class Why(Enum):
    """Why an attempt preempts nothing."""

    NO_NODE = "no-node"
    """No node the job may use has its GPU model."""
    BELOW_ENTITLEMENT = "below-entitlement"
    """Within the entitlement: other members' reclaimable pods would make room only by
    taking their members below their entitlement."""
    NO_BORROWER = "no-borrower"
    """Within the entitlement: no other member holds borrowed GPUs the job could use."""
    NO_ROOM = "no-room"
    """Beyond the entitlement: the reclaimable pods of members above their fair share would
    not make room."""
    NOT_FURTHER_ABOVE = "not-further-above"
    """Beyond the entitlement: the only members above their fair share are not further
    above it than the reclaimer would be with the job."""
    NONE_ABOVE = "none-above"
    """Beyond the entitlement: no member above its fair share holds borrowed GPUs the job
    could use."""


@dataclass(init=False, unsafe_hash=True, slots=True)
class NoReclaim:
    """Its own `__init__`: see `scheduler.engine.decisions.MemberShare`."""

    why: Why
    detail: str
    """The reason as the end of a sentence ("nothing can be reclaimed: <detail>")."""

    def __init__(
        self,
        why: Why,
        detail: str,
    ) -> None:
        self.why = why
        self.detail = detail


class _Tally:
    """What ruled out the victims of a failed attempt: whether some considered job was
    too young, usable (its member may give, it is old enough), or of a member that may
    not give. A plain class: see `scheduler.engine.jobinfo.JobInfo`."""

    __slots__ = (
        "not_giving",
        "usable",
        "young",
    )

    young: bool
    usable: bool
    not_giving: bool

    def __init__(
        self,
        young: bool = False,
        usable: bool = False,
        not_giving: bool = False,
    ) -> None:
        self.young = young
        self.usable = usable
        self.not_giving = not_giving


class Reclaimer:
    """Victim index for one cycle (built on first use; reclaim is rare).

    Victim jobs are kept in one order, least work lost first (`VictimJob.loss_key`);
    an attempt walks it twice (victims on the reclaimer's own nodes, then the others) and
    stops as soon as the job fits, so a reclaim costs what it takes, not the cluster size.
    The same order is kept per victim member (and per owner and member) for reclaims
    within the entitlement, which walk members furthest above their fair share first.

    Reclaims beyond the entitlement, most of them, only ever take jobs with a
    reclaimable pod: those are indexed when the index is built. Every other running job
    (what an owner may take back on its own nodes, and what consolidation may move) is
    indexed on first use (`everything`).
    """

    def __init__(
        self,
        state: ClusterState,
        running: Sequence[RunningPod],
        reclaimable_pods: AbstractSet[str],
        now: float,
        min_runtime: int,
        below_min_runtime: bool,
        checkpointable: frozenset[str] = frozenset(),
        max_reclaims: int | None = None,
    ) -> None:
        self.state = state
        self.now = now
        self.min_runtime = min_runtime
        self.below_min_runtime = below_min_runtime
        self._checkpointable = checkpointable
        self._pods, claimed, self.at_limit = _running_jobs(
            state, running, reclaimable_pods, max_reclaims
        )
        """The pods of every victim job; borrowed pods of jobs at the reclaim limit."""
        self.max_reclaims = max_reclaims
        reclaimable = sorted(
            (
                _victim_job(state, job_id, self._pods[job_id], True, now, checkpointable)
                for job_id in claimed
            ),
            key=VictimJob.loss_key,
        )
        self._reclaimable = reclaimable
        self.reclaimable_jobs = len(reclaimable)
        self.gone_reclaimable = 0
        # Every list below keeps the common order, so an attempt walks only the jobs that
        # could give something for its model and merges them back into that order.
        self.reclaimable_members: dict[str, list[str]] = {}
        """model -> members with a reclaimable job holding it, by name."""
        self.reclaimable_by_member: dict[tuple[str, str], list[VictimJob]] = {}
        """(member, model) -> its reclaimable jobs holding the model."""
        self.reclaimable_by_owner_member: dict[tuple[str | None, str, str], list[VictimJob]] = {}
        """(owner, member, model) -> the member's reclaimable jobs holding the model with a
        pod on a node of the owner."""
        self.rank: dict[str, int] = {}
        """Place of each reclaimable job in the common order."""
        self._freeable: tuple[dict[int, dict[str, int]], dict[int, dict[str, int]]] | None = None
        for rank, job in enumerate(reclaimable):
            self.rank[job.job_id] = rank
            for model in job.by_model:
                self.reclaimable_by_member.setdefault((job.member, model), []).append(job)
                for owner in job.owners:
                    okey = (owner, job.member, model)
                    self.reclaimable_by_owner_member.setdefault(okey, []).append(job)
        for member, model in sorted(self.reclaimable_by_member):
            self.reclaimable_members.setdefault(model, []).append(member)
        self._jobs: list[VictimJob] | None = None
        self._indexed = False
        self.members: dict[str, list[str]] = {}
        """model -> members with a job holding it, by name (`everything`)."""
        self.by_member: dict[tuple[str, str], list[VictimJob]] = {}
        """(member, model) -> its jobs holding the model (`everything`)."""
        self.by_owner_member: dict[tuple[str | None, str, str], list[VictimJob]] = {}
        """(owner, member, model) -> the member's jobs holding the model with a pod on a
        node of the owner (`everything`)."""
        self.gone: set[str] = set()
        self._model_nodes = state.placeable_per_model

    def freeable(self, include_young: bool) -> dict[int, dict[str, int]]:
        """Node index -> member -> GPUs its reclaimable jobs (old enough to be victims
        now, unless `include_young`) hold there, every pod of such a job going with it:
        the most a reclaim beyond the entitlement could free there
        (`UpToFairShare._too_few_slots`). Counted on first use."""
        if self._freeable is None:
            every: dict[int, dict[str, int]] = {}
            old: dict[int, dict[str, int]] = {}
            now, min_runtime = self.now, self.min_runtime
            for job in self._reclaimable:
                aged = self.below_min_runtime or now - job.youngest_start >= min_runtime
                for pod, i in job.pods:
                    for table in (every, old) if aged else (every,):
                        on = table.get(i)
                        if on is None:
                            on = table[i] = {}
                        on[job.member] = on.get(job.member, 0) + pod.spec.gpus
            self._freeable = (every, old)
        return self._freeable[0 if include_young else 1]

    @property
    def jobs(self) -> list[VictimJob]:
        """Every victim job, in the common order (listed once, on first use)."""
        if self._jobs is None:
            built = {job.job_id for job in self._reclaimable}
            others = [
                _victim_job(self.state, job_id, pods, False, self.now, self._checkpointable)
                for job_id, pods in self._pods.items()
                if job_id not in built
            ]
            self._jobs = sorted([*self._reclaimable, *others], key=VictimJob.loss_key)
        return self._jobs

    def everything(self) -> None:
        """Index every victim job in `members`, `by_member` and `by_owner_member`
        (once)."""
        if self._indexed:
            return
        self._indexed = True
        for job in self.jobs:
            for model in job.by_model:
                self.by_member.setdefault((job.member, model), []).append(job)
                for owner in job.owners:
                    self.by_owner_member.setdefault((owner, job.member, model), []).append(job)
        for member, model in sorted(self.by_member):
            self.members.setdefault(model, []).append(member)

    def merged(self, lists: Iterable[list[VictimJob]]) -> Iterator[VictimJob]:
        """Jobs of several lists (reclaimable ones, each job in one list) in the common
        order. Sorted at once rather than merged lazily: `heapq.merge` is Python code
        even in the compiled engine, and most walks that merge go to the end (an attempt
        that fails)."""
        found = [lst for lst in lists if lst]
        if len(found) == 1:
            return iter(found[0])
        rank = self.rank
        jobs = [job for lst in found for job in lst]
        jobs.sort(key=lambda job: rank[job.job_id])
        return iter(jobs)

    def has_candidates(self) -> bool:
        return self.gone_reclaimable < self.reclaimable_jobs

    def within_entitlement(
        self,
        pods: Sequence[PendingPod],
        member: str,
        model: str,
        alloc: dict[MemberModel, int],
        fair: dict[MemberModel, float],
        entitlement: dict[MemberModel, int],
        lendable: Mapping[str, int] | None,
    ) -> ReclaimResult | NoReclaim:
        """Victims and the plan they make possible for a job that keeps `member` within
        its entitlement, or why nothing can be reclaimed."""
        room = self._room(pods, member, model, lendable)
        if room is None:
            return NoReclaim(Why.NO_NODE, "no node it may use exists")
        self.everything()
        return self._attempt(WithinEntitlement(self, room, alloc, fair, entitlement))

    def up_to_fair_share(
        self,
        pods: Sequence[PendingPod],
        member: str,
        model: str,
        alloc: dict[MemberModel, int],
        fair: dict[MemberModel, float],
        lendable: Mapping[str, int] | None,
        above_ratio: float | None,
        cautious: bool = False,
    ) -> ReclaimResult | NoReclaim:
        """Victims and the plan they make possible for a job that takes `member` beyond
        its entitlement, or why nothing can be reclaimed. `above_ratio`: the reclaimer's
        allocated / fair share once the job runs, when that exceeds 1; only members
        further above their own fair share are victims then. `cautious`: the job's plan
        keeps off nodes whose owners are likely to want them back (see `placement`)."""
        room = self._room(pods, member, model, lendable, cautious)
        if room is None:
            return NoReclaim(Why.NO_NODE, "no node it may use exists")
        return self._attempt(UpToFairShare(self, room, alloc, fair, above_ratio))

    def overtaken(
        self,
        pods: Sequence[PendingPod],
        member: str,
        model: str,
        alloc: dict[MemberModel, int],
        fair: dict[MemberModel, float],
        lendable: Mapping[str, int] | None,
        place: tuple[int, float, str],
        cautious: bool = False,
    ) -> ReclaimResult | NoReclaim:
        """Victims among the member's own later, smaller, checkpointable jobs and the plan
        they make possible, or why there are none (`Overtaken`). `place`: the waiting
        job's place in its member's queue, (-priority, submitted_at, job id)."""
        room = self._room(pods, member, model, lendable, cautious)
        if room is None:
            return NoReclaim(Why.NO_NODE, "no node it may use exists")
        self.everything()
        return self._attempt(Overtaken(self, room, alloc, fair, place))

    def _attempt(self, attempt: _Attempt) -> ReclaimResult | NoReclaim:
        freed = attempt.room.plan_with_terminating()
        if freed is not None:
            return ReclaimResult((), freed)
        found = attempt.search(include_young=False)
        if found is not None:
            victims, plan = found
            for job in victims:
                self.gone.add(job.job_id)
                self.gone_reclaimable += job.reclaimable
            return ReclaimResult(tuple(victims), plan)
        # Why not: what was ruled out (only on failure, which is cached).
        tally = attempt.tally()
        result = _drain(attempt) if tally.young else attempt.refusal(tally)
        if isinstance(result, NoReclaim) and self.at_limit:
            room = attempt.room
            detail = self._held_at_limit(room.member, room.model, room.feasible)
            return NoReclaim(result.why, result.detail + detail)
        return result

    def at_limit_detail(
        self,
        pods: Sequence[PendingPod],
        member: str,
        model: str,
    ) -> str:
        """For a job nothing is reclaimed for: the end of its sentence naming the
        borrowed GPUs it could use that belong to other members' jobs at the reclaim
        limit ("" when none)."""
        if not self.at_limit:
            return ""
        return self._held_at_limit(member, model, self._feasible_nodes(pods, model))

    def _held_at_limit(self, member: str, model: str, feasible: AbstractSet[int]) -> str:
        held: dict[str, tuple[str, int]] = {}
        for pod, i in self.at_limit:
            holder = pod.member
            if holder is None or holder == member or i not in feasible:
                continue
            gpus = held[pod.job_id][1] if pod.job_id in held else 0
            held[pod.job_id] = (holder, gpus + pod.spec.gpus)
        if not held or self.max_reclaims is None:
            return ""
        return at_limit_detail(held, model, self.max_reclaims)

    def _room(
        self,
        pods: Sequence[PendingPod],
        member: str,
        model: str,
        lendable: Mapping[str, int] | None,
        cautious: bool = False,
    ) -> _Room | None:
        """Where the job could run and what terminating pods free there; None when no
        node it may use has its model."""
        feasible = self._feasible_nodes(pods, model)
        if not feasible:
            return None
        state = self.state
        freeing: dict[int, Res] = {}
        if state.term_pods > 0:
            for i in feasible:
                t = state.term[i]
                if any(t):
                    freeing[i] = (t[0], t[1], t[2], t[3])
        return _Room(
            state=state,
            pods=pods,
            member=member,
            model=model,
            lendable=lendable,
            feasible=feasible,
            everywhere=len(feasible) >= self._model_nodes.get(model, 0),
            freeing=freeing,
            have=state.idle_gpus(feasible) + sum(e[0] for e in freeing.values()),
            need=sum(p.spec.gpus for p in pods),
            cautious=cautious,
            pod_gpus=_least_pod_gpus(pods),
        )

    def _feasible_nodes(self, pods: Sequence[PendingPod], model: str) -> frozenset[int]:
        """Nodes of `model` that could take one of the pods."""
        return self.state.feasible_of(pods, model)


def _least_pod_gpus(pods: Sequence[PendingPod]) -> int:
    """The fewest GPUs any pod of the job asks for (`_Room.pod_gpus`). A loop: compiled,
    `min` over a generator makes a generator object through Python's call protocol."""
    least = pods[0].spec.gpus
    for p in pods:
        if p.spec.gpus < least:
            least = p.spec.gpus
    return max(0, least)


def _running_jobs(
    state: ClusterState,
    running: Sequence[RunningPod],
    reclaimable_pods: AbstractSet[str],
    max_reclaims: int | None,
) -> tuple[dict[str, list[tuple[RunningPod, int]]], set[str], list[tuple[RunningPod, int]]]:
    """The pods of every victim job, by job id: running jobs of members, scheduled by
    fairpool, on known nodes, without their terminating pods and without jobs reclaimed
    `max_reclaims` times already; the jobs among them with a reclaimable pod; and the
    reclaimable pods (with their node) of the jobs left out for their reclaims, which a
    refusal names. Jobs with a reclaimable pod are victims, their other pods coming
    along; every other job is listed too, for an owner taking back its own nodes."""
    pods: dict[str, list[tuple[RunningPod, int]]] = {}
    spent: set[str] = set()
    claimed: set[str] = set()
    at_limit: list[tuple[RunningPod, int]] = []
    index = state.index
    for pod in running:
        if pod.terminating or pod.member is None:
            continue
        i = index.get(pod.node)
        if max_reclaims is not None and pod.reclaims >= max_reclaims:
            spent.add(pod.job_id)
            if i is not None and pod.scheduled_by_fairpool and pod.uid in reclaimable_pods:
                at_limit.append((pod, i))
            continue
        if i is None or not pod.scheduled_by_fairpool:
            continue
        found = pods.get(pod.job_id)
        if found is None:
            found = pods[pod.job_id] = []
        found.append((pod, i))
        if pod.uid in reclaimable_pods:
            claimed.add(pod.job_id)
    for job_id in spent:
        pods.pop(job_id, None)
    claimed -= spent
    return pods, claimed, at_limit


def _victim_job(
    state: ClusterState,
    job_id: str,
    pods: list[tuple[RunningPod, int]],
    reclaimable: bool,
    now: float,
    checkpointable: frozenset[str],
) -> VictimJob:
    """One victim job from its pods (see `_running_jobs`), in the snapshot's order."""
    member = pods[0][0].member
    assert member is not None
    node_model, nodes = state.model, state.nodes
    if len(pods) == 1:
        # Most victims are one pod; the same sums as below, without the loop.
        pod, i = pods[0]
        started, gpus = pod.started_at, pod.spec.gpus
        return VictimJob(
            job_id,
            member,
            pods,
            started,
            max(pod.priority, -(2**62)),
            reclaimable,
            frozenset((nodes[i].owner,)),
            {node_model[i]: gpus},
            0.0 + gpus * (now - started) if now > started else 0.0,
            pod.resumes(checkpointable),
            pod.submitted_at,
        )
    job = VictimJob(job_id, member, pods, reclaimable=reclaimable)
    # A gang restarts whole: it resumes only if every pod does.
    job.checkpointable = all(pod.resumes(checkpointable) for pod, _ in pods)
    by_model = job.by_model
    for pod, i in pods:
        started = pod.started_at
        if started > job.youngest_start:
            job.youngest_start = started
        gpus = pod.spec.gpus
        if now > started:
            job.run_gpu_s += gpus * (now - started)
        if pod.priority > job.priority:
            job.priority = pod.priority
        if pod.submitted_at < job.submitted_at:
            job.submitted_at = pod.submitted_at
        model = node_model[i]
        by_model[model] = by_model.get(model, 0) + gpus
    pods.sort(key=lambda pi: pi[0].uid)
    job.owners = frozenset(nodes[i].owner for _, i in pods)
    return job


class _Room:
    """Where one job could run: the nodes it may use, and what is free on them. A plain
    class, not a dataclass: see `scheduler.engine.jobinfo.JobInfo`."""

    __slots__ = (
        "caps",
        "cautious",
        "everywhere",
        "feasible",
        "freeing",
        "have",
        "lendable",
        "member",
        "model",
        "need",
        "pod_gpus",
        "pods",
        "state",
    )

    state: ClusterState
    pods: Sequence[PendingPod]
    member: str
    model: str
    lendable: Mapping[str, int] | None
    feasible: frozenset[int]
    everywhere: bool
    """Every placeable node of the model is feasible (no need to look where a victim
    runs)."""
    freeing: dict[int, Res]
    """Resources of terminating pods per feasible node: capacity already being freed."""
    have: int
    """Free GPUs on feasible nodes, counting those being freed."""
    need: int
    cautious: bool
    """The job borrows and would lose its progress if reclaimed (see `placement`)."""
    pod_gpus: int
    """The fewest GPUs a pod of the job asks for (0: `count` bounds nothing)."""
    caps: dict[str, int]
    """Another member whose lending `lendable` limits (a plan puts pods on its nodes only
    within its headroom) -> the most pods of the job that headroom lets its nodes take."""

    def __init__(
        self,
        state: ClusterState,
        pods: Sequence[PendingPod],
        member: str,
        model: str,
        lendable: Mapping[str, int] | None,
        feasible: frozenset[int],
        everywhere: bool,
        freeing: dict[int, Res],
        have: int,
        need: int,
        cautious: bool = False,
        pod_gpus: int = 0,
    ) -> None:
        self.state = state
        self.pods = pods
        self.member = member
        self.model = model
        self.lendable = lendable
        self.feasible = feasible
        self.everywhere = everywhere
        self.freeing = freeing
        self.have = have
        self.need = need
        self.cautious = cautious
        self.pod_gpus = pod_gpus
        self.caps = (
            {o: max(0, n) // pod_gpus for o, n in lendable.items() if o != member}
            if lendable and pod_gpus > 0
            else {}
        )

    def count(self, extra: Mapping[int, Res]) -> _SlotCount:
        """The job's slots with `extra` freed (`_SlotCount`): a pass over the feasible
        nodes."""
        g = self.pod_gpus
        if g <= 0:
            return _SlotCount(len(self.pods), {}, {})
        free, nodes, caps = self.state.free_gpu, self.state.nodes, self.caps
        unlimited = 0
        held: dict[str, int] = {}
        for i in self.feasible:
            n = max(0, free[i] + (extra[i][0] if i in extra else 0)) // g
            owner = nodes[i].owner
            if owner is not None and owner in caps:
                held[owner] = held.get(owner, 0) + n
            else:
                unlimited += n
        return _SlotCount(unlimited, held, self.caps)

    def plan(self, extra: Mapping[int, Res], count: _SlotCount | None = None) -> Plan | None:
        """A what-if placement of the whole job with `extra` freed on its nodes, tried
        only when the slots allow it (`count`: `count(extra)`, when kept; else counted
        here: on a contended pool most what-if placements asked for fail, nearly all of
        them on a count)."""
        if count is None:
            count = self.count(extra)
        if count.total() < len(self.pods):
            return None
        models = frozenset({self.model})
        return plan_job(
            self.state, self.pods, self.member, self.lendable, extra, models, self.cautious
        )

    def plan_with_terminating(self) -> Plan | None:
        """The plan when the terminating pods alone make room."""
        if self.have < self.need:
            return None
        return self.plan(self.freeing)

    def runs_here(self, job: VictimJob) -> bool:
        """The job has a pod on a node this one could use."""
        return self.everywhere or any(i in self.feasible for _, i in job.pods)

    def free(
        self, extra: dict[int, Res], job: VictimJob, sign: int, count: _SlotCount | None
    ) -> int:
        """Add (sign 1) or remove (sign -1) what `job` frees on feasible nodes to `extra`,
        and to `count` when kept; the GPUs it frees there."""
        g = self.pod_gpus
        free = self.state.free_gpu
        feasible = self.feasible
        nodes, caps = self.state.nodes, self.caps
        gpus = 0
        for pod, i in job.pods:
            if i not in feasible:
                continue
            spec = pod.spec
            e = extra.get(i, (0, 0, 0, 0))
            was = e[0]
            now = was + sign * spec.gpus
            extra[i] = (
                now,
                e[1] + sign * spec.cpu_milli,
                e[2] + sign * spec.memory_bytes,
                e[3] + sign,
            )
            gpus += spec.gpus
            if count is not None and g > 0:
                f = free[i]
                change = max(0, f + now) // g - max(0, f + was) // g
                if change:
                    owner = nodes[i].owner
                    count.add(owner if owner is not None and owner in caps else None, change)
        return gpus


class _SlotCount:
    """How many of a job's pods the feasible nodes could hold, by free GPUs alone and
    with what the victims chosen so far free: an upper bound on what a what-if placement
    places, as every pod needs the job's fewest GPUs per pod or more on one node, and the
    nodes of an owner whose lending is limited take no more pods than its headroom holds
    (a job kept off wanted nodes has none on theirs). Fewer slots than pods means no plan
    exists. Victims freeing GPUs on many nodes add up to enough GPUs long before one node
    has room, and a what-if placement costs far more than keeping this count victim by
    victim. Counting the headroom too left no failed placement to a contended replay's
    reclaim attempts: on 584 cycles sampled from the 30-day load-1.2 replay of
    `python -m bench.bench_simulator`, 3,632 of the 8,101 placements that failed had
    GPUs enough and were kept off by the headroom alone. A plain class: see
    `scheduler.engine.jobinfo.JobInfo`."""

    __slots__ = ("caps", "held", "unlimited")

    unlimited: int
    """Slots on nodes without a lending limit."""
    held: dict[str, int]
    """Owner -> slots on its nodes whose lending is limited, before its cap."""
    caps: dict[str, int]
    """Owner -> the most pods its headroom lets its nodes take."""

    def __init__(self, unlimited: int, held: dict[str, int], caps: dict[str, int]) -> None:
        self.unlimited = unlimited
        self.held = held
        self.caps = caps

    def add(self, owner: str | None, change: int) -> None:
        if owner is None:
            self.unlimited += change
        else:
            self.held[owner] = self.held.get(owner, 0) + change

    def total(self) -> int:
        total = self.unlimited
        caps = self.caps
        for owner, n in self.held.items():
            total += min(n, caps[owner])
        return total


class _Attempt:
    """One reclaim attempt: the shared victim-set search. Subclasses are the modes: who
    may give GPUs up, how low they may go, and in which order they are tried. (Not an
    `ABC`: compiled, a class with that metaclass cannot be created. Not a dataclass: see
    `scheduler.engine.jobinfo.JobInfo`.)"""

    reclaimer: Reclaimer
    room: _Room
    alloc: dict[MemberModel, int]
    fair: dict[MemberModel, float]
    _giving: dict[str, bool]
    """`may_give` per victim member: positions do not change within an attempt."""

    def __init__(
        self,
        reclaimer: Reclaimer,
        room: _Room,
        alloc: dict[MemberModel, int],
        fair: dict[MemberModel, float],
    ) -> None:
        self.reclaimer = reclaimer
        self.room = room
        self.alloc = alloc
        self.fair = fair
        self._giving = {}

    @property
    def member(self) -> str:
        return self.room.member

    @property
    def model(self) -> str:
        return self.room.model

    # -- the mode's rules ----------------------------------------------------------------
    @abstractmethod
    def _may_give(self, victim_member: str) -> bool:
        """The victim member's position allows it to give GPUs up for this job."""
        ...

    @abstractmethod
    def floor(self, key: MemberModel) -> float:
        """How low a victim member may go on a model."""
        ...

    @abstractmethod
    def search(self, include_young: bool) -> tuple[list[VictimJob], Plan] | None:
        """A minimal victim set that makes room, or None."""
        ...

    @abstractmethod
    def considered(self, job: VictimJob) -> bool:
        """The job counts when telling why an attempt failed."""
        ...

    @abstractmethod
    def tallied(self) -> Iterable[tuple[str, Iterable[VictimJob]]]:
        """Every job `considered` may accept (and maybe others), each once, as (victim
        member, its jobs)."""
        ...

    @abstractmethod
    def refusal(self, tally: _Tally) -> NoReclaim:
        """Why nothing can be reclaimed, no victim being merely too young."""
        ...

    # -- shared --------------------------------------------------------------------------
    def may_give(self, victim_member: str) -> bool:
        found = self._giving.get(victim_member)
        if found is None:
            found = self._giving[victim_member] = self._may_give(victim_member)
        return found

    def useful(self, job: VictimJob, home: bool = False) -> bool:
        """The job could make room: another member's, not taken yet, holding the model,
        with a reclaimable pod, or (`home`) on the reclaimer's own nodes, and running where
        the job could run."""
        if (
            job.job_id in self.reclaimer.gone
            or job.member == self.member
            or self.model not in job.by_model
        ):
            return False
        if not job.reclaimable and not (home and self.member in job.owners):
            return False
        return self.room.runs_here(job)

    def old_enough(self, job: VictimJob) -> bool:
        r = self.reclaimer
        return r.below_min_runtime or r.now - job.youngest_start >= r.min_runtime

    def tally(self) -> _Tally:
        """Stops as soon as the answer is known: one young job means a drain whatever
        else there is, and one job of a member that may not give says all that members
        that may not give can say (most failed attempts find nobody giving)."""
        tally = _Tally()
        for victim_member, jobs in self.tallied():
            if not self.may_give(victim_member):
                if not tally.not_giving and any(self.considered(job) for job in jobs):
                    tally.not_giving = True
                continue
            for job in jobs:
                if not self.considered(job):
                    continue
                if not self.old_enough(job):
                    tally.young = True
                    return tally
                tally.usable = True
        return tally

    def keeps_floor(self, job: VictimJob, taken: dict[MemberModel, int]) -> bool:
        """Its member stays at or above its floor on every model once `job` is gone too
        (`taken`: what the victims chosen so far take from each member)."""
        alloc, member = self.alloc, job.member
        for m, g in job.by_model.items():
            if g <= 0:
                continue
            key = (member, m)
            if alloc.get(key, 0) - taken.get(key, 0) - g < self.floor(key) - _EPS:
                return False
        return True

    def select(
        self, jobs: Iterable[VictimJob], home: bool = False
    ) -> tuple[list[VictimJob], Plan] | None:
        """Victims from `jobs`, in order, until the job fits; then the minimal set.
        `home`: jobs on the reclaimer's own nodes may take their member below its floor
        (the member is above its entitlement, or it would not give: see `may_give`)."""
        room = self.room
        extra = dict(room.freeing)
        # Counted once the victims free GPUs enough (a pass over the nodes), then kept
        # victim by victim.
        count: _SlotCount | None = None
        have = room.have
        taken: dict[MemberModel, int] = {}
        chosen: list[VictimJob] = []
        plan: Plan | None = None
        # `self.keeps_floor(...)`, not a bound method kept in a local: compiled, the
        # method is called directly, the bound method through Python's call protocol.
        member, need = self.member, room.need
        for job in jobs:
            if not (home and member in job.owners) and not self.keeps_floor(job, taken):
                continue
            for m, g in job.by_model.items():
                taken[(job.member, m)] = taken.get((job.member, m), 0) + g
            chosen.append(job)
            have += room.free(extra, job, 1, count)
            if have < need:
                continue
            if count is None:
                count = room.count(extra)
            plan = room.plan(extra, count)
            if plan is not None:
                break
        if plan is None or count is None:
            return None
        return self._minimal(chosen, plan, extra, count)

    def _minimal(
        self, chosen: list[VictimJob], plan: Plan, extra: dict[int, Res], count: _SlotCount
    ) -> tuple[list[VictimJob], Plan]:
        """Drop each victim but the last one added when the job fits without it."""
        room = self.room
        for job in list(reversed(chosen[:-1])):
            room.free(extra, job, -1, count)
            trial = room.plan(extra, count)
            if trial is not None:
                chosen.remove(job)
                plan = trial
            else:
                room.free(extra, job, 1, count)
        return chosen, plan


class WithinEntitlement(_Attempt):
    """The job keeps its member within its entitlement: any other member above its
    entitlement gives up reclaimable pods, down to that entitlement, members furthest above
    their fair share first; failing that, jobs on the reclaimer's own nodes are taken
    back whole."""

    entitlement: dict[MemberModel, int]

    def __init__(
        self,
        reclaimer: Reclaimer,
        room: _Room,
        alloc: dict[MemberModel, int],
        fair: dict[MemberModel, float],
        entitlement: dict[MemberModel, int],
    ) -> None:
        super().__init__(reclaimer, room, alloc, fair)
        self.entitlement = entitlement

    def _may_give(self, victim_member: str) -> bool:
        key = (victim_member, self.model)
        return self.alloc.get(key, 0) > self.entitlement.get(key, 0)

    def floor(self, key: MemberModel) -> float:
        return float(self.entitlement.get(key, 0))

    def search(self, include_young: bool) -> tuple[list[VictimJob], Plan] | None:
        found = self.select(self._walk(include_young))
        if found is None:
            found = self.select(self._walk(include_young, home=True), home=True)
        return found

    def considered(self, job: VictimJob) -> bool:
        return self.useful(job, home=True)

    def tallied(self) -> Iterable[tuple[str, Iterable[VictimJob]]]:
        """Other members' reclaimable jobs of the model, and their other jobs on the
        reclaimer's own nodes."""
        r = self.reclaimer
        for vm in r.members.get(self.model, []):
            if vm == self.member:
                continue
            own = r.by_owner_member.get((self.member, vm, self.model), [])
            yield (
                vm,
                chain(
                    r.reclaimable_by_member.get((vm, self.model), []),
                    (job for job in own if not job.reclaimable),
                ),
            )

    def refusal(self, tally: _Tally) -> NoReclaim:
        if tally.usable:
            return NoReclaim(
                Why.BELOW_ENTITLEMENT,
                "the borrowed GPUs of other members would not make room without taking "
                "them below their entitlement",
            )
        return NoReclaim(
            Why.NO_BORROWER, f"no other member holds borrowed {self.model} GPUs it could use"
        )

    def _above(self, victim_member: str) -> float:
        """allocated / fair share (infinite without a fair share)."""
        key = (victim_member, self.model)
        v_fair = self.fair.get(key, 0.0)
        return float("inf") if v_fair <= 0 else self.alloc.get(key, 0) / v_fair

    def _walk(self, include_young: bool, home: bool = False) -> Iterator[VictimJob]:
        """Jobs on the reclaimer's own nodes, then the others, each pass by member
        furthest above its fair share first, then in the common order."""
        r = self.reclaimer
        model = self.model
        order = sorted(
            (m for m in r.members.get(model, []) if m != self.member and self.may_give(m)),
            key=lambda m: (-self._above(m), m),
        )
        # Without `home` only reclaimable jobs are useful.
        by_owner = r.by_owner_member if home else r.reclaimable_by_owner_member
        by_member = r.by_member if home else r.reclaimable_by_member
        for own_pass in (True, False):
            for vm in order:
                if own_pass:
                    jobs = by_owner.get((self.member, vm, model), [])
                else:
                    jobs = by_member.get((vm, model), [])
                for job in jobs:
                    if (self.member in job.owners) != own_pass or not self.useful(job, home):
                        continue
                    if include_young or self.old_enough(job):
                        yield job


class UpToFairShare(_Attempt):
    """The job takes its member beyond its entitlement: members above their fair share
    (further above it than the reclaimer would be, with `above_ratio`) give up reclaimable
    pods, down to their fair share."""

    above_ratio: float | None
    """The reclaimer's allocated / fair share with the job, when above 1."""
    _givers: list[str] | None
    """`_giving_members`, once found (positions do not change within an attempt)."""

    def __init__(
        self,
        reclaimer: Reclaimer,
        room: _Room,
        alloc: dict[MemberModel, int],
        fair: dict[MemberModel, float],
        above_ratio: float | None,
    ) -> None:
        super().__init__(reclaimer, room, alloc, fair)
        self.above_ratio = above_ratio
        self._givers = None

    def _may_give(self, victim_member: str) -> bool:
        key = (victim_member, self.model)
        v_alloc, v_fair = self.alloc.get(key, 0), self.fair.get(key, 0.0)
        return v_alloc > v_fair + _EPS and (
            self.above_ratio is None or v_fair <= 0 or v_alloc / v_fair > self.above_ratio + _EPS
        )

    def floor(self, key: MemberModel) -> float:
        return self.fair.get(key, 0.0)

    def search(self, include_young: bool) -> tuple[list[VictimJob], Plan] | None:
        if self.room.have + self._most_given() < self.room.need:
            return None  # not enough GPUs even if every giving member gave all it may
        if self._too_few_slots(include_young):
            return None
        return self.select(self._walk(include_young))

    def _too_few_slots(self, include_young: bool) -> bool:
        """The feasible nodes would not hold the job's pods even with every reclaimable
        job of the giving members gone (the young ones too with `include_young`;
        `Reclaimer.freeable`): what `_Room.count` would count with all of them freed. A
        walk frees some of them, so it could not do better. On 584 cycles sampled from
        the 30-day load-1.2 replay of `python -m bench.bench_simulator`, 5,598 walks
        passed `_most_given` (of old victims, and of young ones too for a drain) and 56
        of them found victims; this bound spares 4,655 (on lending caps mostly: counted
        without them, 1,940)."""
        room = self.room
        g = room.pod_gpus
        if g <= 0:
            return False
        giving = self._giving_members()
        r = self.reclaimer
        freeable = r.freeable(include_young)
        free, freeing, nodes, caps = room.state.free_gpu, room.freeing, room.state.nodes, room.caps
        unlimited = 0
        held: dict[str, int] = {}
        for i in room.feasible:
            gpus = free[i]
            if i in freeing:
                gpus += freeing[i][0]
            on = freeable.get(i)
            if on is not None:
                for m in giving:
                    gpus += on.get(m, 0)
            if gpus < g:
                continue
            owner = nodes[i].owner
            if owner is not None and owner in caps:
                held[owner] = held.get(owner, 0) + gpus // g
            else:
                unlimited += gpus // g
        return _SlotCount(unlimited, held, caps).total() < len(room.pods)

    def _most_given(self) -> int:
        """GPUs of the model the giving members could give up at most: each keeps its
        fair share (`keeps_floor`), so gives at most what it holds above it. About half
        the failed attempts on a contended pool fail here, without walking a victim."""
        alloc, fair, model = self.alloc, self.fair, self.model
        return sum(
            max(0, math.floor(alloc.get((m, model), 0) - fair.get((m, model), 0.0) + _EPS))
            for m in self._giving_members()
        )

    def _giving_members(self) -> list[str]:
        """Other members with reclaimable pods of the model whose position lets them give
        (found once per attempt: its search and its drain's each ask two or three
        times)."""
        if self._givers is None:
            r = self.reclaimer
            self._givers = [
                m
                for m in r.reclaimable_members.get(self.model, [])
                if m != self.member and self.may_give(m)
            ]
        return self._givers

    def considered(self, job: VictimJob) -> bool:
        key = (job.member, self.model)
        return self.useful(job) and self.alloc.get(key, 0) > self.fair.get(key, 0.0) + _EPS

    def tallied(self) -> Iterable[tuple[str, Iterable[VictimJob]]]:
        """The reclaimable jobs of the model of members above their fair share. A list,
        not a generator: compiled, a generator resumes through Python's iterator protocol,
        and most failed attempts (the most common) tally every member."""
        r = self.reclaimer
        out: list[tuple[str, Iterable[VictimJob]]] = []
        for vm in r.reclaimable_members.get(self.model, []):
            key = (vm, self.model)
            if vm != self.member and self.alloc.get(key, 0) > self.fair.get(key, 0.0) + _EPS:
                out.append((vm, r.reclaimable_by_member.get(key, [])))
        return out

    def refusal(self, tally: _Tally) -> NoReclaim:
        if tally.usable:
            return NoReclaim(
                Why.NO_ROOM,
                "the borrowed GPUs of members above their fair share would not make room",
            )
        if tally.not_giving:
            return NoReclaim(
                Why.NOT_FURTHER_ABOVE,
                f"no member further above its own fair share holds borrowed {self.model} "
                "GPUs it could use",
            )
        return NoReclaim(
            Why.NONE_ABOVE,
            f"no member above its fair share holds borrowed {self.model} GPUs it could use",
        )

    def _walk(self, include_young: bool) -> Iterator[VictimJob]:
        """Jobs on the reclaimer's own nodes, then the others, in the common order."""
        r = self.reclaimer
        model = self.model
        giving = self._giving_members()
        for own_pass in (True, False):
            if own_pass:
                lists = [r.reclaimable_by_owner_member.get((self.member, m, model)) for m in giving]
            else:
                lists = [r.reclaimable_by_member.get((m, model)) for m in giving]
            for job in r.merged(lst for lst in lists if lst):
                if (self.member in job.owners) != own_pass or not self.useful(job):
                    continue
                if include_young or self.old_enough(job):
                    yield job


class Overtaken(_Attempt):
    """The member's own jobs that come after the waiting job in its queue (lower
    priority, or the same and submitted later), each smaller than it and resuming where
    it stopped, give their GPUs back to it. They overtook it because they were small
    enough to start on the GPUs freed one by one while it needed many at once. The
    victims lose no work (they resume), the member's allocation does not grow by their
    GPUs, and a strict order (the queue's) means a victim never takes its GPUs back from
    the job in turn."""

    place: tuple[int, float, str]
    """The waiting job's (-priority, submitted_at, job id)."""
    gpus: int

    def __init__(
        self,
        reclaimer: Reclaimer,
        room: _Room,
        alloc: dict[MemberModel, int],
        fair: dict[MemberModel, float],
        place: tuple[int, float, str],
    ) -> None:
        super().__init__(reclaimer, room, alloc, fair)
        self.place = place
        self.gpus = room.need

    def _may_give(self, victim_member: str) -> bool:
        return victim_member == self.member

    def floor(self, key: MemberModel) -> float:
        return float("-inf")

    def search(self, include_young: bool) -> tuple[list[VictimJob], Plan] | None:
        return self.select(self._walk(include_young))

    def considered(self, job: VictimJob) -> bool:
        return self.behind(job)

    def behind(self, job: VictimJob) -> bool:
        """An own later, smaller, checkpointable job the waiting job could use."""
        if (
            job.member != self.member
            or not job.checkpointable
            or job.job_id in self.reclaimer.gone
            or self.model not in job.by_model
            or sum(job.by_model.values()) >= self.gpus
            or (-job.priority, job.submitted_at, job.job_id) <= self.place
        ):
            return False
        return self.room.runs_here(job)

    def tallied(self) -> Iterable[tuple[str, Iterable[VictimJob]]]:
        yield self.member, self.reclaimer.by_member.get((self.member, self.model), [])

    def refusal(self, tally: _Tally) -> NoReclaim:
        return NoReclaim(
            Why.NO_ROOM,
            "its member's own later, smaller jobs that resume would not make room",
        )

    def _walk(self, include_young: bool) -> Iterator[VictimJob]:
        """Jobs on the member's own nodes, then the others, in the common order."""
        r = self.reclaimer
        jobs = r.by_member.get((self.member, self.model), [])
        for own_pass in (True, False):
            for job in jobs:
                if (self.member in job.owners) != own_pass or not self.behind(job):
                    continue
                if include_young or self.old_enough(job):
                    yield job


def _drain(attempt: _Attempt) -> ReclaimResult | NoReclaim:
    """Young pods would make room: hold the free capacity for the job while they age."""
    found = attempt.search(include_young=True)
    if found is not None:
        return ReclaimResult(tuple(found[0]), found[1], wait=True)
    # Even the young pods would not make room: their age is not why the job waits, so
    # the answer is the one it would get were they old enough.
    return attempt.refusal(_Tally(usable=True))
