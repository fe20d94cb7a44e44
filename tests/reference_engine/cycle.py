"""One scheduling cycle: shares, order, placement, gangs, reclaim and explanations.

`schedule(snapshot, policy)` is a pure function: no I/O, no clock, no randomness, and
every collection is walked in an order fixed by names and ids, so the same snapshot and
policy give identical decisions whatever the order of the snapshot's tuples.

The cycle:
1. Shares (`shares.build`): entitlements, allocations, demand and fair shares per
   (member, GPU model), as at the instant of the snapshot. `Decisions.shares` reports
   exactly these (the same as `compute_shares`).
2. Capacity promised to nominated jobs (an earlier reclaim) is held for them first.
3. Jobs are taken one at a time from the member furthest below its fair share
   (`ordering`). A job is checked against its member's limits (`max_gpus`; with
   borrowing off, its entitlement; owners' `lending_limit`), then placed: a single pod
   on the best node (`placement`), a gang whole or not at all (`gang`). A pod shape that
   failed once is not tried again in the cycle: capacity only shrinks within a cycle.
   A job that does not fit does not stop the member's later jobs (backfill), and when
   nothing about it can change within the cycle, the member's following jobs of the same
   shape wait for the same reason without a turn each.
4. A job that does not fit, of a member below its fair share for the job's GPU model or
   that keeps its member within its entitlement (counting GPUs already held for its
   nominated jobs), triggers reclaim (`reclaim`):
   preemptions plus a nomination holding the freed capacity for it, or, when the only
   pods to take back are younger than the minimum runtime, a hold on the free capacity
   it will use (a drain, not reported as a nomination). A job whose nominated capacity
   is still being freed by terminating pods does not reclaim more.
5. Every job still waiting gets one sentence (`explain`).

Bind order: jobs in the order they were placed, the pods of a gang one after another.
Preemptions: per reclaim, victims in the order chosen, pods by uid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from scheduler.engine.decisions import (
    Bind,
    Decisions,
    MemberShare,
    Nomination,
    Preemption,
    PreemptionCause,
)
from scheduler.engine.explain import (  # the sentences only, not decisions
    drain_detail,
    job_name,
    max_gpus_detail,
    no_borrowing_detail,
    overtook_clause,
)
from scheduler.engine.mentions import job_of, mention  # the sentences only, as above
from scheduler.engine.reach import (  # the sentences only, as above
    gang_never_detail,
    never_detail,
)
from scheduler.engine.snapshot import PendingJob, PendingPod, PodSpec, RunningPod, Snapshot
from tests.reference_engine import shares as shares_mod
from tests.reference_engine.entitlement import MemberModel, entitlements, node_model
from tests.reference_engine.explain import (
    Waiting,
    capacity_detail,
    fmt,
    plural,
    position,
    sentence,
    whole_minutes,
)
from tests.reference_engine.gangs import Plan, plan_job
from tests.reference_engine.ordering import MemberQueues, ratio
from tests.reference_engine.placement import (
    ClusterState,
    blocking_taints,
    effective_labels,
    labels_match,
    spec_key,
    spec_res,
)
from tests.reference_engine.reclaim import NoReclaim, Reclaimer, ReclaimResult, VictimJob, Why

if TYPE_CHECKING:
    from policies.model import Member, Policy

_EPS = 1e-9
_N = TypeVar("_N", int, float)
_HOUR_S = 3600.0
WANTS_BACK = 0.5
"""An owner whose demand on a model, or whose recent mean allocation, reaches this part
of its entitlement is likely to want its nodes back soon: half is where an owner's
next burst of work no longer fits in what it leaves idle."""

__all__ = ["compute_shares", "schedule"]


def compute_shares(snapshot: Snapshot, policy: Policy) -> tuple[MemberShare, ...]:
    """Every member's position per GPU model, without scheduling anything."""
    return _Cycle(snapshot, policy).book.shares()


def schedule(snapshot: Snapshot, policy: Policy) -> Decisions:
    return _Cycle(snapshot, policy).run()


@dataclass(frozen=True, slots=True)
class _JobInfo:
    gpus: int
    explicit_model: str | None
    shape: tuple[object, ...]
    """The pods' shapes, a cache key for 'this did not fit'."""
    incomplete: bool


def _required(job: PendingJob) -> tuple[PendingPod, ...]:
    """The pods that must start together: the first `min_member` of a PodGroup that has
    more pods than that, else all of them."""
    return job.pods[: job.min_member] if 0 < job.min_member < len(job.pods) else job.pods


def _job_info(job: PendingJob) -> _JobInfo:
    if len(job.pods) == 1:
        shape: tuple[object, ...] = (spec_key(job.pods[0].spec),)
    else:
        shape = tuple(sorted((spec_key(p.spec) for p in job.pods), key=repr))
        if 0 < job.min_member < len(job.pods):
            shape = (*shape, ("min_member", job.min_member))
    info = _JobInfo(
        gpus=job.gpus,
        explicit_model=shares_mod.job_gpu_model(job),
        shape=shape,
        incomplete=len(job.pods) < job.min_member or not job.pods,
    )
    return info


@dataclass(frozen=True, slots=True)
class _Claim:
    """A member's position on a GPU model with a job that may reclaim."""

    allocated: int
    """Allocated plus held for its nominated jobs."""
    fair: float
    after: int
    """`allocated` with the job."""
    entitled: bool
    """The job keeps it within its entitlement."""
    above_ratio: float | None
    """allocated / fair share with the job, when above 1 and not entitled."""


def _per_member(values: Mapping[tuple[str, str], _N], zero: _N) -> dict[str, _N]:
    """Per-model values summed per member (or owner)."""
    out: dict[str, _N] = {}
    for (m, _), v in values.items():
        out[m] = out.get(m, zero) + v
    return out


def _lenders(policy: Policy) -> list[tuple[str, int]]:
    """Members with a lending limit, by name."""
    return [
        (m.name, m.lending_limit)
        for m in sorted(policy.members, key=lambda m: m.name)
        if m.lending_limit is not None
    ]


def _shape_ids(infos: Mapping[str, _JobInfo]) -> dict[str, int]:
    """A number per distinct job shape: shapes are deep tuples (hashing one walks it), so
    they are numbered once per cycle."""
    interned: dict[tuple[object, ...], int] = {}
    return {
        job_id: interned.setdefault(info.shape, len(interned)) for job_id, info in infos.items()
    }


