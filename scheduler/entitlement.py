"""Contribution and entitlement: what each member brings to the pool, per GPU model.

Rules (DESIGN.md glossary):
- A node contributes when it is present in the snapshot and Ready. Its GPUs count for the
  member named by its `fairpool.io/owner` label (`Node.owner`) if that member exists in
  the policy; nodes without a known owner add capacity to the pool but nobody's
  entitlement.
- A cordoned (unschedulable) but Ready node still counts as contributed: the owner did
  not withdraw it, it only asked that nothing new lands there. It is never a placement
  target (see `placement`), so its GPUs are usable only by the pods already on it.
- Entitlement = contribution + `Member.purchased` GPUs of that model.
- A node with GPUs but no `nvidia.com/gpu.product` label counts under the model name
  `UNKNOWN_MODEL`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from scheduler.snapshot import Node

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
    """Contribution plus purchased GPUs per (member, GPU model); zero entries omitted."""
    out = contributions(nodes, policy)
    for member in policy.members:
        for model, count in member.purchased.items():
            if count > 0:
                key = (member.name, model)
                out[key] = out.get(key, 0) + count
    return {k: v for k, v in sorted(out.items()) if v > 0}
