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

- Victims are whole jobs (a gang is preempted with all its pods) of *other* members;
  pods not scheduled by fairpool and terminating pods are never victims. Only victims
  with a pod on a node the job could use are considered.
- The common order loses the least work first: jobs of checkpointable members (they
  resume where they stopped), then the fewest GPU-seconds run since their last start
  (what a restart throws away), then the lowest priority, then job id.
- A job already reclaimed `sharing.max_reclaims_per_job` times is never a victim.
- Terminating pods already count as capacity being freed: if the job fits once they are
  gone, nothing is preempted, the job is only nominated.
- Victims are added in order until a what-if placement of the whole job succeeds on the
  free capacity plus what they free; then each victim except the last one added is
  dropped again if the job still fits without it (a minimal set).
- Pods younger than `sharing.min_runtime_seconds` are skipped unless
  `sharing.preempt_below_min_runtime` is set.

Drain (`_drain`): when only pods younger than the minimum runtime would make room,
nothing is preempted; the free capacity the job would use is held for it until they are
old enough. Otherwise a big job could starve behind a stream of young reclaimable pods,
each new one taking the capacity freed by the last.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from scheduler.engine.snapshot import PendingPod, RunningPod
from tests.reference_engine.entitlement import MemberModel
from tests.reference_engine.explain import at_limit_detail
from tests.reference_engine.gangs import Plan, plan_job
from tests.reference_engine.placement import ClusterState, Res, spec_res

_EPS = 1e-9


@dataclass(slots=True)
class VictimJob:
    job_id: str
    member: str
    pods: list[tuple[RunningPod, int]] = field(default_factory=list)
    """(pod, node index); pods whose node is gone are left out."""
    youngest_start: float = float("-inf")
    priority: int = -(2**62)
    reclaimable: bool = False
    """It has a reclaimable pod."""
    owners: frozenset[str | None] = frozenset()
    """Owners of the nodes its pods run on."""
    by_model: dict[str, int] = field(default_factory=dict)
    """GPUs it holds per GPU model."""
    run_gpu_s: float = 0.0
    """GPU-seconds its pods ran since they last started: lost if it restarts from zero."""
    checkpointable: bool = False
    """Its member resumes preempted jobs where they stopped: reclaiming it loses nothing."""
    submitted_at: float = float("inf")
    """When it was submitted (its earliest pod's)."""

    def loss_key(self) -> tuple[int, float, int, str]:
        """The common order: least work lost first (see the module)."""
        return (0 if self.checkpointable else 1, self.run_gpu_s, self.priority, self.job_id)


@dataclass(frozen=True, slots=True)
class ReclaimResult:
    victims: tuple[VictimJob, ...]
    plan: Plan
    wait: bool = False
    """A drain: some victims have not run `min_runtime_seconds` yet, so nothing is
    preempted now, but the free capacity of the plan is held for the job so that it is
    not handed to others while the victims age."""


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


@dataclass(frozen=True, slots=True)
class NoReclaim:
    why: Why
    detail: str
    """The reason as the end of a sentence ("nothing can be reclaimed: <detail>")."""


@dataclass(slots=True)
class _Tally:
    """What ruled out the victims of a failed attempt."""

    young: int = 0
    usable: int = 0
    not_giving: int = 0


