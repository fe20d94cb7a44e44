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

Backfill must not cost the blocked job its place within the entitlement. Whether a job
keeps its member within its entitlement counts what the member holds, minus the GPUs of
its pods on nodes it does not own that started after the job was submitted, at most the
minimum runtime plus the grace period after it (`LateBorrowing`). That work overtook the
job on borrowed GPUs while the job waited for a borrower's pod on its member's node to
become reclaimable; standalone the job would have run first. Without this the member's
own later jobs, placed on idle foreign nodes during that wait, push the job beyond the
entitlement, and the owner then waits for the borrower to finish instead of getting its
node back. Pods on the member's own nodes always count: standalone they would hold those
GPUs too. The window keeps the rule to that wait: a job pending for days behind a busy
pool must not turn every later borrowing of its member into a claim on the guarantee,
which would preempt borrowers again and again on its behalf.
"""

from __future__ import annotations

from heapq import heappop, heappush, heappushpop

from scheduler.engine.allocation import Late
from scheduler.engine.entitlement import MemberModel
from scheduler.engine.jobinfo import JobInfo
from scheduler.engine.shares import job_sort_key

__all__ = ["LateBorrowing", "MemberQueues", "OrderKeys", "job_sort_key", "ratio"]


def ratio(allocated: float, fair: float) -> float:
    if fair <= 0:
        return float("inf")
    return allocated / fair


class OrderKeys:
    """What keys a member in the order by its next job (the cycle). A base class rather
    than a function: compiled, a method of a known class is called directly, a callable
    through Python's call protocol, once per queued job and cycle."""

    def order_key(self, member: str, info: JobInfo) -> tuple[int, float]:
        raise NotImplementedError


class _Line:
    """One member's queue and the position of its next job. A plain class: see
    `scheduler.engine.jobinfo.JobInfo`."""

    __slots__ = ("jobs", "pos")

    def __init__(self, jobs: list[JobInfo]) -> None:
        self.jobs = jobs
        self.pos = 0


class MemberQueues:
    """Per-member job queues behind a heap keyed by the member's current position. A heap
    entry carries the member's queue, so a turn looks up only the member whose job it
    ends."""

    def __init__(self, jobs: list[JobInfo], keys: OrderKeys) -> None:
        """`jobs` (what is known of each) in queue order: by member, then
        `job_sort_key` (`ShareBook.queued`). Queued with what is known of it, a job is
        never looked up again during its turn."""
        self._keys = keys
        # `jobs` comes grouped by member: one list per run. Cut by a loop, not `groupby`
        # with an `attrgetter`: compiled, that reads every job's member through Python's
        # attribute protocol, at every cycle.
        self._lines: dict[str, _Line] = {}
        start, n = 0, len(jobs)
        for k in range(1, n + 1):
            member = jobs[start].job.member
            if k == n or jobs[k].job.member != member:
                self._lines[member] = _Line(jobs[start:k])
                start = k
        # Members are distinct: entries never compare their queues.
        self._heap: list[tuple[tuple[int, float], str, _Line]] = []
        for member in sorted(self._lines):
            line = self._lines[member]
            if line.jobs:
                key = keys.order_key(member, line.jobs[0])
                heappush(self._heap, (key, member, line))

    def pop(self) -> JobInfo | None:
        if not self._heap:
            return None
        _, _, line = heappop(self._heap)
        pos = line.pos
        line.pos = pos + 1
        return line.jobs[pos]

    def rest(self, member: str) -> tuple[list[JobInfo], int]:
        """The member's queue and the position of its next job, to look ahead."""
        line = self._lines[member]
        return line.jobs, line.pos

    def skip_to(self, member: str, pos: int) -> None:
        """Take the member's jobs before `pos` out of the queue (they were decided
        without a turn)."""
        self._lines[member].pos = pos

    def advance(self, member: str) -> JobInfo | None:
        """The member's last popped job was handled: queue its next one, then pop (in
        one step of the heap)."""
        line = self._lines[member]
        heap = self._heap
        if line.pos < len(line.jobs):
            key = self._keys.order_key(member, line.jobs[line.pos])
            _, _, nxt = heappushpop(heap, (key, member, line))
        elif heap:
            _, _, nxt = heappop(heap)
        else:
            return None
        pos = nxt.pos
        nxt.pos = pos + 1
        return nxt.jobs[pos]


class LateBorrowing:
    """Per (member, GPU model): the GPUs of the member's running pods on nodes it does not
    own, by start time, to tell how many started after a given job was submitted (see
    the module). Only the snapshot's pods count: within a cycle a member's jobs are
    tried in queue order, so what the cycle binds comes after the jobs it could
    overtake, and the next cycle sees it with its start time. The allocation keeps
    these pods by start time (`Allocation.late`), from one cycle to the next."""

    def __init__(self, late: dict[MemberModel, Late]) -> None:
        self._late = late

    def at_least(self, key: MemberModel, submitted_at: float, window: float, gpus: int) -> bool:
        """`after(key, submitted_at, window) >= gpus`, without a search when all of the
        member's pods on others' nodes hold fewer GPUs (most turns of a member well
        beyond its entitlement)."""
        if gpus <= 0:
            return True
        found = self._late.get(key)
        if found is None or found[1][0] < gpus:
            return False
        return _started_within(found, submitted_at, window) >= gpus

    def most(self, key: MemberModel) -> int:
        """The GPUs of all the member's pods on others' nodes: `at_least` finds no more
        (-1 when it has none)."""
        found = self._late.get(key)
        return -1 if found is None else found[1][0]

    def after(self, key: MemberModel, submitted_at: float, window: float) -> int:
        """GPUs of the member's pods on others' nodes that started after `submitted_at`,
        at most `window` seconds after it."""
        found = self._late.get(key)
        return 0 if found is None else _started_within(found, submitted_at, window)


def _started_within(late: Late, submitted_at: float, window: float) -> int:
    """`LateBorrowing.after` on one key's pods (looked up once by the caller)."""
    times, suffix = late
    until = submitted_at + window
    if not times or until < times[0] or submitted_at >= times[-1]:
        return 0  # every pod started after the window, or none after the job came
    return suffix[_after(times, submitted_at)] - suffix[_after(times, until)]


def _after(times: list[float], t: float) -> int:
    """`bisect.bisect_right(times, t)`, as a loop: compiled, it reads the list natively,
    where calling `bisect` goes through Python's call protocol (at every turn that asks
    whether a job's member is within its entitlement)."""
    lo, hi = 0, len(times)
    while lo < hi:
        mid = (lo + hi) // 2
        if t < times[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo
