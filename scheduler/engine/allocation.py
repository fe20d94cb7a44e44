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

from bisect import bisect_left
from collections.abc import Mapping

from scheduler.engine.entitlement import MemberModel
from scheduler.engine.snapshot import RunningPod, changed_pods, same_items


class Allocation:
    """A plain class, not a dataclass: see `scheduler.engine.jobinfo.JobInfo`. Never
    changed once made: `classify` hands the same one to the next cycle when the running
    pods are the same."""

    __slots__ = (
        "allocated",
        "borrowed",
        "late",
        "lent",
        "reclaimable",
        "reclaimable_pods",
        "used",
    )

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
    late: dict[MemberModel, Late]
    """The counted pods of each member on nodes it does not own, by start time
    (`ordering.LateBorrowing` reads it)."""

    def __init__(self) -> None:
        self.allocated = {}
        self.borrowed = {}
        self.reclaimable = {}
        self.lent = {}
        self.reclaimable_pods = set()
        self.used = {}
        self.late = {}

    def member_total(self, member: str) -> int:
        return sum(v for (m, _), v in self.allocated.items() if m == member)

    def lent_total(self, owner: str) -> int:
        return sum(v for (o, _), v in self.lent.items() if o == owner)


Entry = tuple[bool, float, str, int]
"""A counted pod in the order its member's entitlement fills: on a node it does not own,
start time, uid, GPUs."""

Late = tuple[list[float], list[int]]
"""Start times of pods in order, and suffix sums of their GPUs: the second list's k-th
entry is the GPUs of the pods from the k-th on (one more entry, 0, at the end)."""


class _Classified:
    """A classification and what the next one may start from: the pods it was made of,
    each member's counted pods per model in fill order, and each such group's borrowed
    GPUs, reclaimable pods and their GPUs. Never changed once made."""

    __slots__ = ("entitlement", "groups", "late", "node_of", "out", "results", "running")

    def __init__(
        self,
        running: tuple[RunningPod, ...],
        node_of: dict[str, tuple[str, str | None]],
        entitlement: dict[MemberModel, int],
        out: Allocation,
        groups: dict[MemberModel, list[Entry]],
        results: dict[MemberModel, tuple[int, list[str], int]],
        late: dict[MemberModel, Late],
    ) -> None:
        self.running = running
        self.node_of = node_of
        self.entitlement = entitlement
        self.out = out
        self.groups = groups
        self.results = results
        self.late = late


_LAST: list[_Classified] = []
"""The last classification; holding what it was made from keeps the identity checks from
being fooled by a recycled id."""


def classify(
    running: tuple[RunningPod, ...],
    node_of: dict[str, tuple[str, str | None]],
    entitlement: dict[MemberModel, int],
) -> Allocation:
    """`node_of`: node name -> (GPU model, owner) for the nodes in the snapshot. Pods are
    immutable and `node_of` and `entitlement` come from the static part of the
    snapshot: the same pods (an arrival, a wake-up: about a third of the cycles of a busy
    replay) give the same allocation, so the last one is reused, and a few pods come or
    gone (a completion, a bind, a preemption: most of the others) change only their
    members' groups. Either way the result is the one `_classify` gives."""
    if _LAST:
        last = _LAST[0]
        if last.node_of is node_of and last.entitlement is entitlement:
            if same_items(last.running, running):
                return last.out
            changed = changed_pods(last.running, running)
            if changed is not None:
                made = _reclassify(last, running, changed[0], changed[1])
                _LAST[:] = [made]
                return made.out
    made = _classify(running, node_of, entitlement)
    _LAST[:] = [made]
    return made.out


def _classify(
    running: tuple[RunningPod, ...],
    node_of: dict[str, tuple[str, str | None]],
    entitlement: dict[MemberModel, int],
) -> _Classified:
    used: dict[str, int] = {}
    allocated: dict[MemberModel, int] = {}
    lent: dict[MemberModel, int] = {}
    groups: dict[MemberModel, list[Entry]] = {}
    for pod in running:
        gpus = pod.spec.gpus
        if gpus <= 0:
            continue
        info = node_of.get(pod.node)
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
    results: dict[MemberModel, tuple[int, list[str], int]] = {}
    late: dict[MemberModel, Late] = {}
    for key, pods in groups.items():
        pods.sort()
        results[key] = _fill(pods, allocated[key], entitlement.get(key, 0))
        found = _late(pods)
        if found is not None:
            late[key] = found
    out = _allocation(used, allocated, lent, results, late)
    return _Classified(running, node_of, entitlement, out, groups, results, late)


