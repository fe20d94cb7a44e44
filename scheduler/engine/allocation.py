"""Who holds what right now: allocated, borrowed, reclaimable and lent GPUs from the
running pods (docs/glossary.md).

- A running pod's GPU model is its node's model. Pods whose node is not in the snapshot
  are ignored (the node is gone; so is the pod, soon).
- `allocated[(member, model)]` counts GPUs of the member's pods that are not terminating:
  a terminating pod still occupies its node (placement sees that) but no longer counts
  for its member's position (it is already on its way out).
- `borrowed[(member, model)]` is `max(0, allocated - entitlement)`.
- Reclaimable pods: per member and model, the pods fill the entitlement first, pods on
  the member's own nodes first, then the oldest (start time, then uid); the first pod
  that does not fit entirely and every later one is *reclaimable*. A member at or below
  its entitlement therefore has no reclaimable pod. Pods are whole, so the GPUs in
  reclaimable pods (`reclaimable`) can exceed the borrowed GPUs.
- `lent[(owner, model)]` counts GPUs on the owner's nodes held by other members' pods
  (not terminating); pods of no member (not scheduled for a fairpool member) are not
  lending, they are the owner's own business.
"""

from __future__ import annotations

from collections.abc import Mapping

from scheduler.engine.entitlement import MemberModel
from scheduler.engine.snapshot import RunningPod, same_items


class Allocation:
    """A plain class, not a dataclass: see `scheduler.engine.jobinfo.JobInfo`. Never
    changed once made: `classify` hands the same one to the next cycle when the running
    pods are the same."""

    __slots__ = ("allocated", "borrowed", "lent", "reclaimable", "reclaimable_pods", "used")

    allocated: dict[MemberModel, int]
    borrowed: dict[MemberModel, int]
    """GPUs allocated above the entitlement (only positive entries)."""
    reclaimable: dict[MemberModel, int]
    """GPUs in reclaimable pods (only positive entries)."""
    lent: dict[MemberModel, int]
    reclaimable_pods: set[str]
    """Uids of reclaimable pods."""
    used: dict[str, int]
    """GPUs held per model by every pod (terminating and foreign ones too)."""

    def __init__(self) -> None:
        self.allocated = {}
        self.borrowed = {}
        self.reclaimable = {}
        self.lent = {}
        self.reclaimable_pods = set()
        self.used = {}

    def member_total(self, member: str) -> int:
        return sum(v for (m, _), v in self.allocated.items() if m == member)

    def lent_total(self, owner: str) -> int:
        return sum(v for (o, _), v in self.lent.items() if o == owner)


_LAST: list[
    tuple[
        tuple[RunningPod, ...],
        Mapping[str, tuple[str, str | None]],
        Mapping[MemberModel, int],
        Allocation,
    ]
] = []
"""The last classification and what it was made from; holding them keeps the identity
checks from being fooled by a recycled id."""


def classify(
    running: tuple[RunningPod, ...],
    node_of: Mapping[str, tuple[str, str | None]],
    entitlement: Mapping[MemberModel, int],
) -> Allocation:
    """`node_of`: node name -> (GPU model, owner) for the nodes in the snapshot. Pods are
    immutable and `node_of` and `entitlement` come from the static part of the
    snapshot: the same pods (an arrival, a wake-up: about a third of the cycles of a busy
    replay) give the same allocation, so the last one is reused."""
    if _LAST:
        last_running, last_node_of, last_entitlement, found = _LAST[0]
        if (
            last_node_of is node_of
            and last_entitlement is entitlement
            and same_items(last_running, running)
        ):
            return found
    out = _classify(running, node_of, entitlement)
    _LAST[:] = [(running, node_of, entitlement, out)]
    return out


def _classify(
    running: tuple[RunningPod, ...],
    node_of: Mapping[str, tuple[str, str | None]],
    entitlement: Mapping[MemberModel, int],
) -> Allocation:
    out = Allocation()
    groups: dict[MemberModel, list[tuple[bool, float, str, int]]] = {}
    used, allocated, lent = out.used, out.allocated, out.lent
    find = node_of.get
    for pod in running:
        gpus = pod.spec.gpus
        if gpus <= 0:
            continue
        info = find(pod.node)
        if info is None:
            continue
        model, owner = info
        used[model] = used.get(model, 0) + gpus
        member = pod.member
        if member is None or pod.terminating:
            continue
        key = (member, model)
        allocated[key] = allocated.get(key, 0) + gpus
        pods = groups.get(key)
        if pods is None:
            pods = groups[key] = []
        if owner == member:
            pods.append((False, pod.started_at, pod.uid, gpus))
        else:
            pods.append((True, pod.started_at, pod.uid, gpus))
            if owner is not None:
                lkey = (owner, model)
                lent[lkey] = lent.get(lkey, 0) + gpus
    for key in sorted(groups):
        room = entitlement.get(key, 0)
        if allocated[key] <= room:
            continue  # everything fits within the entitlement
        out.borrowed[key] = allocated[key] - room
        filled = 0
        for _, _, uid, gpus in sorted(groups[key]):
            if filled + gpus <= room:
                filled += gpus
            else:
                room = -1  # everything after the first overflow is reclaimable too
                out.reclaimable_pods.add(uid)
                out.reclaimable[key] = out.reclaimable.get(key, 0) + gpus
    return out