class Reclaimer:
    """Victim index for one cycle (built on first use; reclaim is rare).

    Victim jobs are kept in one order, least work lost first (`VictimJob.loss_key`);
    an attempt walks it twice (victims on the reclaimer's own nodes, then the others) and
    stops as soon as the job fits, so a reclaim costs what it takes, not the cluster size.
    The same order is kept per victim member (and per owner and member) for reclaims
    within the entitlement, which walk members furthest above their fair share first.
    """

    def __init__(
        self,
        state: ClusterState,
        running: Sequence[RunningPod],
        reclaimable_pods: set[str],
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
        victims, self.at_limit = _victim_jobs(
            state, running, reclaimable_pods, now, checkpointable, max_reclaims
        )
        self.max_reclaims = max_reclaims
        self.reclaimable_jobs = sum(1 for j in victims if j.reclaimable)
        self.gone_reclaimable = 0
        self.jobs = sorted(victims, key=VictimJob.loss_key)
        self.by_owner: dict[str | None, list[VictimJob]] = {}
        self.by_member: dict[str, list[VictimJob]] = {}
        self.by_owner_member: dict[tuple[str | None, str], list[VictimJob]] = {}
        for job in self.jobs:
            self.by_member.setdefault(job.member, []).append(job)
            for owner in sorted(job.owners, key=lambda o: o or ""):
                self.by_owner.setdefault(owner, []).append(job)
                self.by_owner_member.setdefault((owner, job.member), []).append(job)
        self.gone: set[str] = set()
        self._feasible: dict[tuple[object, ...], set[int]] = {}
        self._model_nodes = state.placeable_per_model

    def has_candidates(self) -> bool:
        return self.gone_reclaimable < self.reclaimable_jobs

    def within_entitlement(
        self,
        pods: Sequence[PendingPod],
        member: str,
        model: str,
        alloc: Mapping[MemberModel, int],
        fair: Mapping[MemberModel, float],
        entitlement: Mapping[MemberModel, int],
        lendable: Mapping[str, int] | None,
    ) -> ReclaimResult | NoReclaim:
        """Victims and the plan they make possible for a job that keeps `member` within
        its entitlement, or why nothing can be reclaimed."""
        room = self._room(pods, member, model, lendable)
        if room is None:
            return NoReclaim(Why.NO_NODE, "no node it may use exists")
        return self._attempt(WithinEntitlement(self, room, alloc, fair, entitlement))

    def up_to_fair_share(
        self,
        pods: Sequence[PendingPod],
        member: str,
        model: str,
        alloc: Mapping[MemberModel, int],
        fair: Mapping[MemberModel, float],
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
        alloc: Mapping[MemberModel, int],
        fair: Mapping[MemberModel, float],
        lendable: Mapping[str, int] | None,
        place: tuple[int, float, str],
        cautious: bool = False,
    ) -> ReclaimResult | NoReclaim:
        """Victims among the member's own later, smaller jobs that resume, for a job at
        `place` (-priority, submitted_at, job id) in its member's queue."""
        room = self._room(pods, member, model, lendable, cautious)
        if room is None:
            return NoReclaim(Why.NO_NODE, "no node it may use exists")
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
        # Why not: count what was ruled out (only on failure, which is cached).
        tally = attempt.tally()
        result = _drain(attempt) if tally.young else attempt.refusal(tally)
        if not isinstance(result, NoReclaim):
            return result
        room = attempt.room
        detail = self._held_at_limit(room.member, room.model, room.feasible)
        return NoReclaim(result.why, result.detail + detail)

    def at_limit_detail(
        self,
        pods: Sequence[PendingPod],
        member: str,
        model: str,
    ) -> str:
        """The end of the sentence of a job nothing is reclaimed for: borrowed GPUs it
        could use of other members' jobs at the reclaim limit ("" when none)."""
        return self._held_at_limit(member, model, self._feasible_nodes(pods, model))

    def _held_at_limit(self, member: str, model: str, feasible: set[int]) -> str:
        if self.max_reclaims is None:
            return ""
        held: dict[str, tuple[str, int]] = {}
        for pod, i in self.at_limit:
            holder = pod.member
            if holder is not None and holder != member and i in feasible:
                _, gpus = held.get(pod.job_id, (holder, 0))
                held[pod.job_id] = (holder, gpus + pod.spec.gpus)
        return at_limit_detail(held, model, self.max_reclaims) if held else ""

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
            have=sum(max(0, state.free_gpu[i]) for i in feasible)
            + sum(e[0] for e in freeing.values()),
            need=sum(p.spec.gpus for p in pods),
            cautious=cautious,
        )

    def _feasible_nodes(self, pods: Sequence[PendingPod], model: str) -> set[int]:
        """Nodes of `model` that could take one of the pods (cached per pod shapes)."""
        key = (tuple(sorted({id(p.spec) for p in pods})), model)
        feasible = self._feasible.get(key)
        if feasible is None:
            feasible = set()
            for pod in pods:
                for i in self.state.candidate_nodes(pod.spec):
                    if self.state.model[i] == model:
                        feasible.add(i)
            self._feasible[key] = feasible
        return feasible


