"""The scheduler daemon: watch the cluster, ask the engine, carry out its decisions.

`SchedulerView` is the read-only window other parts of the process (the gRPC policy API)
get onto the running daemon. The daemon implements it; tests may implement it with a
plain object.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from policies.model import Policy
from scheduler.decisions import Decisions
from scheduler.snapshot import Snapshot


@runtime_checkable
class SchedulerView(Protocol):
    """What the running scheduler exposes to the gRPC server (issue 6).

    Every method is thread-safe and cheap: it returns the latest immutable value and
    never waits for a scheduling cycle.
    """

    def policy(self) -> Policy:
        """The policy the scheduler is using now."""
        ...

    def snapshot(self) -> Snapshot:
        """The snapshot the latest scheduling cycle decided on (an empty snapshot before
        the first cycle)."""
        ...

    def last_decisions(self) -> Decisions:
        """What the engine decided in the latest cycle (explanations per pending job id,
        member shares per GPU model); `Decisions()` before the first cycle."""
        ...

    def set_policy(self, policy: Policy) -> None:
        """Hot-swap the policy (after ApplyPolicy validated and stored it). The next
        scheduling cycle uses it; running pods are not touched by the swap itself."""
        ...
