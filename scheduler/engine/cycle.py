"""One scheduling cycle: shares, order, placement, gangs, reclaim and explanations.

`schedule(snapshot, policy)` is a pure function: no I/O, no clock, no randomness, and
every collection is walked in an order fixed by names and ids, so the same snapshot and
policy give identical decisions whatever the order of the snapshot's tuples.

The cycle:
1. Shares (`shares.build`): entitlements, allocations, demand (without the jobs that
   can never run, `runnable`) and fair shares per (member, GPU model), as at the
   instant of the snapshot. `Decisions.shares` reports exactly these (the same as
   `compute_shares`).
2. Capacity promised to nominated jobs (an earlier reclaim) is held for them first.
3. Jobs are taken one at a time from the member furthest below its fair share
   (`ordering`). A job is checked against its member's limits (`max_gpus`; with
   borrowing off, its entitlement; owners' `lending_limit`), then placed: a single pod
   on the best node (`placement`), a gang whole or not at all (`gang`). A pod shape that
   failed once is not tried again in the cycle: capacity only shrinks within a cycle.
   A job that does not fit does not stop the member's later jobs (backfill), and when
   nothing about it can change within the cycle, the member's following jobs of the same
   shape wait for the same reason without a turn each. A later job of the member with
   the same shape, model and standing (entitlement, reclaim limit) as a job that waited,
   taken while nothing has changed since that job's turn (no bind, hold, release,
   preemption, nomination or move), waits for the same reason without a turn too.
4. A job that does not fit, of a member below its fair share for the job's GPU model or
   that keeps its member within its entitlement (counting GPUs already held for its
   nominated jobs), first tries consolidation (`consolidation`) when enough GPUs of its
   model are free but scattered: borrowed work that fits elsewhere is preempted so that
   its room opens, and it is nominated there (a few jobs per cycle at most). Otherwise
   it triggers reclaim (`reclaim`):
   preemptions plus a nomination holding the freed capacity for it, or, when the only
   pods to take back are younger than the minimum runtime, a hold on the free capacity
   it will use (a drain, not reported as a nomination). A job whose nominated capacity
   is still being freed by terminating pods does not reclaim more. With
   `reclaim_overtaken_after_seconds`, a job of 2 or more GPUs that waited that long and
   still has no room takes back the GPUs of its member's own later, smaller jobs that
   resume (`reclaim.Overtaken`, cause `queue`).
5. Every job still waiting gets one sentence (`explain`).

Bind order: jobs in the order they were placed, the pods of a gang one after another.
Preemptions: per reclaim, victims in the order chosen, pods by uid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeVar

from scheduler.engine import shares as shares_mod
from scheduler.engine.collector import pause, resume
from scheduler.engine.consolidation import Consolidator, Move, Positions, fragmented
from scheduler.engine.decisions import (
    Bind,
    Decisions,
    Explanations,
    MemberShare,
    Nomination,
    Preemption,
    PreemptionCause,
)
from scheduler.engine.entitlement import MemberModel, node_model
from scheduler.engine.explain import (
    NEVER_RUNS,
    Waiting,
    capacity_detail,
    drain_detail,
    fmt,
    job_name,
    max_gpus_detail,
    no_borrowing_detail,
    no_move_detail,
    overtook_clause,
    plural,
    position,
    sentence,
    spent_detail,
    whole_minutes,
)
from scheduler.engine.gangs import Plan, plan_job
from scheduler.engine.jobinfo import JobInfo, required_job, required_pods
from scheduler.engine.mentions import job_of, mention
from scheduler.engine.ordering import LateBorrowing, MemberQueues, OrderKeys, ratio
from scheduler.engine.placement import (
    ClusterState,
    View,
    blocking_taints,
    effective_labels,
    labels_match,
    spec_res,
)
from scheduler.engine.reclaim import NoReclaim, Reclaimer, ReclaimResult, VictimJob, Why
from scheduler.engine.snapshot import PendingJob, PodSpec, RunningPod, Snapshot
from scheduler.engine.terms import PolicyTerms, terms_of

if TYPE_CHECKING:
    from policies.model import Policy

_EPS = 1e-9
_N = TypeVar("_N", int, float)
_HOUR_S = 3600.0
_SHARED_WAITS = ("capacity", "unplaceable", "kept")
"""Waits an alike job later in the cycle shares while nothing moved (`_Cycle.run`)."""
_NOT_KEPT = (False, False, False)
"""`kept_status` of a job never reclaimed (while the limit is above 0)."""
_KEPT = [
    (e, lost, recent) for e in (False, True) for lost in (False, True) for recent in (False, True)
]
"""Every `kept_status`, made once, by 4 * exhausted + 2 * lost + recent: asked of every
reclaimed job at each of its turns and of each alike job skipped after it."""
WANTS_BACK = 0.5
"""An owner whose demand on a model, or whose recent mean allocation, reaches this part
of its entitlement is likely to want its nodes back soon: half is where an owner's
next burst of work no longer fits in what it leaves idle."""

__all__ = ["compute_shares", "schedule"]


def compute_shares(snapshot: Snapshot, policy: Policy) -> tuple[MemberShare, ...]:
    """Every member's position per GPU model, without scheduling anything."""
    return shares_mod.build(snapshot, policy).shares()


def schedule(snapshot: Snapshot, policy: Policy) -> Decisions:
    pause()  # see `collector`
    try:
        return _Cycle(snapshot, policy).run()
    finally:
        resume()


class _Claim:
    """A member's position on a GPU model with a job that may reclaim. A plain class,
    not a dataclass: see `scheduler.engine.jobinfo.JobInfo`."""

    __slots__ = ("above_ratio", "after", "allocated", "entitled", "fair")

    allocated: int
    """Allocated plus held for its nominated jobs."""
    fair: float
    after: int
    """`allocated` with the job."""
    entitled: bool
    """The job keeps it within its entitlement."""
    above_ratio: float | None
    """allocated / fair share with the job, when above 1 and not entitled."""

    def __init__(
        self,
        allocated: int,
        fair: float,
        after: int,
        entitled: bool,
        above_ratio: float | None,
    ) -> None:
        self.allocated = allocated
        self.fair = fair
        self.after = after
        self.entitled = entitled
        self.above_ratio = above_ratio


class _Position:
    """A member's position on one GPU model as the order reads it (`_Cycle.position`),
    kept while the cycle's positions do not change (`_Cycle.moved`): a queue of hundreds
    of jobs keys each one in turn, and most turns change nothing. A plain class: see
    `scheduler.engine.jobinfo.JobInfo`."""

    __slots__ = (
        "borrowing_key",
        "entitled_key",
        "fair",
        "held",
        "key",
        "late_most",
        "moved",
        "over",
    )

    key: MemberModel
    held: int
    """Allocated plus held for its nominated jobs."""
    fair: float
    over: int
    """Allocated plus held for its nominated jobs, less its entitlement."""
    late_most: int
    """`LateBorrowing.most` of the key: no job is within its entitlement by more."""
    entitled_key: tuple[int, float]
    """The order's key of a job within the entitlement, and of one that borrows: made
    once, not per job."""
    borrowing_key: tuple[int, float]
    moved: int
    """`_Cycle.moved` when it was read."""

    def __init__(
        self,
        key: MemberModel,
        held: int,
        fair: float,
        over: int,
        late_most: int,
        ratio: float,
        moved: int,
    ) -> None:
        self.key = key
        self.held = held
        self.fair = fair
        self.over = over
        self.late_most = late_most
        self.entitled_key = (0, ratio)
        self.borrowing_key = (1, ratio)
        self.moved = moved