def _victim_jobs(
    state: ClusterState,
    running: Sequence[RunningPod],
    reclaimable_pods: set[str],
    now: float,
    checkpointable: frozenset[str],
    max_reclaims: int | None,
) -> tuple[list[VictimJob], list[tuple[RunningPod, int]]]:
    """Running jobs of members, scheduled by fairpool, on known nodes, without their
    terminating pods and without jobs reclaimed `max_reclaims` times already. Jobs with a
    reclaimable pod are victims, their other pods coming along; every other job is listed
    too, for an owner taking back its own nodes. Also the reclaimable pods (and nodes) of
    the jobs left out for their reclaims."""
    jobs: dict[str, VictimJob] = {}
    spent: set[str] = set()
    at_limit: list[tuple[RunningPod, int]] = []
    for pod in running:
        if pod.terminating or pod.member is None:
            continue
        i = state.index.get(pod.node)
        if max_reclaims is not None and pod.reclaims >= max_reclaims:
            spent.add(pod.job_id)
            if i is not None and pod.scheduled_by_fairpool and pod.uid in reclaimable_pods:
                at_limit.append((pod, i))
            continue
        if i is None or not pod.scheduled_by_fairpool:
            continue
        resumes = pod.resumes(checkpointable)
        job = jobs.get(pod.job_id)
        if job is None:
            job = jobs[pod.job_id] = VictimJob(pod.job_id, pod.member)
            job.checkpointable = resumes
        # A gang restarts whole: it resumes only if every pod does.
        job.checkpointable = job.checkpointable and resumes
        job.pods.append((pod, i))
        job.youngest_start = max(job.youngest_start, pod.started_at)
        job.run_gpu_s += pod.spec.gpus * max(0.0, now - pod.started_at)
        job.priority = max(job.priority, pod.priority)
        job.submitted_at = min(job.submitted_at, pod.submitted_at)
        if pod.uid in reclaimable_pods:
            job.reclaimable = True
        model = state.model[i]
        job.by_model[model] = job.by_model.get(model, 0) + pod.spec.gpus
    victims = [job for job_id, job in jobs.items() if job_id not in spent]
    for job in victims:
        job.pods.sort(key=lambda pi: pi[0].uid)
        job.owners = frozenset(state.nodes[i].owner for _, i in job.pods)
    return victims, at_limit


@dataclass(slots=True)
class _Room:
    """Where one job could run: the nodes it may use, and what is free on them."""

    state: ClusterState
    pods: Sequence[PendingPod]
    member: str
    model: str
    lendable: Mapping[str, int] | None
    feasible: set[int]
    everywhere: bool
    """Every placeable node of the model is feasible (no need to look where a victim
    runs)."""
    freeing: dict[int, Res]
    """Resources of terminating pods per feasible node: capacity already being freed."""
    have: int
    """Free GPUs on feasible nodes, counting those being freed."""
    need: int
    cautious: bool = False
    """The job borrows and would lose its progress if reclaimed (see `placement`)."""

    def plan(self, extra: Mapping[int, Res]) -> Plan | None:
        """A what-if placement of the whole job with `extra` freed on its nodes."""
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

    def gpus_freed(self, job: VictimJob) -> int:
        return sum(p.spec.gpus for p, i in job.pods if i in self.feasible)

    def free(self, extra: dict[int, Res], job: VictimJob, sign: int) -> None:
        """Add (sign 1) or remove (sign -1) what `job` frees on feasible nodes."""
        for pod, i in job.pods:
            if i not in self.feasible:
                continue
            r = spec_res(pod.spec)
            e = extra.get(i, (0, 0, 0, 0))
            extra[i] = (
                e[0] + sign * r[0],
                e[1] + sign * r[1],
                e[2] + sign * r[2],
                e[3] + sign * r[3],
            )


@dataclass(eq=False)
class _Attempt(ABC):
    """One reclaim attempt: the shared victim-set search. Subclasses are the modes: who
    may give GPUs up, how low they may go, and in which order they are tried."""

    reclaimer: Reclaimer
    room: _Room
    alloc: Mapping[MemberModel, int]
    fair: Mapping[MemberModel, float]
    _giving: dict[str, bool] = field(default_factory=dict, init=False)
    """`may_give` per victim member: positions do not change within an attempt."""

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
        tally = _Tally()
        for job in self.reclaimer.jobs:
            if not self.considered(job):
                continue
            if not self.may_give(job.member):
                tally.not_giving += 1
            elif not self.old_enough(job):
                tally.young += 1
            else:
                tally.usable += 1
        return tally

    def keeps_floor(self, job: VictimJob, taken: Mapping[MemberModel, int]) -> bool:
        """Its member stays at or above its floor on every model once `job` is gone too
        (`taken`: what the victims chosen so far take from each member)."""
        return not any(
            self.alloc.get((job.member, m), 0) - taken.get((job.member, m), 0) - g
            < self.floor((job.member, m)) - _EPS
            for m, g in job.by_model.items()
            if g > 0
        )

    def select(
        self, jobs: Iterable[VictimJob], home: bool = False
    ) -> tuple[list[VictimJob], Plan] | None:
        """Victims from `jobs`, in order, until the job fits; then the minimal set.
        `home`: jobs on the reclaimer's own nodes may take their member below its floor
        (the member is above its entitlement, or it would not give: see `may_give`)."""
        room = self.room
        extra = dict(room.freeing)
        have = room.have
        taken: dict[MemberModel, int] = {}
        chosen: list[VictimJob] = []
        plan: Plan | None = None
        for job in jobs:
            if not (home and self.member in job.owners) and not self.keeps_floor(job, taken):
                continue
            for m, g in job.by_model.items():
                taken[(job.member, m)] = taken.get((job.member, m), 0) + g
            chosen.append(job)
            room.free(extra, job, 1)
            have += room.gpus_freed(job)
            if have < room.need:
                continue
            plan = room.plan(extra)
            if plan is not None:
                break
        if plan is None:
            return None
        return self._minimal(chosen, plan, extra)

    def _minimal(
        self, chosen: list[VictimJob], plan: Plan, extra: dict[int, Res]
    ) -> tuple[list[VictimJob], Plan]:
        """Drop each victim but the last one added when the job fits without it."""
        room = self.room
        for job in list(reversed(chosen[:-1])):
            room.free(extra, job, -1)
            trial = room.plan(extra)
            if trial is not None:
                chosen.remove(job)
                plan = trial
            else:
                room.free(extra, job, 1)
        return chosen, plan


