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

from scheduler.engine.placement import ClusterState, Res, spec_res
from scheduler.engine.snapshot import PendingPod, PodSpec


@dataclass(init=False, unsafe_hash=True, slots=True)
class Plan:
    """Its own `__init__`: see `scheduler.engine.decisions.MemberShare`."""

    pods: tuple[tuple[str, int], ...]
    """(pod uid, node index), in the job's pod order."""
    nodes: int
    spans_domains: bool
    tier_sum: int

    def __init__(
        self,
        pods: tuple[tuple[str, int], ...],
        nodes: int,
        spans_domains: bool,
        tier_sum: int,
    ) -> None:
        self.pods = pods
        self.nodes = nodes
        self.spans_domains = spans_domains
        self.tier_sum = tier_sum


_GROUPS: dict[int, tuple[tuple[PendingPod, ...], list[tuple[PodSpec, list[str]]]]] = {}
"""id(pods) -> (the pods, their groups), for a job's pods tuple: a gang that waits is
planned every cycle, and its pods never change. The entry holds the tuple, so a recycled
id cannot be mistaken for it; the table starts afresh past `_GROUPS_KEPT`."""
_GROUPS_KEPT = 50_000


def _groups(pods: Sequence[PendingPod]) -> list[tuple[PodSpec, list[str]]]:
    """The pods by shape, biggest first (never changed by the caller)."""
    if not isinstance(pods, tuple):
        return _group(pods)  # a list may change: not kept
    found = _GROUPS.get(id(pods))
    if found is not None and found[0] is pods:
        return found[1]
    groups = _group(pods)
    if len(_GROUPS) >= _GROUPS_KEPT:
        _GROUPS.clear()
    _GROUPS[id(pods)] = (pods, groups)
    return groups


def _group(pods: Sequence[PendingPod]) -> list[tuple[PodSpec, list[str]]]:
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


class _Slot:
    """A node that can hold at least one pod of the shape being placed. A plain class,
    not a dataclass: see `scheduler.engine.jobinfo.JobInfo`."""

    __slots__ = ("free_gpu", "fresh", "limited", "node", "pen", "room", "tier")

    room: int
    tier: int
    pen: int
    free_gpu: int
    node: int
    limited: str
    """The node's owner when its lending limit applies to this member, else ""."""
    fresh: bool
    """Not used by the gang yet."""

    def __init__(
        self,
        room: int,
        tier: int,
        pen: int,
        free_gpu: int,
        node: int,
        limited: str,
        fresh: bool,
    ) -> None:
        self.room = room
        self.tier = tier
        self.pen = pen
        self.free_gpu = free_gpu
        self.node = node
        self.limited = limited
        self.fresh = fresh


def _greedy(
    state: ClusterState,
    groups: list[tuple[PodSpec, list[str], list[int]]],
    member: str,
    lendable: Mapping[str, int] | None,
    extra: Mapping[int, Res] | None,
    cautious: bool,
) -> tuple[dict[str, int], int] | None:
    used: dict[int, list[int]] = {}
    headroom = dict(lendable) if lendable else {}
    where: dict[str, int] = {}
    tier_sum = 0
    for spec, uids, cands in groups:
        res = spec_res(spec)
        slots = _slots(state, spec, res, cands, member, headroom, used, extra, cautious)
        if sum(slot.room for slot in slots) < len(uids):
            return None
        tiers = _place_shape(slots, res, uids, headroom, used, where)
        if tiers is None:
            return None
        tier_sum += tiers
    return where, tier_sum