def _per_member(values: dict[tuple[str, str], _N], zero: _N) -> dict[str, _N]:
    """Per-model values summed per member (or owner)."""
    out: dict[str, _N] = {}
    for (m, _), v in values.items():
        out[m] = out.get(m, zero) + v
    return out


class _Outcome:
    """A plain class: see `scheduler.engine.jobinfo.JobInfo`."""

    __slots__ = (
        "binds",
        "kept",
        "nominations",
        "preemptions",
        "waiting",
    )

    binds: list[Bind]
    preemptions: list[Preemption]
    nominations: list[Nomination]
    waiting: dict[str, tuple[PendingJob, Waiting]]
    kept: list[str]
    """The jobs of `waiting` whose wait is "kept", in the order decided: the decisions
    name them without a pass over every wait (thousands on a contended queue)."""

    def __init__(self) -> None:
        self.binds = []
        self.preemptions = []
        self.nominations = []
        self.waiting = {}
        self.kept = []


class _Cycle(OrderKeys):
    def __init__(self, snapshot: Snapshot, policy: Policy) -> None:
        self.snapshot = snapshot
        self.policy = policy
        self.terms = terms = terms_of(policy)
        self.state = ClusterState(snapshot)
        self.book = shares_mod.build(snapshot, policy, self.state)
        self.never_runs = self.book.never_runs
        self.state.wanted = wanted_nodes(self.book, snapshot.usage_history, terms)
        self._wanted_of: dict[tuple[str, str | None], frozenset[str]] = {}
        self._quiet: dict[tuple[str, str | None], dict[str, int]] = {}
        """`_quiet_lenders` per member and model, without lending limits."""
        limit = terms.max_reclaims_per_job
        self.first_reclaim_allowed = limit is None or limit > 0
        """A job never reclaimed is not at the limit (`kept_status`)."""
        self.distinct = len(self.book.info) == len(self.book.infos)
        """No job id is pending twice: a job naming a GPU model counts against it."""
        self.out = _Outcome()
        # Positions, updated by every bind and preemption of the cycle.
        self.alloc: dict[MemberModel, int] = dict(self.book.allocation.allocated)
        self.member_total: dict[str, int] = _per_member(self.alloc, 0)
        self.lent: dict[str, int] = _per_member(self.book.allocation.lent, 0)
        """GPUs of other members' pods on each owner's nodes."""
        self.fair_total: dict[str, float] = _per_member(self.book.fair, 0.0)
        self.promised: dict[MemberModel, int] = {}
        """GPUs held for each member's nominated jobs (not bound yet)."""
        self.late = LateBorrowing(self.book.allocation.late)
        """What overtook each pending job on others' nodes (see `ordering`)."""
        self.late_window = float(terms.min_runtime_seconds + terms.reclaim_grace_period_seconds)
        self.moved = 0
        """Counts the changes of `alloc` and `promised` (binds, preemptions, holds for
        nominated jobs given and released): a `_Position` read at one count holds while
        it stays the same."""
        self._positions: dict[str, dict[str, _Position]] = {}
        """Member -> model -> its position (`position`)."""
        self.promised_jobs: dict[str, tuple[MemberModel, int]] = {}
        """What each job holds in `promised`."""
        self.freeing: set[str] = set()
        """Jobs whose nominated nodes still carry terminating pods."""
        # The policy's limits.
        self.lenders = self.never_runs.lenders
        self.capped = terms.capped
        self.checkpointable = terms.checkpointable
        self.borrowing = terms.borrowing
        self.reclaim_limit = terms.max_reclaims_per_job
        self.reclaim_window = float(terms.reclaim_limit_window_seconds)
        after = terms.reclaim_overtaken_after_seconds
        self.overtaken_after = -1.0 if after is None else float(after)
        """`reclaim_overtaken_after_seconds`, -1 when unset (read per job: see
        `overtaken_due`)."""
        # The pending jobs.
        self._info: dict[str, JobInfo] = self.book.info
        self.views: dict[int, View] = {}
        """Shape number of a single-pod job -> its pod's view (see `placement`)."""
        self.queued_entitled: dict[str, tuple[PendingJob, bool, int]] = {}
        """Per member, its queued job, whether that keeps it within its entitlement, and
        how many preemptions had been decided then (see `entitled_now`)."""
        self.only_model = self.book.only_model
        # What failed once in the cycle fails again (capacity only shrinks).
        self.failed: set[object] = set()
        self.never_detail: dict[int, str] = {}
        self.reclaim_failed: dict[tuple[object, ...], NoReclaim] = {}
        self.reclaimer: Reclaimer | None = None
        self.consolidator: Consolidator | None = None
        self.moves_left = terms.max_consolidations_per_cycle
        self.no_move: set[tuple[int, str, bool, bool]] = set()
        """(shape, member, taking, kept off wanted nodes) that found no move: none appears
        later in the cycle, as capacity only shrinks."""
        self.no_move_why: dict[tuple[int, str], tuple[str, str, bool]] = {}
        """(shape, member) -> (why it got no move, GPU model, taking): "searched" when a
        search for a job blocked by fragmentation found none, "spent" when the cycle had
        no move left. Its explanation says what kept the nodes closed."""
        self.moves_spent_for: str | None = None
        """The first job that came for a move after the cycle had made its last
        (`Decisions.moves_spent_for`)."""
        self._started_gpus: dict[int, int] | None = None
        """Node -> GPUs bound in the cycle, worked out for the first refusal."""

    # -- positions -----------------------------------------------------------------------
    def position_of(self, member: str, model: str | None) -> tuple[int, float]:
        if model is None:
            return self.member_total.get(member, 0), self.fair_total.get(member, 0.0)
        key = (member, model)
        return self.alloc.get(key, 0), self.book.fair.get(key, 0.0)

    def info(self, job: PendingJob) -> JobInfo:
        return self._info[job.job_id]

    def position_model(self, job: PendingJob) -> str | None:
        """The model a job's member position is measured on (`position_model_of`)."""
        return self.position_model_of(self._info[job.job_id])

    def position_model_of(self, info: JobInfo) -> str | None:
        """The model a job's member position is measured on: the one it asks for, the
        only one there is, or None (all models together)."""
        explicit = info.explicit_model
        return explicit if explicit is not None else self.only_model

    def order_key(self, member: str, info: JobInfo) -> tuple[int, float]:
        """Entitled demand first (see `ordering`), then allocated / fair share. A job
        that can never run goes before all: its turn changes nothing, and keyed by its
        own model it would move its member's place in the order (its next jobs' turns)
        by a position that is not theirs."""
        if self.never_runs.known(info):
            return (-1, 0.0)
        job = info.job
        # `position_of(member, position_model_of(info))` written out, and `_entitled` on
        # the key it reads: once per queued job and cycle.
        explicit = info.explicit_model
        model = explicit if explicit is not None else self.only_model
        if model is None:
            allocated = self.member_total.get(member, 0)
            fair = self.fair_total.get(member, 0.0)
            entitled = self._entitled(member, job, info)
            self.queued_entitled[member] = (job, entitled, len(self.out.preemptions))
            return (0 if entitled else 1, ratio(allocated, fair))
        pos = self.position(member, model)
        if explicit is None or not self.distinct:
            entitled = self._entitled(member, job, info)
        elif info.gpus <= 0:
            entitled = True
        else:
            # Its demand counts against the model it names (`ShareBook.model_of`).
            entitled = self._within(pos, info.gpus, job.submitted_at)
        self.queued_entitled[member] = (job, entitled, len(self.out.preemptions))
        return pos.entitled_key if entitled else pos.borrowing_key

    def position(self, member: str, model: str) -> _Position:
        """The member's position on the model, read again only after it may have
        changed."""
        of_member = self._positions.get(member)
        if of_member is None:
            of_member = self._positions[member] = {}
        pos = of_member.get(model)
        if pos is None or pos.moved != self.moved:
            key = (member, model)
            allocated = self.alloc.get(key, 0)
            held = allocated + self.promised.get(key, 0)
            fair = self.book.fair.get(key, 0.0)
            pos = of_member[model] = _Position(
                key,
                held,
                fair,
                held - self.book.entitlement.get(key, 0),
                self.late.most(key),
                ratio(allocated, fair),
                self.moved,
            )
        return pos

    def entitled_now(self, job: PendingJob) -> bool:
        """`within_entitlement` for a job just taken from its member's queue: what was
        found when it was queued still holds unless something was preempted since. Its
        member's allocation changes only by its own binds (none while the job is queued:
        the member's jobs are handled one at a time) and by preemptions; what is held
        for its nominated jobs changes only when one of them is handled (the release of
        the job's own hold forgets what was found). Also good for a job that did not
        fit, until its turn ends: a reclaim, a drain or a move for it are preemptions or
        end its turn."""
        found = self.queued_entitled.get(job.member)
        if found is not None and found[0] is job and found[2] == len(self.out.preemptions):
            return found[1]
        return self.within_entitlement(job.member, job)

    def within_entitlement(self, member: str, job: PendingJob) -> bool:
        """The job keeps its member within its entitlement for the model its demand
        counts against (GPUs held for its nominated jobs included); a job asking no GPU
        borrows nothing."""
        return self._entitled(member, job, self._info[job.job_id])

    def _entitled(self, member: str, job: PendingJob, info: JobInfo) -> bool:
        """`within_entitlement`, knowing what is known of the job."""
        gpus = info.gpus
        model = self.book.model_of(info)
        if gpus <= 0 or model is None:
            return gpus <= 0
        return self._within(self.position(member, model), gpus, job.submitted_at)

    def _within(self, pos: _Position, gpus: int, submitted_at: float) -> bool:
        """`gpus` more keep the member within its entitlement on the position's model,
        holding what it holds (allocated plus held for its nominated jobs) less what
        overtook a job submitted at `submitted_at` (see `ordering`), which only matters
        when it would not fit without it (never by more than the member's GPUs on
        others' nodes: most turns of a member well beyond its entitlement)."""
        over = pos.over + gpus
        return over <= 0 or (
            over <= pos.late_most
            and self.late.at_least(pos.key, submitted_at, self.late_window, over)
        )

    def lendable(self) -> dict[str, int]:
        if not self.lenders:
            return {}
        return {name: limit - self.lent.get(name, 0) for name, limit in self.lenders}

    def exhausted(self, job: PendingJob) -> bool:
        """The job was reclaimed as often as the policy allows."""
        limit = self.reclaim_limit
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
        """The job's last reclaim is less than the policy's `reclaimLimitWindowSeconds`
        old (an unknown time is not recent: the window is what bounds its wait)."""
        at = job.reclaimed_at
        return at is not None and self.snapshot.now - at < self.reclaim_window

    def lost_before(self, job: PendingJob) -> bool:
        """The job was reclaimed before and restarts from zero: another reclaim would
        throw its work away again."""
        return job.reclaims > 0 and not job.resumes(self.checkpointable)

    def kept_status(self, job: PendingJob) -> tuple[bool, bool, bool]:
        """Where the job stands with the rule that keeps reclaimed work off nodes whose
        owners are likely to want them back (`_handle`): at the reclaim limit (it would
        keep a busy owner out of its nodes for its whole run), reclaimed before with
        nothing to resume from, and, either way, reclaimed within the window."""
        if job.reclaims == 0 and self.first_reclaim_allowed:
            return _NOT_KEPT  # most jobs, asked at every turn
        exhausted = self.exhausted(job)
        lost = self.lost_before(job)
        recent = (exhausted or lost) and self.recently_reclaimed(job)
        return _KEPT[4 * exhausted + 2 * lost + recent]

    def _kept_detail(self, job: PendingJob, model: str | None) -> str:
        limit = self.terms.max_reclaims_per_job
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
        window = self.terms.reclaim_limit_window_seconds
        left = job.reclaimed_at + window - self.snapshot.now
        return (
            f"{text}; bigger than its entitlement, it may run anywhere {window} s after its "
            f"last reclaim (reclaimLimitWindowSeconds), in {whole_minutes(left)}"
        )

    def _kept_wait(self, job: PendingJob, waiting: Waiting) -> Waiting:
        """The "limit" wait of a job that waited as "kept" (kept off wanted nodes and
        nothing to reclaim there): the free capacity it may not use would only mislead,
        so its sentence says why, naming the job (how often it was reclaimed, when its
        window ends), then what reclaim said (`waiting.detail`, the same for alike jobs).
        Written with the sentences: a contended cycle has hundreds of such jobs."""
        model = self.book.model_of(self._info[job.job_id])
        detail = "; ".join(d for d in (self._kept_detail(job, model), waiting.detail) if d)
        return Waiting("limit", detail)

    def _quiet_lenders(
        self, member: str, model: str | None, lendable: dict[str, int]
    ) -> dict[str, int]:
        """`lendable` with nothing lent by owners likely to want their nodes of the
        model back: a job that is no longer reclaimed would keep them out of them for a
        whole run. Its own, unowned and quiet owners' nodes stay open. Without a lending
        limit `lendable` is always empty: the answer is made once per member and model
        (nothing changes the dicts handed out; a contended queue asks at hundreds of
        turns)."""
        if not self.lenders:
            found = self._quiet.get((member, model))
            if found is not None:
                return found
        out = dict(lendable)
        for owner in self._wanted_owners(member, model):
            out[owner] = 0
        if not self.lenders:
            self._quiet[(member, model)] = out
        return out

    def _wanted_owners(self, member: str, model: str | None) -> frozenset[str]:
        """Other owners likely to want their nodes of the model back (the state's
        `wanted` is set once, as the cycle begins: found once per member and model)."""
        key = (member, model)
        found = self._wanted_of.get(key)
        if found is None:
            found = self._wanted_of[key] = frozenset(
                owner
                for owner, wanted_model in self.state.wanted
                if owner != member and (model is None or wanted_model == model)
            )
        return found

    # -- the cycle -----------------------------------------------------------------------
    def run(self) -> Decisions:
        self._hold_nominations()
        started = self._head_start() if self.terms.head_start else set()
        queues = MemberQueues(self.book.queued, self)
        decided = self.out.waiting
        found: dict[tuple[object, ...], tuple[int, Waiting]] = {}
        info = queues.pop()
        while info is not None:
            job = info.job
            if started and job.job_id in started:
                info = queues.advance(job.member)
                continue
            alike = self._alike_key(job, info)
            if alike is not None:
                before = self.state.version
                seen = found.get(alike)
                if seen is not None and seen[0] == before:
                    decided[job.job_id] = (job, seen[1])
                    if seen[1].kind == "kept":
                        self.out.kept.append(job.job_id)
                    self._wait_alike(job, info, seen[1], queues)
                    info = queues.advance(job.member)
                    continue
            self._handle(job, info)
            waiting = decided.get(job.job_id)
            if waiting is not None and waiting[1].kind in _SHARED_WAITS:
                if alike is not None and self.state.version == before:
                    found[alike] = (before, waiting[1])
                self._wait_alike(job, info, waiting[1], queues)
            info = queues.advance(job.member)
        return Decisions(
            binds=tuple(self.out.binds),
            preemptions=tuple(self.out.preemptions),
            nominations=tuple(self.out.nominations),
            explanations=Explanations(self._explanations),
            shares=self.book.shares(),
            kept_off_wanted=frozenset(self.out.kept),
            moves_spent_for=self.moves_spent_for,
        )

    def _head_start(self) -> set[str]:
        """The head start (docs/glossary.md, `sharing.headStart`): before the fair-share
        order, each member's first queued job of one pod asking for 2 or more GPUs, per
        GPU model, behind none of the member's jobs of a higher priority, is placed if it
        fits now and keeps its member within its entitlement, oldest first
        (`job_sort_key`, then member). A first job that is nominated, at the reclaim limit
        or incomplete gets none, nor do the member's later ones.

        Why: such a job starts only when that many GPUs are free at once on one node. In
        the order, members with a better key come first, and their 1-GPU jobs take each
        GPU as it frees (another owner's entitled jobs too, landing on this owner's free
        node rather than reclaiming their own), so the owner's big job waited for the
        queue to drain. Only within the entitlement: a borrowing job placed ahead of the
        order would only be reclaimed again by the members it went before. Placement
        only: a job that does not fit has its turn in the order as before (reclaim,
        moves, nominations). Returns the jobs placed, which the order then skips."""
        book = self.book
        first: dict[MemberModel, JobInfo] = {}
        repeated = (
            set()
            if len(book.info) == len(book.infos)
            else {i.job.job_id for i in book.infos if book.info[i.job.job_id] is not i}
        )
        top: dict[MemberModel, int] = {}
        for info in book.queued:
            job = info.job
            model = book.model_of(info)
            if model is None or self.never_runs.known(info):
                continue
            key = (job.member, model)
            # Never ahead of the member's own jobs of a higher priority.
            if top.setdefault(key, job.priority) != job.priority or key in first:
                continue
            if info.gpus >= 2 and len(job.pods) == 1:
                first[key] = info
        started: set[str] = set()
        for (member, model), info in sorted(
            first.items(), key=lambda kv: (shares_mod.job_sort_key(kv[1].job), kv[0][0])
        ):
            job = info.job
            if (
                info.incomplete
                or job.nominated_nodes
                or self.exhausted(job)
                or job.job_id in repeated
            ):
                continue  # its turn in the order, as before: none of the member's later ones
            if not self.within_entitlement(member, job):
                continue  # borrowing ahead of the order would only be reclaimed again
            if (member in self.capped or not self.borrowing) and self._limit(job, model):
                continue
            models = None if self.borrowing else self._models_allowed(job, model)
            lendable = self.lendable() if self.lenders else {}
            if self._try_place(job, info, lendable, models, False, False, False):
                started.add(job.job_id)
        return started

    def _alike_key(self, job: PendingJob, info: JobInfo) -> tuple[object, ...] | None:
        """What a job's turn depends on besides what the cycle changes (None when it may
        depend on more): its member, its shape, the model its demand counts against,
        whether it keeps the member within its entitlement, where it stands with the
        rule that keeps reclaimed work off wanted nodes (`kept_status`), whether it
        resumes when preempted, and whether it may take back what it was overtaken by
        (`overtaken_due`; when both may, the later job's victims are some of the earlier
        one's). What the cycle changes all moves `ClusterState.version`:
        a bind or a hold takes capacity, a release gives it back, a preemption (of a
        reclaim or a move) adds terminating capacity, a nomination holds it. Two jobs
        with the same key, taken at the same version, wait for the same reason: pending
        work is decided once per (member, shape) when the queue is long and nothing
        moves, however the member's jobs of other shapes interleave."""
        if info.incomplete or job.nominated_nodes:
            return None
        job_id = job.job_id
        if job_id in self.state.holds or job_id in self.freeing:
            return None
        key = (
            job.member,
            info.sid,
            self.book.model_of(info),
            self.entitled_now(job),
            self.kept_status(job),
            job.resumes(self.checkpointable),
        )
        if self.overtaken_after < 0:
            return key  # the rule is off: every job stands alike there
        return (*key, self.overtaken_due(job))

    def _wait_alike(
        self, job: PendingJob, info: JobInfo, why: Waiting, queues: MemberQueues
    ) -> None:
        """The member's next jobs of the same shape wait for the same reason, decided at
        once: capacity only shrinks within a cycle, and when reclaim cannot change (the
        member is not below its fair share, or nobody could be preempted) nothing else
        would. Saves a turn per job when thousands of identical pods are pending. Not for
        a "kept" wait: each such job's sentence names it, so each takes `run`'s shortcut
        one by one."""
        if why.kind == "kept":
            return
        queue, pos = queues.rest(job.member)
        sid = info.sid
        if pos >= len(queue) or queue[pos].sid != sid:
            return  # the member's next job has another shape (most calls, when shapes mix)
        model = self.book.model_of(info)
        gpus = info.gpus
        if model is not None and gpus > 0:
            place = self.position(job.member, model)
            entitled = self.entitled_now(job)
            below = place.held < place.fair - _EPS or entitled
            if below and (
                self.reclaimer is None or self._may_find_victims(job.member, model, entitled)
            ):
                return
        status = self.kept_status(job)
        checkpointable = self.checkpointable
        resumes = job.resumes(checkpointable)
        due = self.overtaken_due(job)
        book, holds = self.book, self.state.holds
        freeing, waiting = self.freeing, self.out.waiting
        while pos < len(queue):
            alike = queue[pos]
            nxt = alike.job
            jid = nxt.job_id
            if (
                alike.sid != sid
                or self.kept_status(nxt) != status
                or nxt.resumes(checkpointable) != resumes
                or (self.overtaken_after >= 0 and self.overtaken_due(nxt) != due)
                or book.model_of(alike) != model
                or jid in holds
                or jid in freeing
                or alike.incomplete
            ):
                break
            waiting[jid] = (nxt, why)
            pos += 1
        queues.skip_to(job.member, pos)

    def _hold_nominations(self) -> None:
        # Nothing is held for a job that can never run (nominated before a node left or
        # a limit changed): no other job may wait for it.
        known, info = self.never_runs.known, self._info
        jobs = sorted(
            (j for j in self.snapshot.pending if j.nominated_nodes and not known(info[j.job_id])),
            key=lambda j: (j.member, *shares_mod.job_sort_key(j)),
        )
        if not jobs:
            return  # no pass over the running pods for nodes nobody is nominated on
        term_nodes = {
            p.node for p in self.snapshot.running if p.terminating and p.node in self.state.index
        }
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

    def _handle(self, job: PendingJob, info: JobInfo) -> None:
        """Place the job, or decide why it waits (reclaiming for it if it may)."""
        job_id, member = job.job_id, job.member
        held = job_id in self.state.holds
        if held:
            # Its nominated capacity is its own to place on now.
            self.state.release(job_id)
            self._unpromise(job_id)
            self.queued_entitled.pop(member, None)  # counted what was held for it
        if info.incomplete:
            self._wait(job, Waiting("incomplete"))
            return
        model = self.book.model_of(info)
        if member in self.capped or not self.borrowing:
            limit = self._limit(job, model)
            if limit is not None:
                self._wait(job, Waiting("limit", limit))
                return
        lendable = self.lendable() if self.lenders else {}
        most = self.reclaim_limit
        exhausted = most is not None and job.reclaims >= most  # `exhausted(job)`
        # Kept to quiet owners' nodes when beyond its entitlement (`kept_status`); a job
        # bigger than the entitlement only for a while after its last reclaim, or it might
        # wait for ever.
        guarded = (
            (exhausted or self.lost_before(job))
            and (self._fits_entitlement(job, model) or self.recently_reclaimed(job))
            and not self.entitled_now(job)
        )
        if guarded:
            lendable = self._quiet_lenders(member, model, lendable)
        models = None if self.borrowing else self._models_allowed(job, model)
        # Cautious: the job borrows and restarts from zero when reclaimed, so placement
        # keeps it off nodes whose owners are likely to want them back.
        cautious = exhausted or (
            not job.resumes(self.checkpointable) and not self.entitled_now(job)
        )
        if self._try_place(job, info, lendable, models, held, cautious, guarded):
            return
        if job_id in self.freeing:
            self._hold_while_freeing(job)
            return
        if self.never_runs.placement(info):
            self._wait(job, Waiting("unplaceable", self._unplaceable_detail(job)))
            return
        detail = self._try_reclaim(job, model, lendable, guarded)
        if (
            self.overtaken_after >= 0
            and job_id not in self.out.waiting
            and self._try_overtaken(job, model, lendable, models)
        ):
            return
        if job_id not in self.out.waiting:
            if guarded:
                self._wait(job, Waiting("kept", detail))  # see `_kept_wait`
                self.out.kept.append(job_id)
            else:
                self._wait(job, Waiting("capacity", detail))

    def _try_place(
        self,
        job: PendingJob,
        info: JobInfo,
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
        gpus = info.gpus
        restricted = models is not None or (
            bool(lendable) and any(h < gpus for o, h in lendable.items() if o != job.member)
        )
        sid = info.sid
        shape = (sid, job.member, models, guarded) if restricted else sid
        if not held and shape in self.failed:
            return False
        pods = job.pods
        if len(pods) == 1 and models is None:
            pod = pods[0]
            view = self.views.get(sid)
            if view is None:
                view = self.views[sid] = self.state.view(pod.spec, info.pod_key)
            i = self.state.best_node(pod.spec, job.member, lendable, cautious, view)
            if i is not None:
                self._bind_pod(job, pod.uid, pod.spec, i)
                return True
        else:
            plan = plan_job(self.state, pods, job.member, lendable, None, models, cautious)
            if plan is None and 0 < job.min_member < len(pods):
                plan = self._plan_most(job, lendable, models, cautious)
            if plan is not None:
                self._bind(job, plan.pods)
                return True
        if not held:
            self.failed.add(shape)
        return False

    def _plan_most(
        self,
        job: PendingJob,
        lendable: dict[str, int],
        models: frozenset[str] | None,
        cautious: bool,
    ) -> Plan | None:
        """For a gang with more pods than its `min_member` (a PodGroup's minMember) that
        does not fit whole: a plan for the most of its first pods, at least `min_member`,
        that fit together (None when even those do not). The gang starts once its
        minimum can; its other pods are placed when room allows, as in Volcano and
        coscheduling. Found by halving: a plan for k pods holds one for fewer."""
        pods, state, member = job.pods, self.state, job.member
        best = plan_job(state, pods[: job.min_member], member, lendable, None, models, cautious)
        if best is None:
            return None
        low, high = job.min_member, len(pods) - 1  # `low` fits; all of them did not
        while low < high:
            mid = (low + high + 1) // 2
            plan = plan_job(state, pods[:mid], member, lendable, None, models, cautious)
            if plan is None:
                high = mid - 1
            else:
                low, best = mid, plan
        return best

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
        gpus = self.info(job).gpus
        if job.member not in self.terms.members or gpus <= 0:
            return None
        total = self.member_total.get(job.member, 0)
        max_gpus = self.terms.max_gpus.get(job.member)
        if max_gpus is not None and total + gpus > max_gpus:
            return max_gpus_detail(job.member, gpus, total, max_gpus)
        if not self.borrowing and not self._models_allowed(job, model):
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
        if self.borrowing or info.gpus <= 0:
            return None
        explicit = info.explicit_model
        options = [explicit] if explicit is not None else self.book.models
        return frozenset(
            m
            for m in options
            if self.alloc.get((job.member, m), 0) + info.gpus
            <= self.book.entitlement.get((job.member, m), 0)
        )

    def _bind(self, job: PendingJob, where: tuple[tuple[str, int], ...]) -> None:
        specs = {p.uid: p.spec for p in job.pods}
        for uid, i in where:
            self._bind_pod(job, uid, specs[uid], i)

    def _bind_pod(self, job: PendingJob, uid: str, spec: PodSpec, i: int) -> None:
        """Bind one pod of the job on node i: its member's position, the owner's lent
        GPUs and the node's free capacity follow."""
        member = job.member
        state = self.state
        node = state.nodes[i]
        owner = node.owner
        reclaimable = False
        gpus = spec.gpus
        if gpus > 0:
            self.moved += 1
            key = (member, state.model[i])
            alloc = self.alloc
            now = alloc.get(key, 0) + gpus
            reclaimable = now > self.book.entitlement.get(key, 0)
            alloc[key] = now
            total = self.member_total
            total[member] = total.get(member, 0) + gpus
            if owner is not None and owner != member:
                self.lent[owner] = self.lent.get(owner, 0) + gpus
        state.take(i, (gpus, spec.cpu_milli, spec.memory_bytes, 1))
        # Positional: a keyword call costs more per pod.
        self.out.binds.append(Bind(uid, node.name, job.job_id, member, owner, reclaimable))

    def _wait(self, job: PendingJob, why: Waiting) -> None:
        self.out.waiting[job.job_id] = (job, why)

    # -- reclaim -------------------------------------------------------------------------
    def _try_reclaim(
        self, job: PendingJob, model: str | None, lendable: dict[str, int], guarded: bool
    ) -> str:
        """Reclaim for a job that did not fit; the detail of its wait ("" when none).
        `guarded`: the job is kept to quiet lenders (`lendable` says which). On its own
        model first; failing that, on each other model its pods are admitted to where
        the job keeps its member within its entitlement (`_reclaim_entitled_elsewhere`)."""
        detail = self._reclaim_on(job, model, lendable, guarded)
        if job.job_id not in self.out.waiting and model is not None:
            self._reclaim_entitled_elsewhere(job, model, lendable)
            if job.job_id in self.out.waiting:
                return ""
        return detail

    def _reclaim_entitled_elsewhere(
        self, job: PendingJob, model: str, lendable: dict[str, int]
    ) -> None:
        """A job naming no model counts against one of the models it may use (the most
        free, `shares`), where its member may be entitled to nothing: an entitlement is
        what a member can always get back, so the job takes it back on any other model
        it may use where it stays within it. Without this, a member whose own nodes are
        the only ones of their model waited for ever behind a borrower there while its
        job was counted on another model, fragmented or beyond its entitlement."""
        info = self.info(job)
        if info.explicit_model is not None or info.gpus <= 0:
            return
        allowed = None if self.borrowing else self._models_allowed(job, model)
        for other in self.never_runs.reachable_models(info):
            if other == model or (allowed is not None and other not in allowed):
                continue
            pos = self.position(job.member, other)
            if not self._within(pos, info.gpus, job.submitted_at):
                continue
            reclaimer = self._reclaimer_for(job.member, other, True)
            if reclaimer is None:
                continue
            claim = _Claim(pos.held, pos.fair, pos.held + info.gpus, True, None)
            result = self._attempt_reclaim(reclaimer, job, other, claim, lendable)
            if not isinstance(result, NoReclaim):
                self._apply_reclaim(job, other, result, True)
                return

    def _reclaim_on(
        self, job: PendingJob, model: str | None, lendable: dict[str, int], guarded: bool
    ) -> str:
        """`_try_reclaim` on the model the job's demand counts against."""
        if model is None or self.info(job).gpus <= 0:
            return ""
        claim = self._claim(job, model)
        if claim is None:
            return ""
        if self._try_consolidate(job, model, lendable if guarded else None):
            return ""
        reclaimer = self._reclaimer_for(job.member, model, claim.entitled)
        if reclaimer is None:
            # An index built but with no candidate left may still hold jobs at the limit.
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
            # Neither a move nor a reclaim alone makes room: both together may.
            if claim.entitled and self._try_consolidate(job, model, None, taking=True):
                return ""
            return self._no_reclaim_detail(result, claim)
        self._apply_reclaim(job, model, result, claim.entitled)
        return ""

    def _try_overtaken(
        self,
        job: PendingJob,
        model: str | None,
        lendable: dict[str, int],
        models: frozenset[str] | None,
    ) -> bool:
        """Take back, for a job that waits after reclaim, the GPUs of its member's own
        later, smaller jobs that resume where they stopped (`reclaim.Overtaken`); True
        when it did (preempting them, or holding free capacity while they age). Never
        for terminating pods alone (that is reclaim's, for a member with a claim), nor,
        with borrowing off, on a model beyond the member's entitlement (`models`)."""
        if model is None or self.info(job).gpus <= 1 or not self.overtaken_due(job):
            return False
        if models is not None and model not in models:
            return False
        reclaimer = self._victim_index()
        result = reclaimer.overtaken(
            required_pods(job),
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
        grace = self.terms.reclaim_grace_period_seconds
        needs = required_job(job).gpus
        victims_text: list[str] = []
        for victim in result.victims:
            reason = (
                f"reclaim for member {mention(job.member)}'s job {_named(job)} (needs {needs}), "
                f"which comes before job {_victim_named(victim)} in the member's queue: "
                f"{_victim_named(victim)} started on GPUs freed one by one while the bigger "
                "job "
                "waited, and resumes where it stops"
            )
            self._preempt(job, victim, reason, grace, "queue")
            victims_text.append(_victim_named(victim))
        self._nominate(job, result.plan)
        n_pods = sum(len(v.pods) for v in result.victims)
        detail = (
            f"preempting {plural(n_pods, 'pod')} of its member's later jobs "
            f"({', '.join(victims_text)}), which resume where they stop, with a grace "
            f"period of {grace} s; their GPUs are held for this job"
        )
        self.out.waiting[job.job_id] = (job, Waiting("reclaiming", detail))
        self.freeing.add(job.job_id)
        return True

    def overtaken_due(self, job: PendingJob) -> bool:
        """The job has waited `reclaim_overtaken_after_seconds` (never, when unset). Two
        jobs of one shape differ here when the later one in the queue (a lower priority)
        was submitted earlier."""
        after = self.overtaken_after
        return after >= 0 and self.snapshot.now - job.submitted_at >= after

    def _claim(self, job: PendingJob, model: str) -> _Claim | None:
        """The member's position with the job, when it may reclaim for it: the job keeps
        it within its entitlement (reclaim.py), or it is below its fair share. Capacity
        already promised to the member's nominated jobs counts as held."""
        pos = self.position(job.member, model)
        allocated = pos.held
        fair = pos.fair
        after = allocated + self.info(job).gpus
        entitled = self.entitled_now(job)
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
        """The cycle's victim index (reclaim's, shared by consolidation)."""
        if self.reclaimer is None:
            sharing = self.terms
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
            self._info[job.job_id].sid,
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
                required_pods(job),
                job.member,
                model,
                self.alloc,
                self.book.fair,
                self.book.entitlement,
                lendable,
            )
        else:
            result = reclaimer.up_to_fair_share(
                required_pods(job),
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
        grace = self.terms.reclaim_grace_period_seconds
        needs = required_job(job).gpus  # a PodGroup reclaims for its minMember pods
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
        not borrowed ones) age (`model`: the plan's, see `_promise`)."""
        specs = {p.uid: p.spec for p in job.pods}
        for uid, i in plan.pods:
            self.state.hold(job.job_id, i, spec_res(specs[uid]))
        self._promise(job, model)
        idle = sum(from_free[0] for _, _, from_free in self.state.holds.get(job.job_id, ()))
        self.out.waiting[job.job_id] = (
            job,
            Waiting("reclaiming", drain_detail(self.terms.min_runtime_seconds, idle, pods)),
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
        self,
        job: PendingJob,
        victim: VictimJob,
        reason: str,
        grace: int,
        cause: PreemptionCause,
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
                self.moved += 1
                key = (victim.member, node_model(node))
                self.alloc[key] = self.alloc.get(key, 0) - pod.spec.gpus
                self.member_total[victim.member] -= pod.spec.gpus
                # The victim's GPUs stay lent until it is gone (reclaimed or moved): the
                # owner's lending limit must not let a later bind of the cycle lend them
                # a second time while the victim still runs its grace period.

    def _promise(self, job: PendingJob, model: str | None = None) -> None:
        """Count the job's GPUs as held for its member, on `model` (the model of the nodes
        held for it, when reclaim chose it) or the one its demand counts against."""
        info = self._info[job.job_id]
        if model is None:
            model = self.book.model_of(info)
        gpus = info.gpus
        if model is None or gpus <= 0:
            return
        key = (job.member, model)
        self.moved += 1
        self.promised[key] = self.promised.get(key, 0) + gpus
        self.promised_jobs[job.job_id] = (key, gpus)

    def _unpromise(self, job_id: str) -> None:
        found = self.promised_jobs.pop(job_id, None)
        if found is not None:
            self.moved += 1
            self.promised[found[0]] -= found[1]

    def _nominate(self, job: PendingJob, plan: Plan, model: str | None = None) -> None:
        specs = {p.uid: p.spec for p in job.pods}
        nodes: dict[str, str] = {}
        for uid, i in plan.pods:
            self.state.hold(job.job_id, i, spec_res(specs[uid]))
            nodes[uid] = self.state.nodes[i].name
        self.out.nominations.append(Nomination(job_id=job.job_id, nodes=nodes))
        self._promise(job, model)

    # -- consolidation -------------------------------------------------------------------
    def _try_consolidate(
        self,
        job: PendingJob,
        model: str,
        guarded: dict[str, int] | None,
        taking: bool = False,
    ) -> bool:
        """Move borrowed work for a job that may reclaim and waits only because the free
        GPUs of its model are scattered (see `consolidation`); True when it did. Tried
        before reclaim: moved work starts again elsewhere at once, where a reclaim would
        take GPUs away from their member. `guarded`: for a job kept off wanted nodes,
        the lenders it may use (`_quiet_lenders`): the free GPUs on the other owners'
        nodes are not its to gather, and no move may open one of them for it. `taking`
        (after a reclaim found nothing, for a job within its member's entitlement): the
        move may also take what a reclaim for the job could, borrowed work on its
        member's own nodes."""
        key = (self._info[job.job_id].sid, job.member, taking, guarded is not None)
        if self.moves_left <= 0:
            # Whether it was blocked by fragmentation is asked only if explained.
            self.no_move_why.setdefault(key[:2], ("spent", model, False))
            if self.moves_spent_for is None and self.terms.max_consolidations_per_cycle > 0:
                self.moves_spent_for = job.job_id  # not when consolidation is off (0)
            return False
        if key in self.no_move:
            return False
        move = None
        searched = False
        lendable = self.lendable() if guarded is None else guarded
        closed = frozenset() if guarded is None else self._wanted_owners(job.member, model)
        # Room for the pods that must start together, as reclaim makes: a PodGroup's
        # other pods start when room allows (moving work for them was moving it for
        # pods the group can start without).
        need = required_job(job)
        if taking:
            if self.consolidator is None:
                self.consolidator = self._consolidator()
            takeable = self.consolidator.takeable(need, model)
            if takeable > 0 and fragmented(self.state, need, model, takeable, closed):
                searched = True
                move = self.consolidator.find(need, model, lendable, taking=True)
        elif fragmented(self.state, need, model, 0, closed):
            if self.consolidator is None:
                self.consolidator = self._consolidator()
            searched = True
            move = self.consolidator.find(need, model, lendable)
        if move is None:
            self.no_move.add(key)
            if searched:
                self.no_move_why[key[:2]] = ("searched", model, taking)
            return False
        self._apply_move(job, model, move)
        self.moves_left -= 1
        return True

    def _consolidator(self) -> Consolidator:
        index = self._victim_index()
        sharing = self.terms
        return Consolidator(
            self.state,
            index.jobs,
            index.gone,
            self.book.allocation.reclaimable_pods,
            Positions(self.alloc, self.book.fair, self.book.entitlement),
            self.snapshot.now,
            sharing.min_runtime_seconds,
            sharing.preempt_below_min_runtime,
            sharing.max_consolidation_loss_seconds,
        )

    def _apply_move(self, job: PendingJob, model: str, move: Move) -> None:
        grace = self.terms.reclaim_grace_period_seconds
        needs = required_job(job).gpus  # a PodGroup moves work for its minMember pods
        where = ", ".join(move.nodes)
        victims_text: list[str] = []
        # The claimant's position before anything leaves (its own moved jobs included).
        whose = self._reclaimer_position(job.member, model, True)
        for victim in move.victims:
            assert self.reclaimer is not None
            self.reclaimer.gone.add(victim.job_id)
            self.reclaimer.gone_reclaimable += victim.reclaimable
            owner = move.taken.get(victim.job_id)
            if owner is not None:
                # Taken for the claimant's member, or for a moved victim's member whose
                # work goes home to these GPUs.
                home = "" if owner == job.member else ", whose moved work goes home there"
                reason = (
                    f"reclaim for member {mention(job.member)} ({whose}, job "
                    f"{job_of(_named(job), job.member)} needs {needs}), with consolidation "
                    f"of {where}: {self._victim_position(victim.member, model)}, and job "
                    f"{_victim_named(victim)} runs on borrowed GPUs of member "
                    f"{mention(owner)}{home}"
                )
                # Only an owner's guarantee lets taken work go (see `consolidation`).
                self._preempt(job, victim, reason, grace, "entitlement")
                victims_text.append(job_of(_victim_named(victim), victim.member))
                continue
            if victim.job_id in move.homes:
                why = (
                    f"it goes home: member {mention(victim.member)} is within its "
                    "entitlement, and "
                    "borrowed work on its own nodes is taken back for it"
                )
            elif victim.job_id in move.elsewhere:
                why = "it fits on free GPUs elsewhere"
            else:
                why = f"it runs on borrowed GPUs and {self._victim_position(victim.member, model)}"
            reason = (
                f"consolidation of {where} for job "
                f"{job_of(_named(job), job.member, as_member=True)} (needs {needs} {model}; "
                "the idle GPUs are scattered over too many nodes): job "
                f"{job_of(_victim_named(victim), victim.member, as_member=True)} moves, {why}"
            )
            self._preempt(job, victim, reason, grace, "consolidation")
            victims_text.append(job_of(_victim_named(victim), victim.member))
        self._nominate(job, move.plan)
        n_pods = sum(len(v.pods) for v in move.victims)
        detail = (
            f"waiting for consolidation of {where}: {plural(n_pods, 'pod')} leaving "
            f"({', '.join(victims_text)}) with a grace period of {grace} s, since the idle "
            f"{model} GPUs are scattered over nodes too small for it; their GPUs are held "
            "for this job"
        )
        self.out.waiting[job.job_id] = (job, Waiting("consolidating", detail))
        self.freeing.add(job.job_id)

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

    def _unplaceable_detail(self, job: PendingJob) -> str:
        info = self._info[job.job_id]
        sid = info.sid
        if not self.never_runs.never_pods[sid]:
            reached = self.never_runs.reached(info)
            return NEVER_RUNS + reached
        found = self.never_detail.get(sid)
        if found is None:
            found = self.never_detail[sid] = self._filter_detail(job)
        return found

    def _filter_detail(self, job: PendingJob) -> str:
        spec = next(
            p.spec
            for p in job.pods
            if not any(
                self.state.room_when_empty(i, spec_res(p.spec))
                for i in self.state.candidate_nodes(p.spec)
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

    def _no_move_detail(self, job: PendingJob, info: JobInfo) -> str:
        """Why consolidation opened no node for the job (see `_try_consolidate`), on the
        cycle's final state; "" when it is not blocked by fragmentation there (later
        binds may have taken the GPUs that were scattered when it was looked at: its
        sentence then says too few are idle, and a refusal would contradict it)."""
        found = self.no_move_why.get((info.sid, job.member))
        if found is None:
            return ""
        why, model, taking = found
        sharing = self.terms
        if why == "spent":
            # Off by the policy: nothing to say, and nothing to work out.
            if sharing.max_consolidations_per_cycle <= 0 or not fragmented(self.state, job, model):
                return ""
            return spent_detail(sharing.max_consolidations_per_cycle)
        assert self.consolidator is not None  # it searched
        takeable = self.consolidator.takeable(job, model) if taking else 0
        if not fragmented(self.state, job, model, takeable):
            return ""
        refusal = self.consolidator.refusal(
            job, model, self.lendable(), self.snapshot.running, self.reclaim_limit, self._started()
        )
        return no_move_detail(
            refusal,
            job.gpus,
            sharing.min_runtime_seconds,
            sharing.max_consolidation_loss_seconds,
            self.reclaim_limit,
        )

    def _started(self) -> dict[int, int]:
        """Node -> GPUs the cycle bound there (for a refusal: pods it cannot move yet)."""
        if self._started_gpus is None:
            out: dict[int, int] = {}
            index, info = self.state.index, self._info
            for bind in self.out.binds:
                i = index[bind.node]
                for pod in info[bind.job_id].job.pods:
                    if pod.uid == bind.pod_uid:
                        out[i] = out.get(i, 0) + pod.spec.gpus
            self._started_gpus = out
        return self._started_gpus

    def _explanations(self) -> dict[str, str]:
        out: dict[str, str] = {}
        details: dict[tuple[object, ...], str] = {}
        sentences: dict[tuple[object, ...], str] = {}
        refusals: dict[tuple[int, str], str] = {}
        waiting, info_of, model_of = self.out.waiting, self._info, self.position_model_of
        # What owners at their lendingLimit hide differs by member (its own are not).
        lendable = self.lendable() if self.lenders else None
        resuming: dict[str, list[tuple[tuple[int, float, str], int, dict[str, int]]]] | None
        resuming = None
        for job_id in sorted(waiting):
            job, why = waiting[job_id]
            if why.kind == "kept":
                why = self._kept_wait(job, why)
            if why.kind == "incomplete":
                out[job_id] = sentence(job, why, None, 0, 0.0, "")
                continue
            info = info_of[job_id]
            model = model_of(info)
            shape = (info.sid, model, job.is_gang, len(job.pods), info.gpus)
            key = (job.member, why, shape, job_id in self.promised_jobs)
            text = sentences.get(key)
            if text is None:
                allocated, fair = self.position_of(job.member, model)
                seen = (shape, job.member) if lendable else shape
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
                if why.kind == "capacity":
                    # Not for a job kept off some nodes ("limit"): the GPUs it may not
                    # use are what it waits for, and its sentence says so.
                    # One per shape and member: the sentences differ by what reclaim
                    # said, the refusal does not.
                    refused = refusals.get((info.sid, job.member))
                    if refused is None:
                        refused = refusals[info.sid, job.member] = self._no_move_detail(job, info)
                    if refused:
                        text += f"; {refused}"
                sentences[key] = text
            if why.kind == "capacity" and info.gpus >= 2 and self.overtaken_after < 0:
                if resuming is None:
                    resuming = resuming_jobs(
                        self.snapshot.running, self.book.node_of, self.checkpointable
                    )
                text += overtook_hint(job, info.gpus, model, resuming)
            out[job_id] = text
        return out


def resuming_jobs(
    running: tuple[RunningPod, ...],
    node_of: Mapping[str, tuple[str, str | None]],
    checkpointable: frozenset[str],
) -> dict[str, list[tuple[tuple[int, float, str], int, dict[str, int]]]]:
    """Per member, its running jobs that resume where they stop and that reclaim could
    take (scheduled by fairpool, not terminating): (place in the member's queue, GPUs,
    GPUs per model), for `overtook_hint`."""
    jobs: dict[str, tuple[str, tuple[int, float, str], dict[str, int]]] = {}
    for pod in running:
        member = pod.member
        where = node_of.get(pod.node)
        if (
            member is None
            or where is None
            or pod.terminating
            or not pod.scheduled_by_fairpool
            or not pod.resumes(checkpointable)
        ):
            continue
        found = jobs.get(pod.job_id)
        if found is None:
            found = jobs[pod.job_id] = (member, (-pod.priority, pod.submitted_at, pod.job_id), {})
        by_model = found[2]
        by_model[where[0]] = by_model.get(where[0], 0) + pod.spec.gpus
    out: dict[str, list[tuple[tuple[int, float, str], int, dict[str, int]]]] = {}
    for member, place, by_model in jobs.values():
        out.setdefault(member, []).append((place, sum(by_model.values()), by_model))
    return out


def overtook_hint(
    job: PendingJob,
    gpus: int,
    model: str | None,
    resuming: Mapping[str, list[tuple[tuple[int, float, str], int, dict[str, int]]]],
) -> str:
    """For a job of 2 or more GPUs waiting for capacity while
    `reclaim_overtaken_after_seconds` is unset: when its member's own later, smaller jobs
    that resume hold at least its GPUs of its model, a clause saying so and naming the
    setting that would let it take them back ("" otherwise). That part of what keeps it
    waiting is its member's own, which no reclaim of other members' work takes back."""
    if model is None:
        return ""
    place = (-job.priority, job.submitted_at, job.job_id)
    held = sum(
        by_model.get(model, 0)
        for later, total, by_model in resuming.get(job.member, ())
        if later > place and total < gpus
    )
    return overtook_clause(held, model) if held >= gpus else ""


def wanted_nodes(
    book: shares_mod.ShareBook, usage_history: Mapping[str, float], terms: PolicyTerms
) -> frozenset[MemberModel]:
    """(owner, GPU model) pairs whose owner is likely to want its nodes back: its demand
    on the model (held plus pending) reaches `WANTS_BACK` of its entitlement there, or
    its recent mean allocation does of its whole entitlement. The recent mean comes from
    the usage history: a member holding G GPUs for long has a history of
    G * half-life / ln 2 GPU-seconds."""
    half_life = terms.usage_half_life_hours
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