@dataclass(slots=True)
class _Outcome:
    binds: list[Bind] = field(default_factory=list)
    preemptions: list[Preemption] = field(default_factory=list)
    nominations: list[Nomination] = field(default_factory=list)
    waiting: dict[str, tuple[PendingJob, Waiting]] = field(default_factory=dict)


class _Cycle:
    def __init__(self, snapshot: Snapshot, policy: Policy) -> None:
        self.snapshot = snapshot
        self.policy = policy
        self.state = ClusterState(snapshot)
        # What demand leaves out needs the nodes and the pending jobs' shapes first.
        self.members: dict[str, Member] = {m.name: m for m in policy.members}
        self.lenders = _lenders(policy)
        self._info: dict[str, _JobInfo] = {j.job_id: _job_info(j) for j in snapshot.pending}
        self.shape_id = _shape_ids(self._info)
        self.never: dict[int, bool] = {}
        self.never_detail: dict[int, str] = {}
        self.never_reached: dict[tuple[int, str], str] = {}
        self.book = shares_mod.build(snapshot, policy, self._never_runs, self._reachable_models)
        self.state.wanted = wanted_nodes(self.book, snapshot.usage_history, policy)
        self.out = _Outcome()
        # Positions, updated by every bind and preemption of the cycle.
        self.alloc: dict[MemberModel, int] = dict(self.book.allocation.allocated)
        self.member_total: dict[str, int] = _per_member(self.alloc, 0)
        self.lent: dict[str, int] = _per_member(self.book.allocation.lent, 0)
        """GPUs of other members' pods on each owner's nodes."""
        self.fair_total: dict[str, float] = _per_member(self.book.fair, 0.0)
        self.promised: dict[MemberModel, int] = {}
        """GPUs held for each member's nominated jobs (not bound yet)."""
        self.promised_jobs: dict[str, tuple[MemberModel, int]] = {}
        """What each job holds in `promised`."""
        self.freeing: set[str] = set()
        """Jobs whose nominated nodes still carry terminating pods."""
        # The policy's limits.
        self.capped = {m.name for m in policy.members if m.max_gpus is not None}
        self.checkpointable = frozenset(m.name for m in policy.members if m.checkpointable)
        # The pending jobs.
        self.only_model = self.book.models[0] if len(self.book.models) == 1 else None
        # What failed once in the cycle fails again (capacity only shrinks).
        self.failed: set[object] = set()
        self.reclaim_failed: dict[tuple[object, ...], NoReclaim] = {}
        self.reclaimer: Reclaimer | None = None

    # -- positions -----------------------------------------------------------------------
    def position_of(self, member: str, model: str | None) -> tuple[int, float]:
        if model is None:
            return self.member_total.get(member, 0), self.fair_total.get(member, 0.0)
        key = (member, model)
        return self.alloc.get(key, 0), self.book.fair.get(key, 0.0)

    def info(self, job: PendingJob) -> _JobInfo:
        return self._info[job.job_id]

    def position_model(self, job: PendingJob) -> str | None:
        """The model a job's member position is measured on: the one it asks for, the
        only one there is, or None (all models together)."""
        explicit = self._info[job.job_id].explicit_model
        return explicit if explicit is not None else self.only_model

    def order_key(self, member: str, job: PendingJob) -> tuple[int, float]:
        """A job that can never run first, then entitled demand (see `ordering`), then
        allocated / fair share."""
        if self._never_runs(job):
            return (-1, 0.0)
        allocated, fair = self.position_of(member, self.position_model(job))
        return (0 if self.within_entitlement(member, job) else 1, ratio(allocated, fair))

    def within_entitlement(self, member: str, job: PendingJob) -> bool:
        """The job keeps its member within its entitlement for the model its demand
        counts against (GPUs held for its nominated jobs included); a job asking no GPU
        borrows nothing."""
        gpus = self._info[job.job_id].gpus
        model = self.book.job_model.get(job.job_id)
        if gpus <= 0 or model is None:
            return gpus <= 0
        key = (member, model)
        held = self.alloc.get(key, 0) + self.promised.get(key, 0)
        return held + gpus <= self.book.entitlement.get(key, 0)

    def lendable(self) -> dict[str, int]:
        if not self.lenders:
            return {}
        return {name: limit - self.lent.get(name, 0) for name, limit in self.lenders}

    def cautious(self, job: PendingJob) -> bool:
        """The job borrows and restarts from zero when reclaimed: placement
        keeps it off nodes whose owners are likely to want them back."""
        return not job.resumes(self.checkpointable) and not self.within_entitlement(job.member, job)

    def exhausted(self, job: PendingJob) -> bool:
        """The job was reclaimed as often as the policy allows."""
        limit = self.policy.sharing.max_reclaims_per_job
        return limit is not None and job.reclaims >= limit

    def _fits_entitlement(self, job: PendingJob, model: str | None) -> bool:
        """The job could ever run within its member's entitlement (a job bigger than it
        never could: at the reclaim limit it is kept to quiet owners' nodes only for a
        window after its last reclaim, see `recently_reclaimed`)."""
        gpus = self._info[job.job_id].gpus
        if model is None or gpus <= 0:
            return True
        return gpus <= self.book.entitlement.get((job.member, model), 0)

    def recently_reclaimed(self, job: PendingJob) -> bool:
        """The job's last reclaim is less than `reclaimLimitWindowSeconds` old (an unknown
        time is not recent)."""
        if job.reclaimed_at is None:
            return False
        age = self.snapshot.now - job.reclaimed_at
        return age < self.policy.sharing.reclaim_limit_window_seconds

    def lost_before(self, job: PendingJob) -> bool:
        """Reclaimed before, and restarts from zero."""
        return job.reclaims > 0 and not job.resumes(self.checkpointable)

    def kept_status(self, job: PendingJob) -> tuple[bool, bool, bool]:
        """At the reclaim limit, reclaimed before with nothing to resume from, and
        (either way) reclaimed within the window."""
        exhausted, lost = self.exhausted(job), self.lost_before(job)
        return exhausted, lost, (exhausted or lost) and self.recently_reclaimed(job)

    def _kept_detail(self, job: PendingJob, model: str | None) -> str:
        limit = self.policy.sharing.max_reclaims_per_job
        reclaimed = f"job {_named(job)} was reclaimed {plural(job.reclaims, 'time')}"
        if self.exhausted(job):
            text = (
                f"{reclaimed}, the policy's limit of {limit} (maxReclaimsPerJob): it will "
                f"not be reclaimed again, so beyond its entitlement it runs only on nodes "
                f"whose owners are not likely to want them back"
            )
        else:
            text = (
                f"{reclaimed} and restarts from zero: beyond its entitlement it runs only "
                f"on nodes whose owners are not likely to want them back, so that its "
                f"work is not thrown away again"
            )
        if self._fits_entitlement(job, model) or job.reclaimed_at is None:
            return text
        window = self.policy.sharing.reclaim_limit_window_seconds
        left = job.reclaimed_at + window - self.snapshot.now
        return (
            f"{text}; bigger than its entitlement, it may run anywhere {window} s after its "
            f"last reclaim (reclaimLimitWindowSeconds), in {whole_minutes(left)}"
        )

    def _quiet_lenders(
        self, member: str, model: str | None, lendable: dict[str, int]
    ) -> dict[str, int]:
        """`lendable` with nothing lent by owners likely to want their nodes of the
        model back: a job that is no longer reclaimed would keep them out of them for a
        whole run. Its own, unowned and quiet owners' nodes stay open."""
        out = dict(lendable)
        for owner, wanted_model in self.state.wanted:
            if owner != member and (model is None or wanted_model == model):
                out[owner] = 0
        return out

    # -- the cycle -----------------------------------------------------------------------
    def run(self) -> Decisions:
        self._hold_nominations()
        started = self._head_start() if self.policy.sharing.head_start else set()
        queues = MemberQueues(self.snapshot.pending, self.order_key)
        while (job := queues.pop()) is not None:
            if job.job_id in started:
                queues.done(job.member)
                continue
            self._handle(job)
            waiting = self.out.waiting.get(job.job_id)
            if waiting is not None and waiting[1].kind in ("capacity", "unplaceable"):
                self._wait_alike(job, waiting[1], queues)
            queues.done(job.member)
        return Decisions(
            binds=tuple(self.out.binds),
            preemptions=tuple(self.out.preemptions),
            nominations=tuple(self.out.nominations),
            explanations=self._explanations(),
            shares=self.book.shares(),
        )

    def _head_start(self) -> set[str]:
        """The head start: each member's first job, per GPU model, of one pod asking for
        2 or more GPUs, behind none of a higher priority, is placed before the order if
        it keeps its member within its entitlement, oldest first, unless it is
        incomplete, nominated, at the reclaim limit or listed twice; the jobs placed."""
        listed: dict[str, int] = {}
        for job in self.snapshot.pending:
            listed[job.job_id] = listed.get(job.job_id, 0) + 1
        first: dict[MemberModel, PendingJob] = {}
        top: dict[MemberModel, int] = {}
        for job in sorted(
            self.snapshot.pending, key=lambda j: (j.member, *shares_mod.job_sort_key(j))
        ):
            model = self.book.job_model.get(job.job_id)
            if model is None or self._never_runs(job):
                continue
            key = (job.member, model)
            if top.setdefault(key, job.priority) != job.priority or key in first:
                continue
            if len(job.pods) == 1 and self._info[job.job_id].gpus >= 2:
                first[key] = job
        started: set[str] = set()
        for (member, model), job in sorted(
            first.items(), key=lambda kv: (shares_mod.job_sort_key(kv[1]), kv[0][0])
        ):
            if (
                listed[job.job_id] > 1
                or self._info[job.job_id].incomplete
                or job.nominated_nodes
                or self.exhausted(job)
            ):
                continue
            if not self.within_entitlement(member, job):
                continue
            if (member in self.capped or not self.policy.sharing.borrowing) and self._limit(
                job, model
            ):
                continue
            models = self._models_allowed(job, model)
            if self._try_place(job, self.lendable(), models, False, False, False):
                started.add(job.job_id)
        return started

    def _wait_alike(self, job: PendingJob, why: Waiting, queues: MemberQueues) -> None:
        """The member's next jobs of the same shape wait for the same reason, decided at
        once: capacity only shrinks within a cycle, and when reclaim cannot change (the
        member is not below its fair share, or nobody could be preempted) nothing else
        would. Saves a turn per job when thousands of identical pods are pending."""
        model = self.book.job_model.get(job.job_id)
        gpus = self._info[job.job_id].gpus
        if model is not None and gpus > 0:
            key = (job.member, model)
            held = self.alloc.get(key, 0) + self.promised.get(key, 0)
            below = held < self.book.fair.get(
                key, 0.0
            ) - _EPS or held + gpus <= self.book.entitlement.get(key, 0)
            entitled = held + gpus <= self.book.entitlement.get(key, 0)
            if below and (
                self.reclaimer is None or self._may_find_victims(job.member, model, entitled)
            ):
                return
        sid = self.shape_id[job.job_id]
        while (nxt := queues.peek(job.member)) is not None:
            jid = nxt.job_id
            if (
                self.shape_id[jid] != sid
                or self.kept_status(nxt) != self.kept_status(job)
                or self.book.job_model.get(jid) != model
                or jid in self.state.holds
                or jid in self.freeing
                or self._info[jid].incomplete
                or nxt.resumes(self.checkpointable) != job.resumes(self.checkpointable)
                or self._overtaken_due(nxt) != self._overtaken_due(job)
            ):
                break
            queues.skip(job.member)
            self.out.waiting[jid] = (nxt, why)

    def _hold_nominations(self) -> None:
        term_nodes = {
            p.node for p in self.snapshot.running if p.terminating and p.node in self.state.index
        }
        jobs = sorted(
            (j for j in self.snapshot.pending if j.nominated_nodes and not self._never_runs(j)),
            key=lambda j: (j.member, *shares_mod.job_sort_key(j)),
        )
        for job in jobs:
            pods = {p.uid: p for p in job.pods}
            for uid, node in sorted(job.nominated_nodes.items()):
                i = self.state.index.get(node)
                if i is None or uid not in pods:
                    continue
                self.state.hold(job.job_id, i, spec_res(pods[uid].spec))
                if node in term_nodes:
                    self.freeing.add(job.job_id)
            if job.job_id in self.state.holds:
                self._promise(job)

    def _handle(self, job: PendingJob) -> None:
        """Place the job, or decide why it waits (reclaiming for it if it may)."""
        held = job.job_id in self.state.holds
        if held:
            # Its nominated capacity is its own to place on now.
            self.state.release(job.job_id)
            self._unpromise(job.job_id)
        if self._info[job.job_id].incomplete:
            self._wait(job, Waiting("incomplete"))
            return
        model = self.book.job_model.get(job.job_id)
        if job.member in self.capped or not self.policy.sharing.borrowing:
            limit = self._limit(job, model)
            if limit is not None:
                self._wait(job, Waiting("limit", limit))
                return
        lendable = self.lendable()
        exhausted = self.exhausted(job)
        guarded = (
            (exhausted or self.lost_before(job))
            and (self._fits_entitlement(job, model) or self.recently_reclaimed(job))
            and not self.within_entitlement(job.member, job)
        )
        if guarded:
            lendable = self._quiet_lenders(job.member, model, lendable)
        models = self._models_allowed(job, model)
        if self._try_place(job, lendable, models, held, exhausted or self.cautious(job), guarded):
            return
        if job.job_id in self.freeing:
            self._hold_while_freeing(job)
            return
        if self._unplaceable(job):
            self._wait(job, Waiting("unplaceable", self._unplaceable_detail(job)))
            return
        detail = self._try_reclaim(job, model, lendable)
        if job.job_id not in self.out.waiting and self._try_overtaken(job, model, lendable, models):
            return
        if job.job_id not in self.out.waiting:
            if guarded:
                # The free capacity it may not use would only mislead: say why instead.
                detail = "; ".join(d for d in (self._kept_detail(job, model), detail) if d)
                self._wait(job, Waiting("limit", detail))
            else:
                self._wait(job, Waiting("capacity", detail))

    def _try_place(
        self,
        job: PendingJob,
        lendable: dict[str, int],
        models: frozenset[str] | None,
        held: bool,
        cautious: bool,
        guarded: bool,
    ) -> bool:
        """Place the job unless one of the same shape (and, with limits that depend on
        the member, of the same member) failed already; a job whose hold was just
        released is always tried. `guarded`: a reclaimed job kept to quiet lenders (see
        `kept_status`, `_quiet_lenders`)."""
        restricted = models is not None or any(
            h < self._info[job.job_id].gpus for o, h in lendable.items() if o != job.member
        )
        sid = self.shape_id[job.job_id]
        shape = (sid, job.member, models, guarded) if restricted else sid
        if not held and shape in self.failed:
            return False
        placed = self._place(job, lendable, models, cautious)
        if not placed and not held:
            self.failed.add(shape)
        return placed

    def _hold_while_freeing(self, job: PendingJob) -> None:
        """Its nominated nodes still carry terminating pods: hold them for it again."""
        detail = self._nominated_detail(job)
        for uid, node in sorted(job.nominated_nodes.items()):
            i = self.state.index.get(node)
            pod = next((p for p in job.pods if p.uid == uid), None)
            if i is not None and pod is not None:
                self.state.hold(job.job_id, i, spec_res(pod.spec))
        self._promise(job)
        self._wait(job, Waiting("held", detail))

    def _limit(self, job: PendingJob, model: str | None) -> str | None:
        spec = self.members.get(job.member)
        gpus = self.info(job).gpus
        if spec is None or gpus <= 0:
            return None
        total = self.member_total.get(job.member, 0)
        if spec.max_gpus is not None and total + gpus > spec.max_gpus:
            return max_gpus_detail(job.member, gpus, total, spec.max_gpus)
        if not self.policy.sharing.borrowing and not self._models_allowed(job, model):
            entitlement = self.book.entitlement
            asked = self.info(job).explicit_model
            options = [asked] if asked is not None else self.book.models
            most = max((entitlement.get((job.member, m), 0) for m in options), default=0)
            ent = entitlement.get((job.member, model or ""), 0)
            return no_borrowing_detail(job.member, gpus, ent, model, most, asked)
        return None

    def _models_allowed(self, job: PendingJob, model: str | None) -> frozenset[str] | None:
        """With borrowing off: the GPU models on which the job stays within entitlement."""
        info = self.info(job)
        if self.policy.sharing.borrowing or info.gpus <= 0:
            return None
        explicit = info.explicit_model
        options = [explicit] if explicit is not None else self.book.models
        return frozenset(
            m
            for m in options
            if self.alloc.get((job.member, m), 0) + info.gpus
            <= self.book.entitlement.get((job.member, m), 0)
        )

    def _place(
        self,
        job: PendingJob,
        lendable: dict[str, int],
        models: frozenset[str] | None,
        cautious: bool,
    ) -> bool:
        if len(job.pods) == 1 and models is None:
            pod = job.pods[0]
            i = self.state.best_node(pod.spec, job.member, lendable, cautious)
            if i is None:
                return False
            self._bind(job, ((pod.uid, i),))
            return True
        plan = plan_job(self.state, job.pods, job.member, lendable, None, models, cautious)
        # A PodGroup with more pods than its minMember starts with the most of its
        # first pods that fit, at least minMember: tried from the most down.
        partial = 0 < job.min_member < len(job.pods)
        for count in range(len(job.pods) - 1, job.min_member - 1 if partial else len(job.pods), -1):
            if plan is not None:
                break
            plan = plan_job(
                self.state, job.pods[:count], job.member, lendable, None, models, cautious
            )
        if plan is None:
            return False
        self._bind(job, plan.pods)
        return True

    def _bind(self, job: PendingJob, where: tuple[tuple[str, int], ...]) -> None:
        specs = {p.uid: p.spec for p in job.pods}
        member = job.member
        for uid, i in where:
            spec = specs[uid]
            node = self.state.nodes[i]
            owner = node.owner
            reclaimable = False
            if spec.gpus > 0:
                key = (member, node_model(node))
                now = self.alloc.get(key, 0) + spec.gpus
                reclaimable = now > self.book.entitlement.get(key, 0)
                self.alloc[key] = now
                self.member_total[member] = self.member_total.get(member, 0) + spec.gpus
                if owner is not None and owner != member:
                    self.lent[owner] = self.lent.get(owner, 0) + spec.gpus
            self.state.take(i, spec_res(spec))
            self.out.binds.append(
                Bind(
                    pod_uid=uid,
                    node=node.name,
                    job_id=job.job_id,
                    member=member,
                    owner=owner,
                    reclaimable=reclaimable,
                )
            )

    def _wait(self, job: PendingJob, why: Waiting) -> None:
        self.out.waiting[job.job_id] = (job, why)

    # -- reclaim -------------------------------------------------------------------------
    def _try_reclaim(self, job: PendingJob, model: str | None, lendable: dict[str, int]) -> str:
        """Reclaim for a job that did not fit; the detail of its wait ("" when none): on
        its own model, else within its member's entitlement on another model its pods
        are admitted to."""
        detail = self._reclaim_on(job, model, lendable)
        if job.job_id in self.out.waiting or model is None:
            return detail
        info = self.info(job)
        if info.explicit_model is not None or info.gpus <= 0:
            return detail
        allowed = self._models_allowed(job, model)
        for other in self._reachable_models(job):
            if other == model or (allowed is not None and other not in allowed):
                continue
            key = (job.member, other)
            held = self.alloc.get(key, 0) + self.promised.get(key, 0)
            if held + info.gpus > self.book.entitlement.get(key, 0):
                continue
            reclaimer = self._reclaimer_for(job.member, other, True)
            if reclaimer is None:
                continue
            claim = _Claim(held, self.book.fair.get(key, 0.0), held + info.gpus, True, None)
            result = self._attempt_reclaim(reclaimer, job, other, claim, lendable)
            if not isinstance(result, NoReclaim):
                self._apply_reclaim(job, other, result, True)
                return ""
        return detail

    def _reclaim_on(self, job: PendingJob, model: str | None, lendable: dict[str, int]) -> str:
        """`_try_reclaim` on the model the job's demand counts against."""
        if model is None or self.info(job).gpus <= 0:
            return ""
        claim = self._claim(job, model)
        if claim is None:
            return ""
        reclaimer = self._reclaimer_for(job.member, model, claim.entitled)
        if reclaimer is None:
            at_limit = (
                ""
                if self.reclaimer is None
                else self.reclaimer.at_limit_detail(job.pods, job.member, model)
            )
            return (
                f"nothing can be reclaimed: no member above its fair share holds borrowed "
                f"{model} GPUs it could use{at_limit}"
            )
        result = self._attempt_reclaim(reclaimer, job, model, claim, lendable)
        if isinstance(result, NoReclaim):
            return self._no_reclaim_detail(result, claim)
        self._apply_reclaim(job, model, result, claim.entitled)
        return ""

    def _claim(self, job: PendingJob, model: str) -> _Claim | None:
        """The member's position with the job, when it may reclaim for it: the job keeps
        it within its entitlement (reclaim.py), or it is below its fair share. Capacity
        already promised to the member's nominated jobs counts as held."""
        key = (job.member, model)
        allocated = self.alloc.get(key, 0) + self.promised.get(key, 0)
        fair = self.book.fair.get(key, 0.0)
        after = allocated + self.info(job).gpus
        entitled = after <= self.book.entitlement.get(key, 0)
        if allocated >= fair - _EPS and not entitled:
            return None
        above_ratio = after / fair if after > fair + _EPS and not entitled else None
        return _Claim(allocated, fair, after, entitled, above_ratio)

    def _reclaimer_for(self, member: str, model: str, entitled: bool) -> Reclaimer | None:
        """The cycle's victim index, built on first use; None when nothing could be
        reclaimed anyway."""
        if entitled and self.state.term_pods <= 0 and not self._others_borrow(member, model):
            # No victim index needed, which is most cycles of a busy cluster.
            return None
        self._victim_index()
        if not self._may_find_victims(member, model, entitled):
            return None
        return self.reclaimer

    def _victim_index(self) -> Reclaimer:
        if self.reclaimer is None:
            sharing = self.policy.sharing
            self.reclaimer = Reclaimer(
                self.state,
                self.snapshot.running,
                self.book.allocation.reclaimable_pods,
                self.snapshot.now,
                sharing.min_runtime_seconds,
                sharing.preempt_below_min_runtime,
                self.checkpointable,
                sharing.max_reclaims_per_job,
            )
        return self.reclaimer

    def _overtaken_due(self, job: PendingJob) -> bool:
        """The job has waited `reclaim_overtaken_after_seconds` (never, when unset): a
        follower of the same shape that differs here gets its own turn."""
        after = self.policy.sharing.reclaim_overtaken_after_seconds
        return after is not None and self.snapshot.now - job.submitted_at >= after

    def _try_overtaken(
        self,
        job: PendingJob,
        model: str | None,
        lendable: dict[str, int],
        models: frozenset[str] | None,
    ) -> bool:
        """Take back the GPUs of the member's own later, smaller jobs that resume, for a
        job of 2 or more GPUs that waited `reclaim_overtaken_after_seconds`: never for
        terminating pods alone, nor on a model `models` (borrowing off) leaves out."""
        if model is None or self.info(job).gpus <= 1 or not self._overtaken_due(job):
            return False
        if models is not None and model not in models:
            return False
        result = self._victim_index().overtaken(
            _required(job),
            job.member,
            model,
            self.alloc,
            self.book.fair,
            lendable,
            (-job.priority, job.submitted_at, job.job_id),
            cautious=not job.resumes(self.checkpointable) or self.exhausted(job),
        )
        if isinstance(result, NoReclaim) or not result.victims:
            return False
        if result.wait:
            self._drain(job, result.plan, "the later jobs of its member it takes back")
            return True
        grace = self.policy.sharing.reclaim_grace_period_seconds
        needs = sum(p.spec.gpus for p in _required(job))
        for victim in result.victims:
            reason = (
                f"reclaim for member {mention(job.member)}'s job {_named(job)} (needs {needs}), "
                f"which comes before job {_victim_named(victim)} in the member's queue: "
                f"{_victim_named(victim)} started on GPUs freed one by one while the bigger "
                "job "
                "waited, and resumes where it stops"
            )
            self._preempt(job, victim, reason, grace, "queue")
        self._nominate(job, result.plan)
        n_pods = sum(len(v.pods) for v in result.victims)
        detail = (
            f"preempting {plural(n_pods, 'pod')} of its member's later jobs "
            f"({', '.join(_victim_named(v) for v in result.victims)}), which resume where they "
            f"stop, with a grace period of {grace} s; their GPUs are held for this job"
        )
        self.out.waiting[job.job_id] = (job, Waiting("reclaiming", detail))
        self.freeing.add(job.job_id)
        return True

    def _attempt_reclaim(
        self,
        reclaimer: Reclaimer,
        job: PendingJob,
        model: str,
        claim: _Claim,
        lendable: dict[str, int],
    ) -> ReclaimResult | NoReclaim:
        """Ask the victim index, unless the same attempt failed already. What reclaim can
        do changes only with a bind (a member may rise above its fair share) or another
        reclaim: until then a failure stands. Its own, too: which mode runs (the job keeps
        its member within its entitlement or not, which differs between two jobs of one
        shape submitted at different times, see `LateBorrowing`), and whether the job is
        kept off wanted nodes (`kept_status`: then it reclaims only for room on quiet
        owners' nodes, for ever if it fits its entitlement, else within its window)."""
        key = (
            self.shape_id[job.job_id],
            job.member,
            model,
            claim.allocated,
            len(self.out.nominations),
            len(self.out.binds),
            claim.entitled,
            self.kept_status(job),
            job.resumes(self.checkpointable),
        )
        failed = self.reclaim_failed.get(key)
        if failed is not None:
            return failed
        if claim.entitled:
            result = reclaimer.within_entitlement(
                _required(job),
                job.member,
                model,
                self.alloc,
                self.book.fair,
                self.book.entitlement,
                lendable,
            )
        else:
            result = reclaimer.up_to_fair_share(
                _required(job),
                job.member,
                model,
                self.alloc,
                self.book.fair,
                lendable,
                claim.above_ratio,
                cautious=not job.resumes(self.checkpointable) or self.exhausted(job),
            )
        if isinstance(result, NoReclaim):
            self.reclaim_failed[key] = result
        return result

    def _no_reclaim_detail(self, result: NoReclaim, claim: _Claim) -> str:
        if result.why is Why.NOT_FURTHER_ABOVE:
            return (
                f"with this job it would hold {claim.after}, above its fair share of "
                f"{fmt(claim.fair)}, and {result.detail}"
            )
        return f"nothing can be reclaimed: {result.detail}"

    def _may_find_victims(self, member: str, model: str, entitled: bool) -> bool:
        """Reclaim could still preempt or nominate something: terminating pods free
        capacity, reclaimable pods are left, or (within the entitlement) another member is
        above its entitlement now, whose jobs on the member's own nodes it may take back."""
        assert self.reclaimer is not None
        return (
            self.state.term_pods > 0
            or self.reclaimer.has_candidates()
            or (entitled and self._others_borrow(member, model))
        )

    def _others_borrow(self, member: str, model: str) -> bool:
        """Another member holds more than its entitlement of `model` now. Counted on the
        cycle's allocation, not the snapshot's: a bind earlier in the cycle can take a
        member above its entitlement (a job whose demand counts against another model),
        and the owner of the nodes its older pods run on may then take them back."""
        entitlement = self.book.entitlement
        return any(
            held > entitlement.get(key, 0)
            for key, held in self.alloc.items()
            if key[1] == model and key[0] != member
        )

    def _apply_reclaim(
        self, job: PendingJob, model: str, result: ReclaimResult, entitled: bool
    ) -> None:
        if result.wait:
            self._drain(job, result.plan, model=model)
            return
        grace = self.policy.sharing.reclaim_grace_period_seconds
        needs = sum(p.spec.gpus for p in _required(job))
        whose = self._reclaimer_position(job.member, model, entitled)
        victims_text: list[str] = []
        for victim in result.victims:
            # Each victim's position is read after the earlier victims are taken off.
            reason = (
                f"reclaim for member {mention(job.member)} ({whose}, job "
                f"{job_of(_named(job), job.member)} needs {needs}): "
                f"{self._victim_position(victim.member, model)}, and job "
                f"{_victim_named(victim)} runs on borrowed GPUs"
            )
            self._preempt(job, victim, reason, grace, "entitlement" if entitled else "fair_share")
            victims_text.append(job_of(_victim_named(victim), victim.member))
        self._nominate(job, result.plan, model)
        n_pods = sum(len(v.pods) for v in result.victims)
        if n_pods:
            detail = (
                f"preempting {plural(n_pods, 'borrowed pod')} ({', '.join(victims_text)}) "
                f"with a grace period of {grace} s; their GPUs are held for this job"
            )
        else:
            detail = "terminating pods are freeing room; it is held for this job"
        self.out.waiting[job.job_id] = (job, Waiting("reclaiming", detail))
        self.freeing.add(job.job_id)

    def _drain(
        self, job: PendingJob, plan: Plan, pods: str | None = None, model: str | None = None
    ) -> None:
        """Hold the free capacity of the plan while the pods it needs back (`pods`, when
        not borrowed ones) age."""
        specs = {p.uid: p.spec for p in job.pods}
        for uid, i in plan.pods:
            self.state.hold(job.job_id, i, spec_res(specs[uid]))
        self._promise(job, model)
        idle = sum(from_free[0] for _, _, from_free in self.state.holds.get(job.job_id, ()))
        self.out.waiting[job.job_id] = (
            job,
            Waiting(
                "reclaiming", drain_detail(self.policy.sharing.min_runtime_seconds, idle, pods)
            ),
        )

    def _reclaimer_position(self, member: str, model: str, entitled: bool) -> str:
        allocated, fair = self.position_of(member, model)
        if entitled:
            ent = self.book.entitlement.get((member, model), 0)
            return f"holds {allocated} of its entitlement of {ent} {model}"
        return f"holds {allocated} of its fair share of {fmt(fair)} {model}"

    def _victim_position(self, member: str, model: str) -> str:
        v_alloc, v_fair = self.position_of(member, model)
        if v_alloc > v_fair + _EPS:
            why = f"above its fair share of {fmt(v_fair)}"
        else:
            v_ent = self.book.entitlement.get((member, model), 0)
            why = f"above its entitlement of {v_ent}"
        return f"member {mention(member)} holds {v_alloc}, {why}"

    def _preempt(
        self, job: PendingJob, victim: VictimJob, reason: str, grace: int, cause: PreemptionCause
    ) -> None:
        """Preempt the victim's pods, by uid; their GPUs leave its member's position now
        and their node's capacity counts as being freed."""
        state = self.state
        for pod, i in sorted(victim.pods, key=lambda pi: pi[0].uid):
            self.out.preemptions.append(
                Preemption(
                    pod_uid=pod.uid,
                    job_id=victim.job_id,
                    victim_member=victim.member,
                    reclaimer=job.member,
                    for_job=job.job_id,
                    reason=reason,
                    grace_period_seconds=grace,
                    cause=cause,
                )
            )
            state.add_terminating(i, spec_res(pod.spec))
            node = state.nodes[i]
            if pod.spec.gpus > 0:
                key = (victim.member, node_model(node))
                self.alloc[key] = self.alloc.get(key, 0) - pod.spec.gpus
                self.member_total[victim.member] -= pod.spec.gpus

    def _promise(self, job: PendingJob, model: str | None = None) -> None:
        if model is None:
            model = self.book.job_model.get(job.job_id)
        gpus = self._info[job.job_id].gpus
        if model is None or gpus <= 0:
            return
        key = (job.member, model)
        self.promised[key] = self.promised.get(key, 0) + gpus
        self.promised_jobs[job.job_id] = (key, gpus)

    def _unpromise(self, job_id: str) -> None:
        found = self.promised_jobs.pop(job_id, None)
        if found is not None:
            self.promised[found[0]] -= found[1]

    def _nominate(self, job: PendingJob, plan: Plan, model: str | None = None) -> None:
        specs = {p.uid: p.spec for p in job.pods}
        nodes: dict[str, str] = {}
        for uid, i in plan.pods:
            self.state.hold(job.job_id, i, spec_res(specs[uid]))
            nodes[uid] = self.state.nodes[i].name
        self.out.nominations.append(Nomination(job_id=job.job_id, nodes=nodes))
        self._promise(job, model)

    # -- explanations --------------------------------------------------------------------
    def _nominated_detail(self, job: PendingJob) -> str:
        nodes = sorted(set(job.nominated_nodes.values()))
        term = sum(
            1
            for p in self.snapshot.running
            if p.terminating and p.node in job.nominated_nodes.values()
        )
        return (
            f"{plural(term, 'pod')} still terminating on {', '.join(nodes)}; "
            f"their GPUs are held for this job"
        )

    def _reachable_models(self, job: PendingJob) -> list[str]:
        """The GPU models on whose nodes every pod of the job is admitted, by name."""
        state = self.state
        common: set[str] | None = None
        for pod in job.pods:
            have = {state.model[i] for i in state.candidate_nodes(pod.spec)}
            common = have if common is None else common & have
        return sorted(common or ())

    def _never_runs(self, job: PendingJob) -> bool:
        """The job can never run, whatever the load (left out of its member's demand): its
        GPUs beyond its member's maxGpus, beyond every entitlement of the member it could
        use with borrowing off, or `_unplaceable`."""
        gpus = sum(p.spec.gpus for p in job.pods)
        if gpus <= 0:
            return False
        spec = self.members.get(job.member)
        if spec is not None and spec.max_gpus is not None and gpus > spec.max_gpus:
            return True
        if not self.policy.sharing.borrowing:
            own = {
                model: n
                for (member, model), n in entitlements(self.snapshot.nodes, self.policy).items()
                if member == job.member
            }
            explicit = self._info[job.job_id].explicit_model
            if explicit is not None:
                if gpus > own.get(explicit, 0):
                    return True
            elif all(gpus > n for n in own.values()):
                return True
        return self._unplaceable(job)

    def _unplaceable(self, job: PendingJob) -> bool:
        """True when no node, even empty, could ever take one of the job's pods."""
        shape = self.shape_id[job.job_id]
        never = self.never.get(shape)
        if never is None:
            never = False
            for pod in job.pods:
                res = spec_res(pod.spec)
                if not any(self._static_room(i, res) for i in self.state.candidate_nodes(pod.spec)):
                    never = True
                    break
            self.never[shape] = never
        return never or bool(self._never_reached(job))

    def _never_reached(self, job: PendingJob) -> str:
        """Why the job's member may never hold all its pods at once, on the nodes of one
        GPU model that admit them, even empty: its own and unowned ones whole, another
        owner's up to its lendingLimit in whole pods ("" when it may). A gang whose pods
        differ: `_never_reached_mixed`."""
        key = (self.shape_id[job.job_id], job.member)
        found = self.never_reached.get(key)
        if found is not None:
            return found
        found = ""
        pods = _required(job)
        spec = pods[0].spec if pods else None
        if spec is not None and any(p.spec != spec for p in pods):
            found = self._never_reached_mixed(job)
        elif spec is not None and spec.gpus > 0:
            limits = dict(self.lenders)
            slots: dict[tuple[str, str], int] = {}
            for i in self.state.candidate_nodes(spec):
                n = self.state.nodes[i]
                fit = [n.max_pods] + [
                    have // need
                    for have, need in (
                        (n.gpus, spec.gpus),
                        (n.cpu_milli, spec.cpu_milli),
                        (n.memory_bytes, spec.memory_bytes),
                    )
                    if need > 0
                ]
                where = (self.state.model[i], n.owner or "")
                slots[where] = slots.get(where, 0) + max(0, min(fit))
            reach: dict[str, int] = {}
            for (model, owner), count in slots.items():
                gpus = count * spec.gpus
                if owner != job.member and owner in limits:
                    gpus = min(gpus, limits[owner] // spec.gpus * spec.gpus)
                reach[model] = reach.get(model, 0) + gpus
            if max(reach.values(), default=0) < len(pods) * spec.gpus:
                # The sentence only, not the decision: the engine's words.
                found = never_detail(
                    job.member,
                    len(pods),
                    spec.gpus,
                    self._info[job.job_id].explicit_model,
                    {k: v for k, v in slots.items() if v > 0},
                    limits,
                )
        self.never_reached[key] = found
        return found

    def _never_reached_mixed(self, job: PendingJob) -> str:
        """For a gang whose pods ask for different GPUs: on the nodes of one GPU model, each
        node holds at most the most GPUs of the pods it takes (each alone, even empty) that
        fit its GPUs together, another owner's nodes at most what the gang's pods can make
        of its lendingLimit; a gang asking for more than any model's total never runs."""

        def best_sum(sizes: list[int], cap: int) -> int:
            sums = {0}
            for size in sizes:
                sums |= {x + size for x in sums if x + size <= cap}
            return max(sums)

        limits = dict(self.lenders)
        pods = _required(job)
        sizes = [p.spec.gpus for p in pods if p.spec.gpus > 0]
        need = sum(sizes)
        if need == 0:
            return ""
        specs = [p.spec for p in pods]
        held: dict[tuple[str, str], int] = {}
        for i, n in enumerate(self.state.nodes):
            takes: list[int] = []
            for spec in [s for k, s in enumerate(specs) if s not in specs[:k]]:
                if spec.gpus <= 0 or i not in self.state.candidate_nodes(spec):
                    continue
                alone = min(
                    [n.max_pods, n.gpus // spec.gpus]
                    + [
                        have // want
                        for have, want in (
                            (n.cpu_milli, spec.cpu_milli),
                            (n.memory_bytes, spec.memory_bytes),
                        )
                        if want > 0
                    ]
                )
                count = sum(1 for p in pods if p.spec == spec)
                takes += [spec.gpus] * max(0, min(count, alone))
            if takes:
                where = (self.state.model[i], n.owner or "")
                held[where] = held.get(where, 0) + best_sum(takes, n.gpus)
        reach: dict[str, int] = {}
        for (model, owner), gpus in held.items():
            if owner != job.member and owner in limits:
                gpus = min(gpus, best_sum(sizes, limits[owner]))
            reach[model] = reach.get(model, 0) + gpus
        if max(reach.values(), default=0) >= need:
            return ""
        # The sentence only, not the decision: the engine's words.
        return gang_never_detail(
            job.member, sizes, self._info[job.job_id].explicit_model, held, limits
        )

    def _static_room(self, i: int, res: tuple[int, int, int, int]) -> bool:
        n = self.state.nodes[i]
        return (
            n.gpus >= res[0]
            and n.cpu_milli >= res[1]
            and n.memory_bytes >= res[2]
            and n.max_pods >= 1
        )

    def _unplaceable_detail(self, job: PendingJob) -> str:
        sid = self.shape_id[job.job_id]
        if not self.never[sid]:
            return "it can never run as the cluster and policy stand: " + self._never_reached(job)
        found = self.never_detail.get(sid)
        if found is None:
            found = self.never_detail[sid] = self._filter_detail(job)
        return found

    def _filter_detail(self, job: PendingJob) -> str:
        spec = next(
            p.spec
            for p in job.pods
            if not any(
                self._static_room(i, spec_res(p.spec)) for i in self.state.candidate_nodes(p.spec)
            )
        )
        return "no node can ever run its pods: " + _filter_report(self.snapshot, spec)

    def _nominated_gpus(self, job: PendingJob, model: str | None) -> int:
        """GPUs in nominations for the member's other waiting jobs, on `model` (all
        models for None), once the cycle is done: the job's own is said by its detail."""
        member = job.member
        if model is not None:
            total = self.promised.get((member, model), 0)
        else:
            total = sum(g for (m, _), g in self.promised.items() if m == member)
        own = self.promised_jobs.get(job.job_id)
        if own is not None and (model is None or own[0][1] == model):
            total -= own[1]
        return total

    def _explanations(self) -> dict[str, str]:
        out: dict[str, str] = {}
        details: dict[tuple[object, ...], str] = {}
        sentences: dict[tuple[object, ...], str] = {}
        lendable = self.lendable() if self.lenders else None
        for job_id in sorted(self.out.waiting):
            job, why = self.out.waiting[job_id]
            if why.kind == "incomplete":
                out[job_id] = sentence(job, why, None, 0, 0.0, "")
                continue
            info = self._info[job_id]
            model = self.position_model(job)
            shape = (self.shape_id[job_id], model, job.is_gang, len(job.pods), info.gpus)
            key = (job.member, why, shape, job_id in self.promised_jobs)
            text = sentences.get(key)
            if text is None:
                allocated, fair = self.position_of(job.member, model)
                seen = (shape, job.member)
                if why.kind == "capacity" and seen not in details:
                    details[seen] = capacity_detail(self.state, job, model, lendable)
                text = sentence(
                    job,
                    why,
                    model,
                    allocated,
                    fair,
                    details.get(seen, ""),
                    self._nominated_gpus(job, model),
                )
                sentences[key] = text
            out[job_id] = text + self._overtook(job, info.gpus, model, why.kind)
        return out

    def _overtook(self, job: PendingJob, gpus: int, model: str | None, kind: str) -> str:
        """The clause for a job of 2 or more GPUs waiting for capacity, with
        reclaimOvertakenAfterSeconds unset, whose member's own later, smaller running
        jobs that resume hold at least its GPUs of its model."""
        if (
            kind != "capacity"
            or gpus < 2
            or model is None
            or self.policy.sharing.reclaim_overtaken_after_seconds is not None
        ):
            return ""
        place = (-job.priority, job.submitted_at, job.job_id)
        model_of = {n.name: node_model(n) for n in self.snapshot.nodes}
        pods: dict[str, list[RunningPod]] = {}
        for pod in self.snapshot.running:
            if (
                pod.member == job.member
                and pod.node in model_of
                and not pod.terminating
                and pod.scheduled_by_fairpool
                and pod.resumes(self.checkpointable)
            ):
                pods.setdefault(pod.job_id, []).append(pod)
        held = 0
        for job_id, of_job in pods.items():
            first = of_job[0]
            if (-first.priority, first.submitted_at, job_id) <= place:
                continue
            if sum(p.spec.gpus for p in of_job) >= gpus:
                continue
            held += sum(p.spec.gpus for p in of_job if model_of[p.node] == model)
        return overtook_clause(held, model) if held >= gpus else ""


def wanted_nodes(
    book: shares_mod.ShareBook, usage_history: Mapping[str, float], policy: Policy
) -> frozenset[MemberModel]:
    """(owner, GPU model) pairs whose owner is likely to want its nodes back: its demand
    on the model (held plus pending) reaches `WANTS_BACK` of its entitlement there, or
    its recent mean allocation does of its whole entitlement. The recent mean comes from
    the usage history: a member holding G GPUs for long has a history of
    G * half-life / ln 2 GPU-seconds."""
    half_life = policy.sharing.usage_half_life_hours
    recent: dict[str, float] = {}
    if half_life:
        scale = math.log(2) / (half_life * _HOUR_S)
        recent = {m: v * scale for m, v in usage_history.items()}
    entitled_total = _per_member(book.entitlement, 0)
    out: set[MemberModel] = set()
    for key, contributed in book.contribution.items():
        entitled = book.entitlement.get(key, 0)
        if contributed <= 0 or entitled <= 0:
            continue
        owner = key[0]
        if book.demand(key) >= WANTS_BACK * entitled or recent.get(
            owner, 0.0
        ) >= WANTS_BACK * entitled_total.get(owner, 0):
            out.add(key)
    return frozenset(out)


def _filter_report(snapshot: Snapshot, spec: PodSpec) -> str:
    """Which filters rule the nodes out, most common first."""
    counts: dict[str, int] = {}

    def count(reason: str) -> None:
        counts[reason] = counts.get(reason, 0) + 1

    for node in sorted(snapshot.nodes, key=lambda n: n.name):
        if not node.ready:
            count("not Ready")
        elif node.unschedulable:
            count("cordoned")
        elif spec.gpu_model is not None and node.gpu_model != spec.gpu_model:
            count("another GPU model")
        elif blocking_taints(node.taints, spec.tolerations):
            count("untolerated taints")
        elif not labels_match(spec, effective_labels(node)):
            count("labels not matching its node selector or affinity")
        elif node.gpus < spec.gpus:
            count(f"fewer than {spec.gpus} GPUs")
        else:
            count("too little CPU, memory or pod slots")
    if not counts:
        return "the cluster has no nodes"
    total = sum(counts.values())
    parts = [
        f"{n} {reason}" for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return f"of {plural(total, 'node')}, " + ", ".join(parts)


# `position` is re-exported for the API's own messages.
__all__ += ["position"]


def _named(job: PendingJob) -> str:
    return job_name(job.job_id, job.pods)


def _victim_named(victim: VictimJob) -> str:
    return job_name(victim.job_id, [pod for pod, _ in victim.pods])