def _reclassify(
    last: _Classified,
    running: tuple[RunningPod, ...],
    gone: list[RunningPod],
    came: list[RunningPod],
) -> _Classified:
    """`_classify(running, ...)` from the last classification and the pods gone and come:
    the sums move by their GPUs, and only their groups are filled again."""
    node_of, entitlement = last.node_of, last.entitlement
    before = last.out
    used, allocated, lent = dict(before.used), dict(before.allocated), dict(before.lent)
    dropped: dict[MemberModel, list[Entry]] = {}
    added: dict[MemberModel, list[Entry]] = {}
    for sign, changed in ((-1, gone), (1, came)):
        for pod in changed:
            gpus = pod.spec.gpus
            if gpus <= 0:
                continue
            info = node_of.get(pod.node)
            if info is None:
                continue
            model, owner = info
            used[model] = used.get(model, 0) + sign * gpus
            member = pod.member
            if member is None or pod.terminating:
                continue
            key = (member, model)
            allocated[key] = allocated.get(key, 0) + sign * gpus
            foreign = owner != member
            if foreign and owner is not None:
                lkey = (owner, model)
                lent[lkey] = lent.get(lkey, 0) + sign * gpus
            entry = (foreign, pod.started_at, pod.uid, gpus)
            (dropped if sign < 0 else added).setdefault(key, []).append(entry)
    groups = dict(last.groups)
    results = dict(last.results)
    late = dict(last.late)
    for key in dropped.keys() | added.keys():
        pods = list(groups.get(key, ()))
        for entry in dropped.get(key, ()):
            pods.remove(entry)  # one of equal entries, as only one pod went
        more = added.get(key)
        if more:
            pods.extend(more)
            pods.sort()
        late.pop(key, None)
        if pods:
            groups[key] = pods
            results[key] = _fill(pods, allocated[key], entitlement.get(key, 0))
            found = _late(pods)
            if found is not None:
                late[key] = found
        else:
            del groups[key]
            del results[key]
    out = _allocation(
        {k: v for k, v in used.items() if v},
        {k: v for k, v in allocated.items() if v},
        {k: v for k, v in lent.items() if v},
        results,
        late,
    )
    return _Classified(running, node_of, entitlement, out, groups, results, late)


def _fill(pods: list[Entry], allocated: int, entitlement: int) -> tuple[int, list[str], int]:
    """A group's borrowed GPUs, reclaimable pods and their GPUs: the pods, in fill order,
    fill the entitlement; the first that does not fit and every later one are
    reclaimable."""
    if allocated <= entitlement:
        return 0, [], 0  # everything fits within the entitlement
    reclaimable: list[str] = []
    held = 0
    room = entitlement
    filled = 0
    for _, _, uid, gpus in pods:
        if filled + gpus <= room:
            filled += gpus
        else:
            room = -1  # everything after the first overflow is reclaimable too
            reclaimable.append(uid)
            held += gpus
    return allocated - entitlement, reclaimable, held


def _late(pods: list[Entry]) -> Late | None:
    """A group's pods on nodes its member does not own, by start time (they come last in
    fill order, by start time), or None when it has none."""
    first = bisect_left(pods, (True,))
    if first == len(pods):
        return None
    times = [entry[1] for entry in pods[first:]]
    suffix = [0] * (len(times) + 1)
    for k in range(len(times) - 1, -1, -1):
        suffix[k] = suffix[k + 1] + pods[first + k][3]
    return times, suffix


def _allocation(
    used: dict[str, int],
    allocated: dict[MemberModel, int],
    lent: dict[MemberModel, int],
    results: Mapping[MemberModel, tuple[int, list[str], int]],
    late: dict[MemberModel, Late],
) -> Allocation:
    """The allocation from its sums and its groups' fill, every table in key order (the
    same tables however they were worked out)."""
    out = Allocation()
    out.used = dict(sorted(used.items()))
    out.allocated = dict(sorted(allocated.items()))
    out.lent = dict(sorted(lent.items()))
    out.late = late  # only looked up
    for key in sorted(results):
        borrowed, uids, gpus = results[key]
        if borrowed > 0:
            out.borrowed[key] = borrowed
        if gpus > 0:
            out.reclaimable[key] = gpus
            out.reclaimable_pods.update(uids)
    return out
