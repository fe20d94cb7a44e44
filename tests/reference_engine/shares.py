"""Every member's position per GPU model: contribution, entitlement, allocation, demand and
fair share. `tests.reference_engine.compute_shares` is the public entry point.

Demand per (member, model) = allocated GPUs + GPUs of its pending jobs for that model,
but for the jobs that can never run (the cycle tells which).
A pending job that names no GPU model can run on any model; its demand counts against
exactly one model, chosen greedily in job order (member, priority, submission, job id):
the model with the most GPUs still free after the demand already counted there (ties by
model name). That keeps the total demand honest (a job is never counted twice) and puts
it where it is most likely to run.

Limits turned into water-filling caps, per model:
- `max_gpus`: the member's cap on a model is `max_gpus` minus what it holds on the others.
- borrowing off (`sharing.borrowing: false`): the cap is the entitlement, so a member's
  fair share never exceeds it.
- `lending_limit`: at most that many of an owner's idle GPUs (contribution beyond its own
  demand, over all models, split proportionally between models) can be lent, so the
  rest is withheld from the capacity being divided.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scheduler.engine.decisions import MemberShare
from scheduler.engine.snapshot import Node, PendingJob, Snapshot
from tests.reference_engine.allocation import Allocation, classify
from tests.reference_engine.entitlement import (
    MemberModel,
    capacity,
    contributions,
    entitlements,
    node_model,
)
from tests.reference_engine.fairshare import water_fill

if TYPE_CHECKING:
    from policies.model import Policy


@dataclass(slots=True)
class ShareBook:
    models: list[str]
    members: list[str]
    capacity: dict[str, int]
    contribution: dict[MemberModel, int]
    entitlement: dict[MemberModel, int]
    allocation: Allocation
    pending: dict[MemberModel, int]
    fair: dict[MemberModel, float]
    job_model: dict[str, str | None]
    """job id -> the model its demand counts against (None: it asks for no GPU)."""

    def demand(self, key: MemberModel) -> int:
        return self.allocation.allocated.get(key, 0) + self.pending.get(key, 0)

    def shares(self) -> tuple[MemberShare, ...]:
        out: list[MemberShare] = []
        for member in self.members:
            for model in self.models:
                key = (member, model)
                row = MemberShare(
                    member=member,
                    gpu_model=model,
                    contribution=self.contribution.get(key, 0),
                    entitlement=self.entitlement.get(key, 0),
                    fair_share=round(self.fair.get(key, 0.0), 9),
                    allocated=self.allocation.allocated.get(key, 0),
                    borrowed=self.allocation.borrowed.get(key, 0),
                    reclaimable=self.allocation.reclaimable.get(key, 0),
                    lent=self.allocation.lent.get(key, 0),
                    pending=self.pending.get(key, 0),
                    demand=self.demand(key),
                )
                if row.contribution or row.entitlement or row.allocated or row.demand:
                    out.append(row)
        return tuple(out)


def job_sort_key(job: PendingJob) -> tuple[int, float, str]:
    """Within a member: higher priority first, then earlier submission, then job id."""
    return (-job.priority, job.submitted_at, job.job_id)


def job_gpu_model(job: PendingJob) -> str | None:
    for pod in job.pods:
        if pod.spec.gpu_model is not None:
            return pod.spec.gpu_model
    return None


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


def build(
    snapshot: Snapshot,
    policy: Policy,
    never_runs: Callable[[PendingJob], bool],
    reachable: Callable[[PendingJob], list[str]],
) -> ShareBook:
    """`never_runs`: which pending jobs can never run (the cycle knows), left out of
    demand; `reachable`: the GPU models a job's pods are admitted to (the cycle knows)."""
    static = _static(snapshot.nodes, policy)
    alloc = classify(snapshot.running, static.node_of, static.entitlement)
    pending, job_model = _pending_demand(snapshot, static, alloc, never_runs, reachable)
    members = sorted(
        set(policy.member_names())
        | {j.member for j in snapshot.pending}
        | {p.member for p in snapshot.running if p.member is not None}
    )
    book = ShareBook(
        models=static.models,
        members=members,
        capacity=static.capacity,
        contribution=static.contribution,
        entitlement=static.entitlement,
        allocation=alloc,
        pending=pending,
        fair={},
        job_model=job_model,
    )
    book.fair = _fair_shares(book, snapshot, policy)
    return book