def _slots(
    state: ClusterState,
    spec: PodSpec,
    res: Res,
    cands: list[int],
    member: str,
    headroom: Mapping[str, int],
    used: Mapping[int, list[int]],
    extra: Mapping[int, Res] | None,
    cautious: bool,
) -> list[_Slot]:
    """The candidate nodes with room for at least one pod of the shape, counting what the
    gang already took there and what `extra` would free; `cautious` as in `plan_job`."""
    g = res[0]
    entries: list[_Slot] = []
    penalties: dict[int, int] = {}
    for i in cands:
        free = [state.free_gpu[i], state.free_cpu[i], state.free_mem[i], state.free_pods[i]]
        e = extra.get(i) if extra else None
        if e is not None:
            for k in range(4):
                free[k] += e[k]
        u = used.get(i)
        if u is not None:
            for k in range(4):
                free[k] -= u[k]
        room = free[3]
        for k in range(3):
            if res[k] > 0:
                room = min(room, free[k] // res[k])
        if room <= 0:
            continue
        cid = state.node_class[i]
        pen = penalties.get(cid)
        if pen is None:
            pen = penalties[cid] = state.penalty(cid, spec)
        owner = state.nodes[i].owner
        limited = owner if g > 0 and owner and owner != member and owner in headroom else ""
        tier = state.node_tier(i, member, cautious)
        entries.append(_Slot(room, tier, pen, free[0], i, limited, u is None))
    return entries


def _place_shape(
    slots: list[_Slot],
    res: Res,
    uids: list[str],
    headroom: dict[str, int],
    used: dict[int, list[int]],
    where: dict[str, int],
) -> int | None:
    """Every pod of one shape onto the slots (see the module docstring, step 3), taking
    the room they use; the sum of their tiers, or None when they do not all fit."""
    g = res[0]
    remaining = len(uids)
    tier_sum = 0
    pos = 0
    while remaining > 0:
        picked = _pick(slots, remaining, headroom, g)
        if picked is None:
            return None
        best_entry, n = picked
        i = best_entry.node
        best_entry.room -= n
        best_entry.free_gpu -= g * n
        best_entry.fresh = False
        u = used.setdefault(i, [0, 0, 0, 0])
        for k in range(4):
            u[k] += res[k] * n
        if best_entry.limited:
            headroom[best_entry.limited] -= g * n
        for uid in uids[pos : pos + n]:
            where[uid] = i
        tier_sum += best_entry.tier * n
        pos += n
        remaining -= n
    return tier_sum


def _pick(
    slots: list[_Slot], remaining: int, headroom: Mapping[str, int], g: int
) -> tuple[_Slot, int] | None:
    """The slot for the next pods of a shape and how many go there: the tightest slot
    that holds all that remain, else the one that holds the most."""
    best_all: tuple[int, ...] | None = None
    best_max: tuple[int, ...] | None = None
    best_entry: _Slot | None = None
    for entry in slots:
        room = entry.room
        if entry.limited:
            room = min(room, headroom[entry.limited] // g)
        if room <= 0:
            continue
        fresh = 1 if entry.fresh else 0
        if room >= remaining:
            key = (fresh, entry.tier, entry.pen, entry.free_gpu - g * remaining, entry.node)
            if best_all is None or key < best_all:
                best_all = key
                best_entry = entry
        elif best_all is None:
            key = (fresh, -room, entry.tier, entry.pen, entry.node)
            if best_max is None or key < best_max:
                best_max = key
                best_entry = entry
    if best_entry is None:
        return None
    if best_all is not None:
        return best_entry, remaining
    assert best_max is not None
    return best_entry, -best_max[1]


def _candidates(state: ClusterState, spec: PodSpec, extra: Mapping[int, Res] | None) -> list[int]:
    """Nodes admitting the shape that have room, found from the shape's free-GPU buckets
    (a full cluster yields almost nothing to look at) plus the nodes `extra` adds to."""
    res = spec_res(spec)
    if spec.gpus <= 0:
        return [i for i in state.candidate_nodes(spec) if state.fits(i, res, extra)]
    view = state.view(spec)
    found: set[int] = set()
    for gk in view.order:
        for level, bucket in view.groups[gk].items():
            if level >= spec.gpus:
                found.update(bucket)
    if extra:
        # Only nodes with extra capacity can fit beyond their own free GPUs.
        admitted = state.admits(spec)
        found.update(i for i in extra if admitted(i))
    return sorted(i for i in found if state.fits(i, res, extra))


def plan_job(
    state: ClusterState,
    pods: Sequence[PendingPod],
    member: str,
    lendable: Mapping[str, int] | None = None,
    extra: Mapping[int, Res] | None = None,
    models: frozenset[str] | None = None,
    cautious: bool = False,
) -> Plan | None:
    """A placement for every pod of the job, or None. `lendable`: owner -> GPUs it may
    still lend; `models`: GPU models the job may use (None = any); `cautious`: the job
    borrows and would lose its progress if reclaimed (see `placement`)."""
    if not pods:
        return None
    groups = _groups(pods)
    uses_gpus = any(spec.gpus > 0 for spec, _ in groups)
    cand_lists = [_candidates(state, spec, extra) for spec, _ in groups]
    # (model, domain) -> nodes, for every group
    parts: dict[tuple[str, str], list[list[int]]] = {}
    for k, cands in enumerate(cand_lists):
        for i in cands:
            model = (state.nodes[i].gpu_model or "") if uses_gpus else ""
            if models is not None and uses_gpus and model not in models:
                continue
            lists = parts.get((model, state.domain[i]))
            if lists is None:
                lists = parts[(model, state.domain[i])] = [[] for _ in groups]
            lists[k].append(i)
    gang = len(pods) > 1
    best: tuple[tuple[object, ...], Plan] | None = None
    for model in sorted({m for m, _ in parts}):
        domains = sorted(d for m, d in parts if m == model)
        options: list[tuple[tuple[object, ...], Plan]] = []
        if gang:
            for domain in domains:
                plan = _try(
                    state, groups, parts[(model, domain)], member, lendable, extra, pods, cautious
                )
                if plan is not None:
                    options.append(((0, plan.nodes, plan.tier_sum, model, domain), plan))
                    if plan.nodes == 1 and plan.tier_sum == 0:
                        break  # one of the member's own nodes: no later domain does better
        if not options and (not gang or len(domains) > 1):
            merged: list[list[int]] = [[] for _ in groups]
            for domain in domains:
                for k, lst in enumerate(parts[(model, domain)]):
                    merged[k].extend(lst)
            for lst in merged:
                lst.sort()
            plan = _try(state, groups, merged, member, lendable, extra, pods, cautious)
            if plan is not None:
                options.append(((1 if gang else 0, plan.nodes, plan.tier_sum, model, ""), plan))
        for option in options:
            if best is None or option[0] < best[0]:
                best = option
    return None if best is None else best[1]


def _try(
    state: ClusterState,
    groups: list[tuple[PodSpec, list[str]]],
    cand_lists: list[list[int]],
    member: str,
    lendable: Mapping[str, int] | None,
    extra: Mapping[int, Res] | None,
    pods: Sequence[PendingPod],
    cautious: bool,
) -> Plan | None:
    # Indexed, not `zip(..., strict=True)`: compiled, a call with a keyword goes through
    # Python's call protocol, and a waiting gang is planned every cycle.
    assert len(groups) == len(cand_lists)
    work = [(groups[k][0], groups[k][1], cand_lists[k]) for k in range(len(groups))]
    if any(not c for _, _, c in work):
        return None
    out = _greedy(state, work, member, lendable, extra, cautious)
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
