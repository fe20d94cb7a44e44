"""What a member may ever hold for one job, and the sentence for a job that asks more.

A job's pods go on the nodes of one GPU model (a gang never mixes models). On those
nodes, even empty, the member may use its own and unowned nodes whole, and another
owner's only up to that owner's `lendingLimit`, in whole pods. A job asking for more
can never run as the cluster and policy stand, whatever the load: its explanation says
so, instead of counting idle GPUs it will never be given, and `fairpool trace check` and
`fairpool simulate` name such jobs with the same sentence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from scheduler.engine.mentions import mention

Slots = Mapping[tuple[str, str], int]
"""(GPU model, owner) -> pods of the job the owner's nodes of that model take, empty;
owner "" for nodes of no member."""


def most_held(
    member: str, per_pod: int, slots: Slots, limits: Mapping[str, int]
) -> tuple[int, str, list[tuple[str, int, int | None]]]:
    """(GPUs, model, per owner (owner, GPUs, its lendingLimit or None)) on the model where
    the member may hold most of the job's pods of `per_pod` GPUs (`limits`: owner ->
    lendingLimit, for the owners that have one). Ties go to the model first by name."""
    by_model: dict[str, list[tuple[str, int, int | None]]] = {}
    for (model, owner), pods in sorted(slots.items()):
        gpus = pods * per_pod
        limit = limits.get(owner) if owner != member else None
        if limit is not None:
            gpus = min(gpus, limit - limit % per_pod)
        by_model.setdefault(model, []).append((owner, gpus, limit))
    return _most_on_one_model(by_model)


def _most_on_one_model(
    by_model: Mapping[str, list[tuple[str, int, int | None]]],
) -> tuple[int, str, list[tuple[str, int, int | None]]]:
    """(GPUs, model, its owners' part) of the model whose owners hold the most in all;
    ties go to the model first in `by_model`'s order (sorted by name by its callers)."""
    best: tuple[int, str, list[tuple[str, int, int | None]]] = (0, "", [])
    for model, owners in by_model.items():
        total = sum(g for _, g, _ in owners)
        if total > best[0] or not best[1]:
            best = (total, model, owners)
    return best


def never_detail(
    member: str,
    pods: int,
    per_pod: int,
    model: str | None,
    slots: Slots,
    limits: Mapping[str, int],
) -> str:
    """Why the member may never hold the job's `pods` pods of `per_pod` GPUs ("" when it
    may; `model`: the one the job asks for, None for any)."""
    if per_pod <= 0:
        return ""
    gpus, best, owners = most_held(member, per_pod, slots, limits)
    if gpus >= pods * per_pod:
        return ""
    return _sentence(member, pods * per_pod, (per_pod,), model, gpus, best, owners)


def most_subset(sizes: Sequence[int], cap: int) -> int:
    """The most GPUs some of a gang's pods of `sizes` GPUs ask for together, at most
    `cap`: what a node of `cap` GPUs, or an owner lending `cap`, may hold of them."""
    # Sums, not a bitmask: a node may say it has 10**18 GPUs.
    sums = {0}
    for size in sizes:
        if size > 0:
            sums |= {s + size for s in sums if s + size <= cap}
    return max(sums)


def gang_never_detail(
    member: str,
    sizes: Sequence[int],
    model: str | None,
    held: Mapping[tuple[str, str], int],
    limits: Mapping[str, int],
) -> str:
    """`never_detail` for a gang whose pods ask for different GPUs (`sizes`, one per pod):
    `held` maps (GPU model, owner or "") to the most GPUs of the gang that owner's nodes
    of that model could hold, empty (per node, `most_subset` of the pods it takes). No
    set of nodes holds more, so a gang asking for more can never run; one asking for
    less may still not fit (bin packing), and counts: it is never wrongly left out."""
    need = sum(s for s in sizes if s > 0)
    if need <= 0:
        return ""
    by_model: dict[str, list[tuple[str, int, int | None]]] = {}
    for (gpu_model, owner), gpus in sorted(held.items()):
        limit = limits.get(owner) if owner != member else None
        if limit is not None:
            gpus = min(gpus, most_subset(sizes, limit))
        by_model.setdefault(gpu_model, []).append((owner, gpus, limit))
    best = _most_on_one_model(by_model)
    if best[0] >= need:
        return ""
    distinct = tuple(sorted({s for s in sizes if s > 0}, reverse=True))
    return _sentence(member, need, distinct, model, best[0], best[1], best[2])


def _sentence(
    member: str,
    need: int,
    per_pod: tuple[int, ...],
    model: str | None,
    gpus: int,
    best: str,
    owners: list[tuple[str, int, int | None]],
) -> str:
    parts: list[str] = []
    for owner, held, limit in owners:
        if owner == member:
            parts.insert(0, f"{held} on its own nodes")
        elif not owner:
            parts.append(f"{held} on nodes of no member")
        elif limit is not None:
            parts.append(f"{held} that {mention(owner)} may lend (lendingLimit {limit})")
        else:
            parts.append(f"{held} on {mention(owner)}'s nodes")
    if model is not None:
        what, of = f"{model} GPUs", ""
    else:  # any model, but one: the best one's nodes are named
        what, of = "GPUs of one model", f" {best}" if best else ""
    in_pods = ""
    if len(per_pod) > 1 or per_pod[0] > 1:
        in_pods = f" in pods of {_and(tuple(str(p) for p in per_pod))}"
    where = f": {_and(tuple(parts))}" if parts else ""
    return (
        f"it needs {need} {what} at once, and {mention(member)} can hold at most "
        f"{gpus}{of}{in_pods}{where}"
    )


def _and(words: tuple[str, ...]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
