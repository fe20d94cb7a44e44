"""Every member's position per GPU model: contribution, entitlement, allocation, demand and
fair share. `scheduler.engine.compute_shares` is the public entry point.

Demand per (member, model) = allocated GPUs + GPUs of its pending jobs for that model,
leaving out the jobs that can never run as the cluster and policy stand (`runnable`):
they would raise their member's fair share by GPUs it can never use.

A pending job that names no GPU model can run on any model its pods are admitted to
(`NeverRuns.reachable_models`: its hostname, affinity and selectors may narrow them);
its demand counts against exactly one of those, chosen greedily in job order (member,
priority, submission, job id): the model with the most GPUs still free after the demand
already counted there (ties by model name). That keeps the total demand honest (a job
is never counted twice) and puts it where it is most likely to run. A job that can never
run is given its model (its position is measured there) but takes no free GPU from the
jobs after it.

Limits turned into water-filling caps, per model:
- `max_gpus`: the member's cap on a model is `max_gpus` minus what it holds on the others.
- borrowing off (`sharing.borrowing: false`): the cap is the entitlement, so a member's
  fair share never exceeds it.
- `lending_limit`: at most that many of an owner's idle GPUs (contribution beyond its own
  demand, over all models, split proportionally between models) can be lent, so the
  rest is withheld from the capacity being divided.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from scheduler.engine.allocation import Allocation, classify
from scheduler.engine.decisions import MemberShare
from scheduler.engine.entitlement import (
    MemberModel,
    capacity,
    contributions,
    entitlements,
    node_model,
)
from scheduler.engine.fairshare import water_fill
from scheduler.engine.jobinfo import (
    JobInfo,
    QueueChange,
    job_infos,
    queue_order,
    shapes_generation,
)
from scheduler.engine.placement import ClusterState
from scheduler.engine.runnable import NeverRuns
from scheduler.engine.snapshot import Node, PendingJob, RunningPod, Snapshot
from scheduler.engine.terms import PolicyTerms, terms_of

if TYPE_CHECKING:
    from policies.model import Policy


class ShareBook:
    """A plain class: see `scheduler.engine.jobinfo.JobInfo`."""

    __slots__ = (
        "allocation",
        "capacity",
        "contribution",
        "entitlement",
        "fair",
        "info",
        "infos",
        "job_model",
        "members",
        "models",
        "never_runs",
        "node_of",
        "only_model",
        "pending",
        "queued",
    )

    models: list[str]
    members: list[str]
    capacity: dict[str, int]
    contribution: dict[MemberModel, int]
    entitlement: dict[MemberModel, int]
    allocation: Allocation
    pending: dict[MemberModel, int]
    fair: dict[MemberModel, float]
    job_model: dict[str, str | None]
    """job id -> the model its demand counts against, when that is chosen per job (see
    `model_of`); empty otherwise."""
    infos: list[JobInfo]
    """What is known of each pending job, in the snapshot's order."""
    info: dict[str, JobInfo]
    """job id -> what is known of it (of a repeated id, the last job)."""
    queued: list[JobInfo]
    """The pending jobs (what is known of each) by member, then in each member's queue
    order (`job_sort_key`)."""
    node_of: dict[str, tuple[str, str | None]]
    """node name -> (GPU model, owner)."""
    only_model: str | None
    """The GPU model when there is exactly one."""
    never_runs: NeverRuns
    """Which pending jobs can never run (left out of `pending`)."""

    def __init__(
        self,
        models: list[str],
        members: list[str],
        capacity: dict[str, int],
        contribution: dict[MemberModel, int],
        entitlement: dict[MemberModel, int],
        allocation: Allocation,
        pending: dict[MemberModel, int],
        fair: dict[MemberModel, float],
        job_model: dict[str, str | None],
        infos: list[JobInfo],
        info: dict[str, JobInfo],
        queued: list[JobInfo],
        node_of: dict[str, tuple[str, str | None]],
        only_model: str | None,
        never_runs: NeverRuns,
    ) -> None:
        self.models = models
        self.members = members
        self.capacity = capacity
        self.contribution = contribution
        self.entitlement = entitlement
        self.allocation = allocation
        self.pending = pending
        self.fair = fair
        self.job_model = job_model
        self.infos = infos
        self.info = info
        self.queued = queued
        self.node_of = node_of
        self.only_model = only_model
        self.never_runs = never_runs

    def model_of(self, info: JobInfo) -> str | None:
        """The model the job's demand counts against (None: it asks for no GPU, or there
        is no model). With one model and distinct job ids that is the job's own model,
        else the only one: no table is needed."""
        if self.job_model:
            return self.job_model.get(info.job.job_id)
        model = info.explicit_model
        if model is not None or info.gpus <= 0:
            return model
        return self.only_model

    def demand(self, key: MemberModel) -> int:
        return self.allocation.allocated.get(key, 0) + self.pending.get(key, 0)

    def shares(self) -> tuple[MemberShare, ...]:
        """One row per member and model it contributes to, is entitled to, holds or
        wants. Built positionally and only for kept rows: compiled, a keyword call goes
        through Python's call protocol, and a cycle lists every member and model."""
        out: list[MemberShare] = []
        allocation = self.allocation
        for member in self.members:
            for model in self.models:
                key = (member, model)
                contribution = self.contribution.get(key, 0)
                entitlement = self.entitlement.get(key, 0)
                allocated = allocation.allocated.get(key, 0)
                pending = self.pending.get(key, 0)
                demand = allocated + pending
                if not (contribution or entitlement or allocated or demand):
                    continue
                fair = self.fair.get(key, 0.0)
                if fair != int(fair):
                    # A whole number rounds to itself; `round` is a call into Python.
                    fair = round(fair, 9)
                out.append(
                    MemberShare(
                        member,
                        model,
                        contribution,
                        entitlement,
                        fair,
                        allocated,
                        allocation.borrowed.get(key, 0),
                        allocation.reclaimable.get(key, 0),
                        allocation.lent.get(key, 0),
                        pending,
                        demand,
                    )
                )
        return tuple(out)


