"""Contribution and entitlement: what each member brings to the pool, per GPU model.

Rules (the words are docs/glossary.md's):
- A node contributes when it is present in the snapshot and Ready. Its GPUs count for the
  member named by its `fairpool.io/owner` label (`Node.owner`) if that member exists in
  the policy; nodes without a known owner add capacity to the pool but nobody's
  entitlement.
- A cordoned (unschedulable) but Ready node still counts as contributed: the owner did
  not withdraw it, it only asked that nothing new lands there. It is never a placement
  target (see `placement`), so its GPUs are usable only by the pods already on it.
- Entitlement = contribution + `Member.purchased` GPUs of that model, except that
  purchased GPUs have no hardware of their own, so they are carved out of the hardware
  that is there and the entitlements of a model never add up to more than the GPUs of its
  Ready nodes. Per GPU model, buyers in name order:
  1. A purchase is backed first by capacity nobody contributed (Ready nodes without an
     owner, or whose owner is not a policy member).
  2. The rest is carved out of the OTHER contributors' entitlements of that model, in
     proportion to what each still has of its contribution (integers: floors, then one
     more each by largest remainder, ties by member name). A member that sells
     entitlement through the pool is paid for it in the monthly settlement (the cost
     model pays each purchase to the other owners of that GPU model, split by their
     contributed GPU-hours).
  3. If the purchases exceed what the others contribute (or their nodes are not Ready),
     the buyer's entitlement is capped at what there is: an entitlement is what a member
     can always get back, and GPUs that do not exist cannot be given back.
  `MemberShare.contribution` stays the hardware; `MemberShare.entitlement` is the carved
  value, so a contributor that sold part of its nodes borrows (and has pods reclaimable
  by the buyer) when it runs on all of them.
- A node with GPUs but no `nvidia.com/gpu.product` label counts under the model name
  `UNKNOWN_MODEL`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from scheduler.engine.snapshot import Node

if TYPE_CHECKING:
    from policies.model import Policy

UNKNOWN_MODEL = "unknown"

MemberModel = tuple[str, str]


def node_model(node: Node) -> str:
    return node.gpu_model or UNKNOWN_MODEL


def contributes(node: Node) -> bool:
    """Present (it is in the snapshot) and Ready; cordoned nodes still contribute."""
    return node.ready and node.gpus > 0


def capacity(nodes: Iterable[Node]) -> dict[str, int]:
    """GPUs per model over contributing nodes, owned or not: what water-filling divides."""
    out: dict[str, int] = {}
    for node in nodes:
        if contributes(node):
            model = node_model(node)
            out[model] = out.get(model, 0) + node.gpus
    return out


def contributions(nodes: Iterable[Node], policy: Policy) -> dict[MemberModel, int]:
    """GPUs of contributing nodes per (owner, model), for owners that are policy members."""
    members = set(policy.member_names())
    out: dict[MemberModel, int] = {}
    for node in nodes:
        if contributes(node) and node.owner in members:
            key = (node.owner, node_model(node))
            out[key] = out.get(key, 0) + node.gpus
    return out


def entitlements(nodes: Iterable[Node], policy: Policy) -> dict[MemberModel, int]:
    """Contribution plus purchased GPUs per (member, GPU model), purchases carved out of
    capacity nobody contributed first, then out of the other contributors' entitlements
    (see the module docstring); zero entries omitted. Σ per model <= Ready capacity."""
    nodes = tuple(nodes)
    out = contributions(nodes, policy)
    cap = capacity(nodes)
    purchases: dict[str, dict[str, int]] = {}
    for member in policy.members:
        for model, count in member.purchased.items():
            if count > 0:
                purchases.setdefault(model, {})[member.name] = count
    for model in sorted(purchases):
        contributed = {m: g for (m, mm), g in out.items() if mm == model}
        unclaimed = max(0, cap.get(model, 0) - sum(contributed.values()))
        # What each contributor still has of its own contribution to sell.
        left = dict(contributed)
        for buyer, count in sorted(purchases[model].items()):
            backed = min(count, unclaimed)
            unclaimed -= backed
            sellers = {m: g for m, g in left.items() if m != buyer and g > 0}
            carved = min(count - backed, sum(sellers.values()))
            for seller, n in carve(carved, sellers).items():
                left[seller] -= n
                out[(seller, model)] -= n
            key = (buyer, model)
            out[key] = out.get(key, 0) + backed + carved
    return {k: v for k, v in sorted(out.items()) if v > 0}


def carve(total: int, weights: dict[str, int]) -> dict[str, int]:
    """Split `total` GPUs in proportion to `weights` (total <= Σ weights): floors first,
    then one more each by largest remainder, ties by name. Nobody gives more than its
    weight: a floor below an exact quota leaves room for the one more."""
    whole = sum(weights.values())
    if total <= 0 or whole <= 0:
        return {}
    out = {m: total * w // whole for m, w in weights.items()}
    rest = total - sum(out.values())
    order = sorted(weights, key=lambda m: (-(total * weights[m] % whole), m))
    for m in order[:rest]:
        out[m] += 1
    return out