def _pending_demand(
    snapshot: Snapshot,
    static: _Static,
    alloc: Allocation,
    never_runs: Callable[[PendingJob], bool],
    reachable: Callable[[PendingJob], list[str]],
) -> tuple[dict[MemberModel, int], dict[str, str | None]]:
    """GPUs pending per (member, model), and the model each pending job counts against:
    its own, else, of the models its pods are admitted to (all when none is), the model
    with the most GPUs still free (see the module docstring)."""
    models = static.models
    used = alloc.used
    free = {m: static.capacity.get(m, 0) - used.get(m, 0) for m in models}
    pending: dict[MemberModel, int] = {}
    job_model: dict[str, str | None] = {}
    only = models[0] if len(models) == 1 else None
    ordered = sorted(
        snapshot.pending, key=lambda j: (j.member, -j.priority, j.submitted_at, j.job_id)
    )
    for job in ordered:
        gpus = job.gpus
        model = job_gpu_model(job)
        if gpus <= 0:
            job_model[job.job_id] = model
            continue
        if model is None and models:
            options = [m for m in reachable(job) if m in free] or models
            model = only or min(options, key=lambda m: (-free[m], m))
        job_model[job.job_id] = model
        if model is None or never_runs(job):
            continue
        free[model] = free.get(model, 0) - gpus
        key = (job.member, model)
        pending[key] = pending.get(key, 0) + gpus
    return pending, job_model


def _fair_shares(book: ShareBook, snapshot: Snapshot, policy: Policy) -> dict[MemberModel, float]:
    """Each model's capacity, less what lending limits withhold, water-filled over the
    members by entitlement, demand, weight and (with a half-life) usage history."""
    members = book.members
    known = {m.name: m for m in policy.members}
    weight = {m: (known[m].weight if m in known else 1.0) for m in members}
    usage = dict(snapshot.usage_history) if policy.sharing.usage_half_life_hours else None
    if usage is not None:
        usage = {m: usage.get(m, 0.0) for m in members}
    withheld = _withheld(book, policy)
    fair: dict[MemberModel, float] = {}
    for model in book.models:
        ent_m = {m: float(book.entitlement.get((m, model), 0)) for m in members}
        dem_m = {m: float(book.demand((m, model))) for m in members}
        caps = _caps(book, policy, model, ent_m)
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


def _withheld(book: ShareBook, policy: Policy) -> dict[str, float]:
    """Per model, the part of owners' idle contribution their lending limits keep back."""
    withheld: dict[str, float] = {}
    for member in policy.members:
        if member.lending_limit is None:
            continue
        idle = {}
        for model in book.models:
            key = (member.name, model)
            idle[model] = max(0, book.contribution.get(key, 0) - book.demand(key))
        total_idle = sum(idle.values())
        if total_idle > member.lending_limit:
            for model in book.models:
                lendable = member.lending_limit * idle[model] / total_idle
                withheld[model] = withheld.get(model, 0.0) + idle[model] - lendable
    return withheld


def _caps(book: ShareBook, policy: Policy, model: str, ent_m: dict[str, float]) -> dict[str, float]:
    """Water-filling caps on one model: `max_gpus` less what the member holds on the
    other models, and the entitlement when borrowing is off."""
    known = {m.name: m for m in policy.members}
    allocated = book.allocation.allocated
    caps: dict[str, float] = {}
    for m in book.members:
        limit = float("inf")
        spec = known.get(m)
        if spec is not None and spec.max_gpus is not None:
            others = sum(allocated.get((m, o), 0) for o in book.models if o != model)
            limit = max(0.0, float(spec.max_gpus - others))
        if not policy.sharing.borrowing:
            limit = min(limit, ent_m[m])
        if limit != float("inf"):
            caps[m] = limit
    return caps