def job_sort_key(job: PendingJob) -> tuple[int, float, str]:
    """Within a member: higher priority first, then earlier submission, then job id."""
    return (-job.priority, job.submitted_at, job.job_id)


@dataclass(frozen=True, slots=True)
class _Static:
    node_of: dict[str, tuple[str, str | None]]
    capacity: dict[str, int]
    contribution: dict[MemberModel, int]
    entitlement: dict[MemberModel, int]
    models: list[str]


_STATIC: list[tuple[tuple[Node, ...], Policy, _Static]] = []
"""The last two (nodes tuple, policy) seen and what only depends on them; the entries
keep both alive, so the identity check cannot be fooled by a recycled id."""


def _static(nodes: tuple[Node, ...], policy: Policy) -> _Static:
    for seen_nodes, seen_policy, found in list(_STATIC):
        if seen_nodes is nodes and seen_policy is policy:
            return found
    cap = capacity(nodes)
    ent = entitlements(nodes, policy)
    found = _Static(
        node_of={n.name: (node_model(n), n.owner) for n in nodes},
        capacity=cap,
        contribution=contributions(nodes, policy),
        entitlement=ent,
        models=sorted(set(cap) | {m for _, m in ent}),
    )
    _STATIC[:] = [(nodes, policy, found), *_STATIC[:1]]
    return found


class _Queue:
    """What the share book derives from the pending jobs alone. A plain class: see
    `scheduler.engine.jobinfo.JobInfo`."""

    __slots__ = ("change", "distinct", "in_order", "info", "infos", "members", "queued")

    def __init__(self, infos: list[JobInfo]) -> None:
        self.infos = infos
        self.info = {i.job.job_id: i for i in infos}
        self.distinct = len(self.info) == len(infos)
        self.in_order, self.change = queue_order(infos, self.distinct)
        # The cycle knows a queued job by its id: of a repeated id, by the last job's.
        self.queued = (
            self.in_order
            if self.distinct
            else [self.info[i.job.job_id].for_job(i.job) for i in self.in_order]
        )
        self.members = {i.job.member for i in infos}