@dataclass(eq=False)
class WithinEntitlement(_Attempt):
    """The job keeps its member within its entitlement: any other member above its
    entitlement gives up reclaimable pods, down to that entitlement, members furthest above
    their fair share first; failing that, jobs on the reclaimer's own nodes are taken
    back whole."""

    entitlement: Mapping[MemberModel, int]

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
        order = sorted(
            (m for m in r.by_member if m != self.member and self.may_give(m)),
            key=lambda m: (-self._above(m), m),
        )
        for own_pass in (True, False):
            for vm in order:
                jobs = r.by_owner_member.get((self.member, vm), []) if own_pass else r.by_member[vm]
                for job in jobs:
                    if (self.member in job.owners) != own_pass or not self.useful(job, home):
                        continue
                    if include_young or self.old_enough(job):
                        yield job


@dataclass(eq=False)
class UpToFairShare(_Attempt):
    """The job takes its member beyond its entitlement: members above their fair share
    (further above it than the reclaimer would be, with `above_ratio`) give up reclaimable
    pods, down to their fair share."""

    above_ratio: float | None
    """The reclaimer's allocated / fair share with the job, when above 1."""

    def _may_give(self, victim_member: str) -> bool:
        key = (victim_member, self.model)
        v_alloc, v_fair = self.alloc.get(key, 0), self.fair.get(key, 0.0)
        return v_alloc > v_fair + _EPS and (
            self.above_ratio is None or v_fair <= 0 or v_alloc / v_fair > self.above_ratio + _EPS
        )

    def floor(self, key: MemberModel) -> float:
        return self.fair.get(key, 0.0)

    def search(self, include_young: bool) -> tuple[list[VictimJob], Plan] | None:
        return self.select(self._walk(include_young))

    def considered(self, job: VictimJob) -> bool:
        key = (job.member, self.model)
        return self.useful(job) and self.alloc.get(key, 0) > self.fair.get(key, 0.0) + _EPS

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
        for own_pass in (True, False):
            for job in r.by_owner.get(self.member, []) if own_pass else r.jobs:
                if (self.member in job.owners) != own_pass or not self.useful(job):
                    continue
                if self.may_give(job.member) and (include_young or self.old_enough(job)):
                    yield job


@dataclass(eq=False)
class Overtaken(_Attempt):
    """The member's own jobs after the waiting job in its queue, smaller than it and
    resuming where they stop, give their GPUs back to it."""

    place: tuple[int, float, str] = (0, 0.0, "")

    def _may_give(self, victim_member: str) -> bool:
        return victim_member == self.member

    def floor(self, key: MemberModel) -> float:
        return float("-inf")

    def search(self, include_young: bool) -> tuple[list[VictimJob], Plan] | None:
        return self.select(self._walk(include_young))

    def considered(self, job: VictimJob) -> bool:
        return (
            job.member == self.member
            and job.checkpointable
            and job.job_id not in self.reclaimer.gone
            and self.model in job.by_model
            and sum(job.by_model.values()) < self.room.need
            and (-job.priority, job.submitted_at, job.job_id) > self.place
            and self.room.runs_here(job)
        )

    def refusal(self, tally: _Tally) -> NoReclaim:
        return NoReclaim(
            Why.NO_ROOM, "its member's own later, smaller jobs that resume would not make room"
        )

    def _walk(self, include_young: bool) -> Iterator[VictimJob]:
        r = self.reclaimer
        for own_pass in (True, False):
            for job in r.jobs:
                if (self.member in job.owners) != own_pass or not self.considered(job):
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
