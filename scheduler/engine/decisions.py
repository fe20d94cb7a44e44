"""What the engine decides. Adapters carry these out; nothing here does I/O."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

from scheduler.engine.collector import pause, resume

PreemptionCause = Literal["entitlement", "fair_share", "consolidation", "queue"]
PREEMPTION_CAUSES: tuple[PreemptionCause, ...] = (
    "entitlement",
    "fair_share",
    "consolidation",
    "queue",
)
"""Why a pod is preempted, in the order reports list them: `entitlement`, a reclaim for
a job that keeps its member within its entitlement (an owner taking its GPUs back, the
pool's guarantee); `fair_share`, any other reclaim (a member below its fair share taking
from one above it); `consolidation`, a move (its work restarts elsewhere so that a job
blocked by fragmentation fits); `queue`, an older job of the victim's own member taking
back what the victim overtook (`reclaim.Overtaken`: the victim resumes, nothing is
lost)."""


class Bind(NamedTuple):
    """One pod placed on a node. A named tuple rather than a frozen dataclass: a busy
    cycle makes tens of thousands, and a tuple is made in a third of the time."""

    pod_uid: str
    node: str
    job_id: str
    member: str
    owner: str | None
    """Owner of the node; differs from `member` when the pod runs on others' hardware."""
    reclaimable: bool
    """True when this pod takes the member above its entitlement: the youngest pod, it
    is among the reclaimable ones."""


@dataclass(init=False, unsafe_hash=True, slots=True)
class Preemption:
    pod_uid: str
    job_id: str
    victim_member: str | None
    reclaimer: str
    """Member whose pending job needs the GPUs back."""
    for_job: str
    reason: str
    """One sentence: who reclaims or moves it, for which job, and why this victim; its
    members and the job it is for marked (`mentions`), so that the victim's member reads
    it through `scheduler.k8s.redaction` (`evictor.victim_reason`), anyone else through
    `mentions.plain`."""
    grace_period_seconds: int
    cause: PreemptionCause
    """`PREEMPTION_CAUSES`: the reclaimer's entitlement, its fair share, or a move."""

    def __init__(
        self,
        pod_uid: str,
        job_id: str,
        victim_member: str | None,
        reclaimer: str,
        for_job: str,
        reason: str,
        grace_period_seconds: int,
        cause: PreemptionCause,
    ) -> None:
        self.pod_uid = pod_uid
        self.job_id = job_id
        self.victim_member = victim_member
        self.reclaimer = reclaimer
        self.for_job = for_job
        self.reason = reason
        self.grace_period_seconds = grace_period_seconds
        self.cause = cause


@dataclass(frozen=True, slots=True)
class Nomination:
    """GPUs being freed by preemption are held for this job until the victims are gone."""

    job_id: str
    nodes: dict[str, str]
    """pod uid -> node."""


@dataclass(init=False, unsafe_hash=True, slots=True)
class MemberShare:
    """One member's position for one GPU model at the instant of the snapshot. Its own
    `__init__`, not the dataclass one: compiled, the engine makes one per member and
    model every cycle, and the generated one runs interpreted (ten times slower). Not
    frozen for the same reason (nothing changes one once made)."""

    member: str
    gpu_model: str
    contribution: int
    entitlement: int
    fair_share: float
    allocated: int
    """GPUs of the member's running pods, terminating ones excepted."""
    borrowed: int
    """Allocated above the entitlement: `max(0, allocated - entitlement)`."""
    reclaimable: int
    """GPUs in the member's reclaimable pods (whole pods, so it can exceed `borrowed`)."""
    lent: int
    """GPUs on the member's own nodes held by other members' pods."""
    pending: int
    demand: int

    def __init__(
        self,
        member: str,
        gpu_model: str,
        contribution: int,
        entitlement: int,
        fair_share: float,
        allocated: int,
        borrowed: int,
        reclaimable: int,
        lent: int,
        pending: int,
        demand: int,
    ) -> None:
        self.member = member
        self.gpu_model = gpu_model
        self.contribution = contribution
        self.entitlement = entitlement
        self.fair_share = fair_share
        self.allocated = allocated
        self.borrowed = borrowed
        self.reclaimable = reclaimable
        self.lent = lent
        self.pending = pending
        self.demand = demand


class Explanations(Mapping[str, str]):
    """job id -> one human sentence saying why it still waits, worked out on first read.

    The sentences are the engine's, from the cycle's final state (which nothing changes
    once the cycle has decided): reading them later gives the same text. The simulator
    never reads them, and writing them costs as much as a tenth of a busy cycle."""

    __slots__ = ("_found", "_lock", "_make")

    def __init__(self, make: Callable[[], dict[str, str]]) -> None:
        self._make: Callable[[], dict[str, str]] | None = make
        self._found: dict[str, str] | None = None
        # The daemon's loop and the API's threads may read the same decisions first.
        self._lock = threading.Lock()

    def _all(self) -> dict[str, str]:
        found = self._found
        if found is None:
            with self._lock:
                found = self._found
                if found is None:
                    assert self._make is not None
                    pause()  # written like a cycle (see `collector`)
                    try:
                        found = self._found = self._make()
                    finally:
                        resume()
                    self._make = None  # lets the cycle's state go
        return found

    def __getitem__(self, job_id: str) -> str:
        return self._all()[job_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._all()

    def __repr__(self) -> str:
        return repr(self._all())

    def __reduce__(self) -> tuple[type[dict[str, str]], tuple[dict[str, str]]]:
        # Pickled and copied as the plain mapping it stands for.
        return (dict, (self._all(),))


@dataclass(init=False, slots=True)
class Decisions:
    """What one cycle decided (its own `__init__`, not frozen: see `MemberShare`)."""

    binds: tuple[Bind, ...]
    preemptions: tuple[Preemption, ...]
    nominations: tuple[Nomination, ...]
    explanations: Mapping[str, str]
    """job id -> one human sentence saying why it still waits (`Explanations` from the
    engine), its members marked (`mentions`: read through `mentions.plain` or
    `scheduler.k8s.redaction`)."""
    shares: tuple[MemberShare, ...]
    kept_off_wanted: frozenset[str]
    """Ids of the waiting jobs the cycle kept off nodes whose owners are likely to want
    them back and found no room for elsewhere (reclaimed before, at `maxReclaimsPerJob`
    or restarting from zero: docs/architecture.md, section 4). The simulator's wait
    meter counts the idle GPUs only such jobs could use apart
    (`idle_while_waiting_kept_off_wanted_gpu_h`)."""
    moves_spent_for: str | None
    """The first job that came for a consolidation after the cycle had made its
    `maxConsolidationsPerCycle` moves (None when the limit turned nobody away): the next
    cycle may move work for it with nothing else changed. The daemon's next cycle comes
    within `cycle_seconds` anyway, while pods wait; the simulator, which runs a cycle
    only when something changes, runs one then (it waited for the moves' grace period)."""

    def __init__(
        self,
        binds: tuple[Bind, ...] = (),
        preemptions: tuple[Preemption, ...] = (),
        nominations: tuple[Nomination, ...] = (),
        explanations: Mapping[str, str] | None = None,
        shares: tuple[MemberShare, ...] = (),
        kept_off_wanted: frozenset[str] = frozenset(),
        moves_spent_for: str | None = None,
    ) -> None:
        self.binds = binds
        self.preemptions = preemptions
        self.nominations = nominations
        self.explanations = {} if explanations is None else explanations
        self.shares = shares
        self.kept_off_wanted = kept_off_wanted
        self.moves_spent_for = moves_spent_for