class _Demand:
    """Pending GPUs per (member, model), each job's model, and the members, from one
    queue, allocation and policy (`_pending_demand`). A plain class, as `_Queue`."""

    __slots__ = (
        "alloc",
        "floating",
        "generation",
        "job_model",
        "members",
        "moved",
        "never_jobs",
        "never_runs",
        "pending",
        "policy",
        "queue",
        "static",
    )

    def __init__(
        self,
        queue: _Queue,
        static: _Static,
        alloc: Allocation,
        policy: Policy,
        running: tuple[RunningPod, ...],
        never_runs: NeverRuns,
        moved: tuple[_Demand, QueueChange] | None = None,
    ) -> None:
        """`moved`: a demand of the same static part, policy and shape numbers, and how
        `queue` differs from its queue: its tables are moved by the jobs added and
        removed, unless a job's model depends on what is free (`_moved_demand`)."""
        self.queue, self.static, self.alloc, self.policy = queue, static, alloc, policy
        self.generation = shapes_generation()
        # Its answers depend only on the nodes, the policy and the shape numbers, as
        # `static` does.
        self.never_runs = never_runs
        tables = None
        if moved is not None:
            tables = _moved_demand(moved[0], moved[1], static.models, never_runs)
        self.moved = tables is not None
        """The tables were moved from the last demand's (for tests)."""
        if tables is None:
            tables = _pending_demand(queue.in_order, static, alloc, not queue.distinct, never_runs)
        self.pending, self.job_model, self.floating, self.never_jobs = tables
        # Asked about every pending job (or moved from the counts of a demand that was):
        # `found` is whether one of them can never run, as the cycle needs it.
        never_runs.found = self.never_jobs > 0
        self.members = sorted(
            set(terms_of(policy).member_names)
            | queue.members
            | {p.member for p in running if p.member is not None}
        )


_LAST_QUEUE: list[_Queue] = []
_LAST_DEMAND: list[_Demand] = []
"""The last ones made. The same pending jobs give `job_infos`' same list, and the same
running pods `classify`'s same allocation: a cycle after a wake-up or a completion that
queued nothing reuses them (about a third of a busy replay's cycles). Only their sources'
identities are compared, and the entries hold those sources, so a recycled id cannot
fool the check; nothing changes them once made."""


def _queue(pending: tuple[PendingJob, ...]) -> _Queue:
    infos = job_infos(pending)
    if _LAST_QUEUE and _LAST_QUEUE[0].infos is infos:
        return _LAST_QUEUE[0]
    queue = _Queue(infos)
    _LAST_QUEUE[:] = [queue]
    return queue


def _demand(
    queue: _Queue,
    static: _Static,
    alloc: Allocation,
    policy: Policy,
    snapshot: Snapshot,
    state: ClusterState | None,
) -> _Demand:
    last = _LAST_DEMAND[0] if _LAST_DEMAND else None
    if last is not None and (
        last.static is not static
        or last.policy is not policy
        or last.generation != shapes_generation()
    ):
        last = None
    if last is not None and last.queue is queue and last.alloc is alloc:
        return last
    change: QueueChange | None = None
    if last is not None:
        never_runs = NeverRuns(
            last.never_runs.state, policy, static.entitlement, static.models, last.never_runs
        )
        if queue.distinct and last.queue.distinct:
            if last.queue is queue:
                change = QueueChange(queue.in_order, [], [])  # only the running pods changed
            elif queue.change is not None and queue.change.base is last.queue.in_order:
                change = queue.change
    else:
        if state is None:
            state = ClusterState(snapshot)
        never_runs = NeverRuns(state, policy, static.entitlement, static.models)
    moved = None if last is None or change is None else (last, change)
    demand = _Demand(queue, static, alloc, policy, snapshot.running, never_runs, moved)
    _LAST_DEMAND[:] = [demand]
    return demand


