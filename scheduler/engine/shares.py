"""Every member's position per GPU model: contribution, entitlement, allocation, demand and
fair share. `scheduler.engine.compute_shares` is the public entry point.

Demand per (member, model) = allocated GPUs + GPUs of its pending jobs for that model.
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
from scheduler.engine.snapshot import Node, PendingJob, Snapshot

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


def build(snapshot: Snapshot, policy: Policy) -> ShareBook:
    static = _static(snapshot.nodes, policy)
    cap = static.capacity
    contrib = static.contribution
    ent = static.entitlement
    alloc = classify(snapshot.running, static.node_of, ent)
    models = static.models
    used = alloc.used
    free = {m: cap.get(m, 0) - used.get(m, 0) for m in models}

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
            model = only or min(models, key=lambda m: (-free[m], m))
        job_model[job.job_id] = model
        if model is None:
            continue
        free[model] = free.get(model, 0) - gpus
        key = (job.member, model)
        pending[key] = pending.get(key, 0) + gpus

    members = sorted(
        set(policy.member_names())
        | {j.member for j in snapshot.pending}
        | {p.member for p in snapshot.running if p.member is not None}
    )
    known = {m.name: m for m in policy.members}
    weight = {m: (known[m].weight if m in known else 1.0) for m in members}
    usage = dict(snapshot.usage_history) if policy.sharing.usage_half_life_hours else None
    if usage is not None:
        usage = {m: usage.get(m, 0.0) for m in members}

    # Lending limits: the part of an owner's idle contribution it may not lend is withheld.
    withheld: dict[str, float] = {}
    for member in policy.members:
        if member.lending_limit is None:
            continue
        idle = {}
        for model in models:
            key = (member.name, model)
            c = contrib.get(key, 0)
            demand = alloc.allocated.get(key, 0) + pending.get(key, 0)
            idle[model] = max(0, c - demand)
        total_idle = sum(idle.values())
        if total_idle > member.lending_limit:
            for model in models:
                lendable = member.lending_limit * idle[model] / total_idle
                withheld[model] = withheld.get(model, 0.0) + idle[model] - lendable

    fair: dict[MemberModel, float] = {}
    for model in models:
        ent_m = {m: float(ent.get((m, model), 0)) for m in members}
        dem_m = {
            m: float(alloc.allocated.get((m, model), 0) + pending.get((m, model), 0))
            for m in members
        }
        caps: dict[str, float] = {}
        for m in members:
            limit = float("inf")
            spec = known.get(m)
            if spec is not None and spec.max_gpus is not None:
                others = sum(alloc.allocated.get((m, o), 0) for o in models if o != model)
                limit = max(0.0, float(spec.max_gpus - others))
            if not policy.sharing.borrowing:
                limit = min(limit, ent_m[m])
            if limit != float("inf"):
                caps[m] = limit
        shares = water_fill(
            cap.get(model, 0) - withheld.get(model, 0.0), ent_m, dem_m, weight, caps, usage
        )
        for m in members:
            fair[(m, model)] = shares.get(m, 0.0)

    return ShareBook(
        models=models,
        members=members,
        capacity=cap,
        contribution=contrib,
        entitlement=ent,
        allocation=alloc,
        pending=pending,
        fair=fair,
        job_model=job_model,
    )
