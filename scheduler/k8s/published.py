"""What a scheduling cycle publishes for readers: the snapshot it decided on, the policy it
used and the engine's decisions, in one immutable object.

The scheduling loop builds a new `Published` after each cycle and swaps it in with a
single attribute assignment (atomic in Python). Readers (the gRPC API, the metrics
exporter) take the current object and work on it alone: they hold no lock the loop
needs, never see a snapshot of one cycle with the decisions of another, and cost the
loop nothing but the swap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.model import Policy
from scheduler.engine.decisions import Decisions
from scheduler.engine.snapshot import Snapshot

EMPTY_SNAPSHOT = Snapshot(now=0.0, nodes=(), running=(), pending=())


@dataclass(frozen=True, slots=True)
class Rejected:
    """A pending pod (or gang) the cycle could not hand to the engine (a pod it cannot
    read, a namespace that is no member's), and why: the reason its FailedScheduling
    event gives, which `fairpool explain` gives too."""

    job_id: str
    member: str
    """"" when its namespace is no member's (only an admin reads it)."""
    namespace: str
    pod_names: tuple[str, ...]
    reason: str
    submitted_at: float
    gpus: int = 0
    """GPUs its readable pods ask for."""
    gpu_model: str = ""
    """The GPU model its pods ask for ("" for any, or when they differ)."""


@dataclass(frozen=True, slots=True)
class Published:
    version: int
    """Counts publications: a reader caching anything derived from a `Published` keys
    it by this number (0: nothing decided yet)."""
    snapshot: Snapshot
    policy: Policy | None
    """The policy the cycle decided with (the one in use may be newer, until the next
    cycle)."""
    decisions: Decisions = field(default_factory=Decisions)
    running_phase: frozenset[str] = frozenset()
    """Uids of the pods bound and reported Running (for the exporter)."""
    rejected: tuple[Rejected, ...] = ()
    """The pending pods the cycle could not hand to the engine."""
    sentences_on_request: bool = False
    """The engine's sentences (`decisions.explanations`) are worked out only when read,
    by a whole engine run (a standby's): the read front asks the daemon's process for
    them rather than have every publication's worked out."""

    def next(
        self,
        snapshot: Snapshot,
        policy: Policy,
        decisions: Decisions,
        running_phase: frozenset[str] = frozenset(),
        rejected: tuple[Rejected, ...] = (),
        sentences_on_request: bool = False,
    ) -> Published:
        return Published(
            self.version + 1,
            snapshot,
            policy,
            decisions,
            running_phase,
            rejected,
            sentences_on_request,
        )


NOTHING_PUBLISHED = Published(0, EMPTY_SNAPSHOT, None)
