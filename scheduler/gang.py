"""Planning a whole job (a gang, or one pod when reclaim needs a what-if) onto nodes.

A gang is all-or-nothing: `plan_job` returns a node for every pod or nothing, and the
engine binds the whole plan in the same cycle. Choices, in order:

1. One GPU model: a gang never mixes models (distributed training runs at the pace of
   the slowest GPU). A job naming no model tries every model.
2. One topology domain (`Node.topology_domain`; nodes without one form a single unnamed
   domain) whenever some domain can hold the whole gang; among those the plan with the
   fewest nodes, then the best tiers (see `placement`), then the domain name. Only when no
   single domain can hold it may the gang span domains, again with the fewest nodes.
3. Within the chosen set, pods go greedily: if one node can hold all remaining pods of a
   shape, the tightest such node (bin-packing, then tier); otherwise the node that holds
   the most of them. Nodes the gang already uses come first. For identical pods this
   gives the fewest nodes.

The plan is computed without touching the state; `extra` adds capacity that would be
there if some pods were gone (reclaim's what-if).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scheduler.placement import ClusterState, Res, spec_res
from scheduler.snapshot import PendingPod, PodSpec


@dataclass(frozen=True, slots=True)
class Plan:
    pods: tuple[tuple[str, int], ...]
    """(pod uid, node index), in the job's pod order."""
    nodes: int
    spans_domains: bool
    tier_sum: int


def _groups(pods: Sequence[PendingPod]) -> list[tuple[PodSpec, list[str]]]:
    by_shape: dict[object, tuple[PodSpec, list[str]]] = {}
    for pod in pods:
        s = pod.spec
        key = (
            s.gpus,
            s.cpu_milli,
            s.memory_bytes,
            s.gpu_model,
            tuple(sorted(s.node_selector.items())),
            s.affinity,
            s.tolerations,
        )
        if key not in by_shape:
            by_shape[key] = (s, [])
        by_shape[key][1].append(pod.uid)
    return sorted(
        by_shape.values(),
        key=lambda g: (-g[0].gpus, -g[0].cpu_milli, -g[0].memory_bytes, g[1][0]),
    )


def _greedy(
    state: ClusterState,
    groups: list[tuple[PodSpec, list[str], list[int]]],
    member: str,
    lendable: Mapping[str, int] | None,
    extra: Mapping[int, Res] | None,
) -> tuple[dict[str, int], int] | None:
    used: dict[int, list[int]] = {}
    headroom = dict(lendable) if lendable else {}
    where: dict[str, int] = {}
    tier_sum = 0
    for spec, uids, cands in groups:
        res = spec_res(spec)
        g = res[0]
        remaining = len(uids)
        pos = 0
        while remaining > 0:
            best_all: tuple[int, ...] | None = None
            best_max: tuple[int, ...] | None = None
            for i in cands:
                e = extra.get(i) if extra else None
                u = used.get(i)
                free = [state.free_gpu[i], state.free_cpu[i], state.free_mem[i], state.free_pods[i]]
                if e is not None:
                    for k in range(4):
                        free[k] += e[k]
                if u is not None:
                    for k in range(4):
                        free[k] -= u[k]
                cap = free[3]
                for k in range(3):
                    if res[k] > 0:
                        cap = min(cap, free[k] // res[k])
                if cap <= 0:
                    continue
                owner = state.nodes[i].owner
                if g > 0 and owner is not None and owner != member and owner in headroom:
                    cap = min(cap, headroom[owner] // g)
                    if cap <= 0:
                        continue
                fresh = 0 if u is not None else 1
                tier = state.node_tier(i, member)
                pen = state.penalty(state.node_class[i], spec)
                if cap >= remaining:
                    key = (fresh, tier, pen, free[0] - g * remaining, i)
                    if best_all is None or key < best_all:
                        best_all = key
                elif best_all is None:
                    key = (fresh, -cap, tier, pen, i)
                    if best_max is None or key < best_max:
                        best_max = key
            if best_all is not None:
                i, n, tier = best_all[-1], remaining, best_all[1]
            elif best_max is not None:
                i, n, tier = best_max[-1], -best_max[1], best_max[2]
            else:
                return None
            u = used.setdefault(i, [0, 0, 0, 0])
            for k in range(4):
                u[k] += res[k] * n
            owner = state.nodes[i].owner
            if g > 0 and owner is not None and owner != member and owner in headroom:
                headroom[owner] -= g * n
            for uid in uids[pos : pos + n]:
                where[uid] = i
            tier_sum += tier * n
            pos += n
            remaining -= n
    return where, tier_sum


def plan_job(
    state: ClusterState,
    pods: Sequence[PendingPod],
    member: str,
    lendable: Mapping[str, int] | None = None,
    extra: Mapping[int, Res] | None = None,
    models: frozenset[str] | None = None,
) -> Plan | None:
    """A placement for every pod of the job, or None. `lendable`: owner -> GPUs it may
    still lend; `models`: GPU models the job may use (None = any)."""
    if not pods:
        return None
    groups = _groups(pods)
    uses_gpus = any(spec.gpus > 0 for spec, _ in groups)
    cand_lists: list[list[int]] = []
    for spec, _ in groups:
        res = spec_res(spec)
        cand_lists.append([i for i in state.candidate_nodes(spec) if state.fits(i, res, extra)])
    partitions: dict[str, set[int]] = {}
    for cands in cand_lists:
        for i in cands:
            model = (state.nodes[i].gpu_model or "") if uses_gpus else ""
            if models is not None and uses_gpus and model not in models:
                continue
            partitions.setdefault(model, set()).add(i)
    gang = len(pods) > 1
    best: tuple[tuple[object, ...], Plan] | None = None
    for model in sorted(partitions):
        allowed = partitions[model]
        options: list[tuple[tuple[object, ...], Plan]] = []
        if gang:
            domains = sorted({state.domain[i] for i in allowed})
            for domain in domains:
                subset = {i for i in allowed if state.domain[i] == domain}
                plan = _try(state, groups, cand_lists, subset, member, lendable, extra, pods)
                if plan is not None:
                    options.append(((0, plan.nodes, plan.tier_sum, model, domain), plan))
            if not options and len(domains) > 1:
                plan = _try(state, groups, cand_lists, allowed, member, lendable, extra, pods)
                if plan is not None:
                    options.append(((1, plan.nodes, plan.tier_sum, model, ""), plan))
        else:
            plan = _try(state, groups, cand_lists, allowed, member, lendable, extra, pods)
            if plan is not None:
                options.append(((0, plan.nodes, plan.tier_sum, model, ""), plan))
        for option in options:
            if best is None or option[0] < best[0]:
                best = option
    return None if best is None else best[1]


def _try(
    state: ClusterState,
    groups: list[tuple[PodSpec, list[str]]],
    cand_lists: list[list[int]],
    subset: set[int],
    member: str,
    lendable: Mapping[str, int] | None,
    extra: Mapping[int, Res] | None,
    pods: Sequence[PendingPod],
) -> Plan | None:
    work = [
        (spec, uids, [i for i in cands if i in subset])
        for (spec, uids), cands in zip(groups, cand_lists, strict=True)
    ]
    if any(not c for _, _, c in work):
        return None
    out = _greedy(state, work, member, lendable, extra)
    if out is None:
        return None
    where, tier_sum = out
    used = set(where.values())
    domains = {state.domain[i] for i in used}
    return Plan(
        pods=tuple((p.uid, where[p.uid]) for p in pods),
        nodes=len(used),
        spans_domains=len(domains) > 1,
        tier_sum=tier_sum,
    )
