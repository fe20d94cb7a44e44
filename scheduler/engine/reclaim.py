"""Reclaim: preempt borrowed pods so that a member gets back its entitlement, or gets
up to its fair share.

Runs for a job that did not fit when the job keeps its member within its entitlement, or
when its member is below its fair share, for the job's GPU model, counting GPUs already
held for its nominated jobs (so one shortfall is not reclaimed twice).

Within the entitlement (allocated + held for nominations + the job's GPUs <= entitlement
for that model) the guarantee applies: an entitlement is what a member can always get
back, and borrowed pods are reclaimable by definition. Victims may then be ANY job of
another member holding a borrowed pod (see `allocation`), even if that member falls
below its fair share, but never below its entitlement on any model the victim job
holds. Without this a member below its entitlement could wait forever behind
fragmentation: it needs 8 GPUs on one node, 2 + 2 are free elsewhere, and the borrower
on its node sits exactly at its fair share. One exception to the victim's floor: when
no set within it makes room, any job on the reclaiming member's OWN nodes whose member
is above its entitlement is taken whole (whether `allocation` counted its pods borrowed
or not: that only says which of the member's pods are the extra ones), even below that
entitlement. Otherwise a borrower
whose gang straddles its entitlement (18 of 16 GPUs: a 2 x 8 gang on the owner's two
nodes, its own nodes lent or fragmented) keeps the owner at 0 of its contribution for as
long as the gang runs (21 h in the demo); the borrower, now below its entitlement, gets
its own nodes back by the same rules. Victims are tried on the reclaiming
member's own nodes first, then by member, furthest above its fair share first
(allocated / fair share at the start of the attempt), then the youngest, the lowest
priority and job id. Min runtime, whole gangs, terminating pods and the minimal set work
as below.

Beyond the entitlement, the fair-share rules:

- When the member stays within its fair share with the job, any member above its own fair
  share may give up borrowed pods. When the job would take it above its fair share (a big
  gang, or a fractional fair share), only members further above theirs may: the victim
  member's allocated / fair share must exceed the reclaimer's once the job runs. Without
  this, a member just below its share could never run a gang bigger than the gap, while
  others sit far above theirs on its hardware.

- Victims are whole jobs (a gang is preempted with all its pods) of *other* members that
  hold at least one borrowed pod (see `allocation`) and are above their fair share for
  that model; pods not scheduled by fairpool and terminating pods are never victims.
- A victim whose member would fall below its fair share once it is gone is skipped.
- Pods younger than `sharing.min_runtime_seconds` are skipped unless
  `sharing.preempt_below_min_runtime` is set.
- Only victims with a pod on a node the job could use are considered, in this order:
  victims on the reclaiming member's own nodes first (the owner gets its hardware back),
  then the youngest (least work lost), then the lowest priority, then job id.
- Terminating pods already count as capacity being freed: if the job fits once they are
  gone, nothing is preempted, the job is only nominated.
- Victims are added in that order until a what-if placement of the whole job succeeds on
  the free capacity plus what they free; then each victim except the last one added is
  dropped again if the job still fits without it (a minimal set).
- When only pods younger than the minimum runtime would make room, nothing is preempted;
  the free capacity the job would use is held for it (a drain) until they are old enough.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.engine.entitlement import MemberModel
from scheduler.engine.gangs import Plan, plan_job
from scheduler.engine.placement import ClusterState, Res, spec_res
from scheduler.engine.snapshot import PendingPod, RunningPod

_EPS = 1e-9
NOT_FURTHER_ABOVE = "not-further-above"
"""`attempt`'s answer when the only members above their fair share are not further
above it than the reclaimer would be."""


@dataclass(slots=True)
class VictimJob:
    job_id: str
    member: str
    pods: list[tuple[RunningPod, int]] = field(default_factory=list)
    """(pod, node index); pods whose node is gone are left out."""
    youngest_start: float = float("-inf")
    priority: int = -(2**62)
    borrowed: bool = False
    owners: frozenset[str | None] = frozenset()
    """Owners of the nodes its pods run on."""
    by_model: dict[str, int] = field(default_factory=dict)
    """GPUs it holds per GPU model."""


@dataclass(frozen=True, slots=True)
class ReclaimResult:
    victims: tuple[VictimJob, ...]
    plan: Plan
    wait: bool = False
    """Some victims have not run `min_runtime_seconds` yet: nothing is preempted now, but
    the free capacity of the plan is held for the job so that it is not handed to others
    while the victims age (otherwise a big job could starve behind a stream of young
    borrowed pods)."""


class Reclaimer:
    """Victim index for one cycle (built on first use; reclaim is rare).

    Victim jobs are kept in one order, youngest first, then lowest priority, then job id;
    an attempt walks it twice (victims on the reclaimer's own nodes, then the others) and
    stops as soon as the job fits, so a reclaim costs what it takes, not the cluster size.
    The same order is kept per victim member (and per owner and member) for reclaims
    within the entitlement, which walk members furthest above their fair share first.
    """

    def __init__(
        self,
        state: ClusterState,
        running: Sequence[RunningPod],
        borrowed_pods: set[str],
        now: float,
        min_runtime: int,
        below_min_runtime: bool,
    ) -> None:
        self.state = state
        self.now = now
        self.min_runtime = min_runtime
        self.below_min_runtime = below_min_runtime
        # Jobs with a borrowed pod are victims; their other pods come along. Every other
        # job is indexed too, for an owner taking back its own nodes (see `attempt`).
        jobs: dict[str, VictimJob] = {}
        index = state.index
        models = state.model
        for pod in running:
            if pod.terminating or pod.member is None:
                continue
            i = index.get(pod.node)
            if i is None or not pod.scheduled_by_fairpool:
                continue
            job = jobs.get(pod.job_id)
            if job is None:
                job = jobs[pod.job_id] = VictimJob(pod.job_id, pod.member)
            job.pods.append((pod, i))
            if pod.started_at > job.youngest_start:
                job.youngest_start = pod.started_at
            if pod.priority > job.priority:
                job.priority = pod.priority
            if pod.uid in borrowed_pods:
                job.borrowed = True
            model = models[i]
            job.by_model[model] = job.by_model.get(model, 0) + pod.spec.gpus
        victims = list(jobs.values())
        self.borrowing = sum(1 for j in victims if j.borrowed)
        self.gone_borrowing = 0
        for job in victims:
            job.pods.sort(key=lambda pi: pi[0].uid)
            job.owners = frozenset(state.nodes[i].owner for _, i in job.pods)
        self.jobs = sorted(victims, key=lambda j: (-j.youngest_start, j.priority, j.job_id))
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
        return self.gone_borrowing < self.borrowing

    def attempt(
        self,
        pods: Sequence[PendingPod],
        member: str,
        model: str,
        alloc: Mapping[MemberModel, int],
        fair: Mapping[MemberModel, float],
        lendable: Mapping[str, int] | None,
        above_ratio: float | None = None,
        entitlement: Mapping[MemberModel, int] | None = None,
    ) -> ReclaimResult | str:
        """Victims and the plan they make possible, or why nothing can be reclaimed.
        `above_ratio`: the reclaimer's allocated / fair share once the job runs, when that
        exceeds 1; only members further above their own fair share are victims then.
        `entitlement`: given when the job keeps its member within its entitlement; any
        borrowed pods may be victims then, down to their member's entitlement."""
        state = self.state
        fkey = (tuple(sorted({id(p.spec) for p in pods})), model)
        feasible = self._feasible.get(fkey)
        if feasible is None:
            feasible = set()
            for pod in pods:
                for i in state.candidate_nodes(pod.spec):
                    if state.model[i] == model:
                        feasible.add(i)
            self._feasible[fkey] = feasible
        if not feasible:
            return "no node it may use exists"
        everywhere = len(feasible) >= self._model_nodes.get(model, 0)
        extra: dict[int, Res] = {}
        if state.term_pods > 0:
            for i in feasible:
                t = state.term[i]
                if any(t):
                    extra[i] = (t[0], t[1], t[2], t[3])
        models = frozenset({model})
        need = sum(p.spec.gpus for p in pods)
        base_have = sum(max(0, state.free_gpu[i]) for i in feasible) + sum(
            e[0] for e in extra.values()
        )
        if base_have >= need:
            plan = plan_job(state, pods, member, lendable, extra, models)
            if plan is not None:
                return ReclaimResult((), plan)

        # Members that may give something up for this job.
        giving: dict[str, bool] = {}

        def may_give(victim_member: str) -> bool:
            found = giving.get(victim_member)
            if found is None:
                key = (victim_member, model)
                v_alloc, v_fair = alloc.get(key, 0), fair.get(key, 0.0)
                if entitlement is not None:
                    found = v_alloc > entitlement.get(key, 0)
                else:
                    found = v_alloc > v_fair + _EPS and (
                        above_ratio is None or v_fair <= 0 or v_alloc / v_fair > above_ratio + _EPS
                    )
                giving[victim_member] = found
            return found

        def floor(key: MemberModel) -> float:
            """How low a victim member may go: its entitlement or its fair share."""
            if entitlement is not None:
                return float(entitlement.get(key, 0))
            return fair.get(key, 0.0)

        def useful(job: VictimJob, home: bool = False) -> bool:
            """`home`: a job without a borrowed pod on the reclaimer's own nodes counts
            too (its member must still be above its entitlement: `may_give`)."""
            if job.job_id in self.gone or job.member == member or model not in job.by_model:
                return False
            if not job.borrowed and not (home and member in job.owners):
                return False
            return everywhere or any(i in feasible for _, i in job.pods)

        def old_enough(job: VictimJob) -> bool:
            return self.below_min_runtime or self.now - job.youngest_start >= self.min_runtime

        def walk(include_young: bool, home: bool = False) -> Iterator[VictimJob]:
            if entitlement is not None:
                yield from walk_by_member(include_young, home)
                return
            for own_pass in (True, False):
                for job in self.by_owner.get(member, []) if own_pass else self.jobs:
                    if (member in job.owners) != own_pass or not useful(job):
                        continue
                    if may_give(job.member) and (include_young or old_enough(job)):
                        yield job

        def above(victim_member: str) -> float:
            key = (victim_member, model)
            v_fair = fair.get(key, 0.0)
            return float("inf") if v_fair <= 0 else alloc.get(key, 0) / v_fair

        def walk_by_member(include_young: bool, home: bool = False) -> Iterator[VictimJob]:
            order = sorted(
                (m for m in self.by_member if m != member and may_give(m)),
                key=lambda m: (-above(m), m),
            )
            for own_pass in (True, False):
                for vm in order:
                    jobs = (
                        self.by_owner_member.get((member, vm), [])
                        if own_pass
                        else self.by_member[vm]
                    )
                    for job in jobs:
                        if (member in job.owners) != own_pass or not useful(job, home):
                            continue
                        if include_young or old_enough(job):
                            yield job

        def select(
            jobs: Iterator[VictimJob], home: bool = False
        ) -> tuple[list[VictimJob], Plan] | None:
            """`home`: jobs on the reclaimer's own nodes may take their member below its
            entitlement (the member is above it, or it would not give: see `may_give`)."""
            room = dict(extra)
            have = base_have
            taken: dict[MemberModel, int] = {}
            chosen: list[VictimJob] = []
            plan: Plan | None = None
            for job in jobs:
                if not (home and member in job.owners) and any(
                    alloc.get((job.member, m), 0) - taken.get((job.member, m), 0) - g
                    < floor((job.member, m)) - _EPS
                    for m, g in job.by_model.items()
                    if g > 0
                ):
                    continue
                for m, g in job.by_model.items():
                    taken[(job.member, m)] = taken.get((job.member, m), 0) + g
                chosen.append(job)
                _add(room, job, feasible, 1)
                have += sum(p.spec.gpus for p, i in job.pods if i in feasible)
                if have < need:
                    continue
                plan = plan_job(state, pods, member, lendable, room, models)
                if plan is not None:
                    break
            if plan is None:
                return None
            for job in list(reversed(chosen[:-1])):
                _add(room, job, feasible, -1)
                trial = plan_job(state, pods, member, lendable, room, models)
                if trial is not None:
                    chosen.remove(job)
                    plan = trial
                else:
                    _add(room, job, feasible, 1)
            return chosen, plan

        found = select(walk(include_young=False))
        if found is None and entitlement is not None:
            found = select(walk(include_young=False, home=True), home=True)
        if found is not None:
            for job in found[0]:
                self.gone.add(job.job_id)
                self.gone_borrowing += job.borrowed
            return ReclaimResult(tuple(found[0]), found[1])
        # Why not: count what was ruled out (only on failure, which is cached).
        young = not_further = usable = 0
        for job in self.jobs:
            if not useful(job, entitlement is not None):
                continue
            key = (job.member, model)
            if entitlement is None and alloc.get(key, 0) <= fair.get(key, 0.0) + _EPS:
                continue
            if not may_give(job.member):
                not_further += 1
            elif not old_enough(job):
                young += 1
            else:
                usable += 1
        if young:
            found = select(walk(include_young=True))
            if found is None and entitlement is not None:
                found = select(walk(include_young=True, home=True), home=True)
            if found is not None:
                return ReclaimResult(tuple(found[0]), found[1], wait=True)
            return (
                f"the borrowed pods that could make room are younger than the minimum "
                f"runtime of {self.min_runtime} s"
            )
        if entitlement is not None:
            if usable:
                return (
                    "the borrowed GPUs of other members would not make room without taking "
                    "them below their entitlement"
                )
            return f"no other member holds borrowed {model} GPUs it could use"
        if usable:
            return "the borrowed GPUs of members above their fair share would not make room"
        if not_further:
            return NOT_FURTHER_ABOVE
        return f"no member above its fair share holds borrowed {model} GPUs it could use"


def _add(extra: dict[int, Res], job: VictimJob, feasible: set[int], sign: int) -> None:
    for pod, i in job.pods:
        if i not in feasible:
            continue
        r = spec_res(pod.spec)
        e = extra.get(i, (0, 0, 0, 0))
        extra[i] = (
            e[0] + sign * r[0],
            e[1] + sign * r[1],
            e[2] + sign * r[2],
            e[3] + sign * r[3],
        )