def build(snapshot: Snapshot, policy: Policy, state: ClusterState | None = None) -> ShareBook:
    """`state`: the snapshot's cluster state, when the caller has it (the cycle); it tells
    which jobs can never run."""
    static = _static(snapshot.nodes, policy)
    alloc = classify(snapshot.running, static.node_of, static.entitlement)
    queue = _queue(snapshot.pending)
    demand = _demand(queue, static, alloc, policy, snapshot, state)
    book = ShareBook(
        models=static.models,
        members=demand.members,
        capacity=static.capacity,
        contribution=static.contribution,
        entitlement=static.entitlement,
        allocation=alloc,
        pending=demand.pending,
        fair={},
        job_model=demand.job_model,
        infos=queue.infos,
        info=queue.info,
        queued=queue.queued,
        node_of=static.node_of,
        only_model=static.models[0] if len(static.models) == 1 else None,
        never_runs=demand.never_runs,
    )
    book.fair = _fair_shares(book, snapshot, terms_of(policy))
    return book


_Tables = tuple[dict[MemberModel, int], dict[str, str | None], int, int]
"""`_Demand`'s pending GPUs, models per job, jobs whose model depends on what is free
(asking GPUs, naming no model), and jobs that can never run."""


def _pending_demand(
    in_order: list[JobInfo],
    static: _Static,
    alloc: Allocation,
    repeated: bool,
    never_runs: NeverRuns,
) -> _Tables:
    """GPUs pending per (member, model), and the model each pending job counts against:
    its own, else the model with the most GPUs still free (see the module docstring). A
    job that can never run gets its model but adds nothing.
    `in_order`: the jobs' information in queue order (member, priority, submission, job
    id). The models per job id come back only when there is a choice of models or a
    job id is `repeated` (the last job of an id in queue order decides); else
    `ShareBook.model_of` finds them without a table."""
    models = static.models
    used = alloc.used
    free = {m: static.capacity.get(m, 0) - used.get(m, 0) for m in models}
    pending: dict[MemberModel, int] = {}
    job_model: dict[str, str | None] = {}
    per_job = repeated or len(models) > 1
    only = models[0] if len(models) == 1 else None
    floating = never_jobs = 0
    for info in in_order:
        job = info.job
        gpus = info.gpus
        model = info.explicit_model
        if gpus <= 0:
            if per_job:
                job_model[job.job_id] = model
            continue
        # Asked of every job that asks for GPUs (`NeverRuns.found`).
        never = never_runs.asked(info)
        if model is None:
            floating += 1
            if only is not None:
                model = only
            elif models:
                # Among the models its pods may go to: counted on another, a job pinned
                # to its owner's node by hostname would reclaim where it cannot run.
                options = [m for m in never_runs.reachable_models(info) if m in free] or models
                model = min(options, key=lambda m: (-free[m], m))
        if per_job:
            job_model[job.job_id] = model
        if never:
            never_jobs += 1
        if model is None or never:
            continue
        free[model] = free.get(model, 0) - gpus
        key = (job.member, model)
        pending[key] = pending.get(key, 0) + gpus
    return pending, job_model, floating, never_jobs


