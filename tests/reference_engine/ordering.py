"""Who goes next.

Entitled demand first, then members furthest below their fair share. The key of a
member is that of its next job: first whether the job keeps the member within its
entitlement for the job's GPU model (allocated + held for nominations + the job's GPUs
<= entitlement) -- such jobs go before any job that would borrow, so that when positions
tie (both members at 0, say) a member with no entitlement on that model cannot be served
first and borrow the other's node, which then waits for reclaim and min runtime; then
`allocated / fair share` for the GPU model of the job (over all models for a job asking
no GPU), infinite when the fair share is zero; then member name. The key is recomputed
after every job of the member is tried, so the order follows the allocations made
during the cycle. Within a member: higher priority, then earlier submission, then job
id.

A job that does not fit never blocks other members (each member has its own queue).
Within a member, later jobs may backfill past a blocked job (a big gang does not keep
the member's small jobs idle); the blocked gang is protected instead by reclaim, which
runs for it before any later job of the member is tried, and by the nomination that
then holds the freed capacity for it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from scheduler.engine.snapshot import PendingJob
from tests.reference_engine.shares import job_sort_key

__all__ = ["MemberQueues", "job_sort_key", "ratio"]


def ratio(allocated: float, fair: float) -> float:
    if fair <= 0:
        return float("inf")
    return allocated / fair


class MemberQueues:
    """Per-member job queues behind a heap keyed by the member's current position."""

    def __init__(
        self,
        jobs: tuple[PendingJob, ...],
        key: Callable[[str, PendingJob], tuple[int, float]],
    ) -> None:
        self._key = key
        queues: dict[str, list[PendingJob]] = {}
        for job in jobs:
            queues.setdefault(job.member, []).append(job)
        self._queues = {m: sorted(q, key=job_sort_key) for m, q in queues.items()}
        self._pos = dict.fromkeys(self._queues, 0)
        self._heap: list[tuple[tuple[int, float], str]] = []
        for member in sorted(self._queues):
            self._push(member)

    def _push(self, member: str) -> None:
        pos = self._pos[member]
        queue = self._queues[member]
        if pos < len(queue):
            heapq.heappush(self._heap, (self._key(member, queue[pos]), member))

    def pop(self) -> PendingJob | None:
        if not self._heap:
            return None
        _, member = heapq.heappop(self._heap)
        job = self._queues[member][self._pos[member]]
        self._pos[member] += 1
        return job

    def peek(self, member: str) -> PendingJob | None:
        """The member's next job, without taking it."""
        queue = self._queues[member]
        pos = self._pos[member]
        return queue[pos] if pos < len(queue) else None

    def skip(self, member: str) -> None:
        """Take the member's next job out of the queue (it was decided without a turn)."""
        self._pos[member] += 1

    def done(self, member: str) -> None:
        """The member's last popped job was handled: queue its next one."""
        self._push(member)