def _moved_demand(
    last: _Demand, change: QueueChange, models: list[str], never_runs: NeverRuns
) -> _Tables | None:
    """`_pending_demand` of `last`'s queue with `change` applied, from `last`'s tables
    (both queues without a repeated job id), asking `never_runs` (which shares `last`'s
    answers); None when a pending job's model would be chosen by what is free (it names
    none and there are several models: the free GPUs move with the running pods and
    with every job before it), or when most of `last`'s jobs left (working it out anew
    is then less work). A job's own model, its GPUs and whether it can never run are all
    it adds: the sums move by the jobs added and removed, as `allocation` moves its sums
    by the pods."""
    added, removed = change.added, change.removed
    if 2 * len(removed) > len(change.base):
        return None  # more work than working the new queue out anew
    only = models[0] if len(models) == 1 else None
    floating = last.floating
    for info in removed:
        if info.gpus > 0 and info.explicit_model is None:
            floating -= 1
    for info in added:
        if info.gpus > 0 and info.explicit_model is None:
            floating += 1
    if floating and only is None and models:
        return None
    per_job = len(models) > 1
    pending = dict(last.pending)
    job_model = dict(last.job_model) if per_job and (added or removed) else last.job_model
    never_jobs = last.never_jobs
    for sign, infos in ((-1, removed), (1, added)):
        for info in infos:
            job = info.job
            if per_job:
                if sign < 0:
                    model = job_model.pop(job.job_id)
                else:
                    # Every job added that asks GPUs names its model (`floating` is 0).
                    model = job_model[job.job_id] = info.explicit_model
            else:
                model = info.explicit_model if info.explicit_model is not None else only
            if info.gpus <= 0:
                continue
            if never_runs.asked(info):
                never_jobs += sign
                continue
            if model is None:
                continue
            key = (job.member, model)
            left = pending.get(key, 0) + sign * info.gpus
            if left:
                pending[key] = left
            else:
                del pending[key]
    return pending, job_model, floating, never_jobs


def _fair_shares(
    book: ShareBook, snapshot: Snapshot, terms: PolicyTerms
) -> dict[MemberModel, float]:
    """Each model's capacity, less what lending limits withhold, water-filled over the
    members by entitlement, demand, weight and (with a half-life) usage history."""
    members = book.members
    known = terms.weight
    weight = {m: known.get(m, 1.0) for m in members}
    usage: dict[str, float] | None = None
    if terms.usage_half_life_hours:
        history = snapshot.usage_history
        usage = {m: history.get(m, 0.0) for m in members}
    withheld = _withheld(book, terms)
    fair: dict[MemberModel, float] = {}
    for model in book.models:
        ent_m = {m: float(book.entitlement.get((m, model), 0)) for m in members}
        dem_m = {m: float(book.demand((m, model))) for m in members}
        caps = _caps(book, terms, model, ent_m)
        shares = water_fill(
            book.capacity.get(model, 0) - withheld.get(model, 0.0),
            ent_m,
            dem_m,
            weight,
            caps,
            usage,
        )
        for m in members:
            fair[(m, model)] = shares.get(m, 0.0)
    return fair


def _withheld(book: ShareBook, terms: PolicyTerms) -> dict[str, float]:
    """Per model, the part of owners' idle contribution their lending limits keep back."""
    withheld: dict[str, float] = {}
    for name, limit in terms.lending_limit.items():
        idle = {}
        for model in book.models:
            key = (name, model)
            idle[model] = max(0, book.contribution.get(key, 0) - book.demand(key))
        total_idle = sum(idle.values())
        if total_idle > limit:
            for model in book.models:
                lendable = limit * idle[model] / total_idle
                withheld[model] = withheld.get(model, 0.0) + idle[model] - lendable
    return withheld


def _caps(
    book: ShareBook, terms: PolicyTerms, model: str, ent_m: dict[str, float]
) -> dict[str, float]:
    """Water-filling caps on one model: `max_gpus` less what the member holds on the
    other models, and the entitlement when borrowing is off."""
    allocated = book.allocation.allocated
    max_gpus = terms.max_gpus
    caps: dict[str, float] = {}
    for m in book.members:
        limit = float("inf")
        spec_max = max_gpus.get(m)
        if spec_max is not None:
            others = 0
            for o in book.models:
                if o != model:
                    others += allocated.get((m, o), 0)
            limit = max(0.0, float(spec_max - others))
        if not terms.borrowing:
            limit = min(limit, ent_m[m])
        if limit != float("inf"):
            caps[m] = limit
    return caps
