"""What the cycle needs to know about each pending job, learnt once per job.

A job is immutable, so what is derived from it (its GPUs, GPU model, shape number and
queue position) is kept by identity for the jobs of the last snapshot: a job that waits
through a thousand cycles is looked at once. The cache changes no decision: an entry
holds its job, so a recycled id cannot be mistaken for it, and a job it does not hold is
looked at afresh. The last snapshot's queue order is kept too: the jobs still pending
keep their relative order, so only the new ones are sorted and merged in.
"""

from __future__ import annotations

from bisect import insort
from operator import attrgetter

from scheduler.engine.placement import SpecKey, spec_key
from scheduler.engine.snapshot import PendingJob, PendingPod, same_items

QueueKey = tuple[str, int, float, str]


class JobInfo:
    """Never changed once made. A plain class, not a dataclass: the compiled engine makes
    one per new pending job (50,000 in a cold cycle of a long queue), and the `__init__`
    a dataclass writes at run time stays interpreted when mypyc compiles the class."""

    __slots__ = ("explicit_model", "gpus", "incomplete", "job", "pod_key", "queue_key", "sid")

    job: PendingJob
    gpus: int
    explicit_model: str | None
    """The GPU model its pods ask for (the first pod naming one), else None."""
    sid: int
    """A number per distinct tuple of the pods' shapes: the cache key for 'this did not
    fit' (shapes are deep tuples, which Python hashes anew at every lookup)."""
    incomplete: bool
    """Fewer pods than its gang size (or none)."""
    queue_key: QueueKey
    """(member, -priority, submission, job id): the order of the member's queue."""
    pod_key: SpecKey | None
    """The shape key of a single-pod job's pod (None for more pods): placement finds the
    pod's view by it without building the key again every cycle."""

    def __init__(
        self,
        job: PendingJob,
        gpus: int,
        explicit_model: str | None,
        sid: int,
        incomplete: bool,
        queue_key: QueueKey,
        pod_key: SpecKey | None,
    ) -> None:
        self.job = job
        self.gpus = gpus
        self.explicit_model = explicit_model
        self.sid = sid
        self.incomplete = incomplete
        self.queue_key = queue_key
        self.pod_key = pod_key

    def for_job(self, job: PendingJob) -> JobInfo:
        """The same information, held for another job (of the same id)."""
        return JobInfo(
            job,
            self.gpus,
            self.explicit_model,
            self.sid,
            self.incomplete,
            self.queue_key,
            self.pod_key,
        )


def required_pods(job: PendingJob) -> tuple[PendingPod, ...]:
    """The pods that must start together: all of them, or the first `min_member` of a
    gang that has more (a PodGroup's minMember: the rest start when room allows). What
    reclaim makes room for, and what decides whether the job can ever run."""
    if 0 < job.min_member < len(job.pods):
        return job.pods[: job.min_member]
    return job.pods


def required_job(job: PendingJob) -> PendingJob:
    """The job with only its `required_pods`: what consolidation makes room for, as
    reclaim does (the rest of a PodGroup's pods start when room allows)."""
    if 0 < job.min_member < len(job.pods):
        return PendingJob(
            job.job_id,
            job.member,
            job.pods[: job.min_member],
            job.min_member,
            job.priority,
            job.submitted_at,
            job.nominated_nodes,
            job.reclaims,
            job.reclaimed_at,
            job.checkpointable,
        )
    return job


def job_gpu_model(job: PendingJob) -> str | None:
    for pod in job.pods:
        if pod.spec.gpu_model is not None:
            return pod.spec.gpu_model
    return None


_SHAPES: dict[tuple[object, ...], int] = {}
"""Shape tuple -> its number. Shared by cycles, so that a job's number stays valid in
`_INFOS`; both are dropped together when the table grows past `_SHAPES_KEPT`."""
_SHAPES_KEPT = 100_000
_SHAPES_CLEARED = 0
"""How many times `_SHAPES` was cleared: a number kept by shape number elsewhere
(`runnable.NeverRuns`) is good only while this stays the same."""
_INFOS: dict[int, JobInfo] = {}
"""id(job) -> its information, for the jobs of the last snapshot."""
_ORDER: list[JobInfo] = []
"""The last snapshot's jobs' information in queue order (`queue_order`)."""
_SAME = False
"""The last `job_infos` found the jobs `_INFOS` held before it, no other."""
_LAST_PENDING: tuple[PendingJob, ...] = ()
_LAST_INFOS: list[JobInfo] = []
"""The last snapshot's pending jobs and what `job_infos` gave for them: the same jobs in
the same order get the same list (a cycle after a wake-up or a completion that queued
nothing), which lets the share book reuse what it derived from it."""
_LEARNT: tuple[list[JobInfo], list[JobInfo], dict[int, JobInfo]] | None = None
"""What the last `job_infos` returned, the information it made anew (for jobs not in the
snapshot before), and id(job) -> information for its jobs: `queue_order` tells the jobs
that came from the jobs that stayed without a pass of its own over the queue."""
_QUEUE_KEY = attrgetter("queue_key")
_INSERTED_MOST = 16
"""New jobs inserted one by one into the last order; more are merged in one sort."""


def _job_info(job: PendingJob) -> JobInfo:
    if len(job.pods) == 1:
        shape: tuple[object, ...] = (spec_key(job.pods[0].spec),)
    else:
        shape = tuple(sorted((spec_key(p.spec) for p in job.pods), key=repr))
        if 0 < job.min_member < len(job.pods):
            # Fewer pods must start together: it places, and may never run, otherwise.
            shape = (*shape, ("min_member", job.min_member))
    return JobInfo(
        job=job,
        gpus=job.gpus,
        explicit_model=job_gpu_model(job),
        sid=_SHAPES.setdefault(shape, len(_SHAPES)),
        incomplete=len(job.pods) < job.min_member or not job.pods,
        queue_key=(job.member, -job.priority, job.submitted_at, job.job_id),
        pod_key=shape[0] if len(job.pods) == 1 else None,  # type: ignore[arg-type]
    )


def job_infos(pending: tuple[PendingJob, ...]) -> list[JobInfo]:
    """Every pending job's information, in the snapshot's order, reusing what was learnt
    about the last snapshot's jobs."""
    global _INFOS, _ORDER, _SAME, _LAST_PENDING, _LAST_INFOS, _SHAPES_CLEARED, _LEARNT
    if len(_SHAPES) > _SHAPES_KEPT:
        _SHAPES.clear()
        _SHAPES_CLEARED += 1
        _INFOS = {}
        _ORDER = []
        _LAST_PENDING, _LAST_INFOS = (), []
    elif _LAST_INFOS and same_items(_LAST_PENDING, pending):
        _SAME = True
        _LEARNT = (_LAST_INFOS, [], _INFOS)
        return _LAST_INFOS
    kept = _INFOS
    out: list[JobInfo] = []
    new: list[JobInfo] = []
    for job in pending:
        info = kept.get(id(job))
        if info is None or info.job is not job:
            info = _job_info(job)
            new.append(info)
        out.append(info)
    # The same jobs as the last snapshot's: the table would come out the same.
    _SAME = not new and len(kept) == len(out)
    if not _SAME:
        _INFOS = {id(info.job): info for info in out}
    _LAST_PENDING, _LAST_INFOS = pending, out
    _LEARNT = (out, new, _INFOS)
    return out


def shapes_generation() -> int:
    """`_SHAPES_CLEARED`: shape numbers from two calls mean the same shapes only when this
    gave the same number both times."""
    return _SHAPES_CLEARED


class QueueChange:
    """How a queue order differs from the one made before it (`base`): the jobs added
    and removed, what was known of each. A plain class: see `JobInfo`."""

    __slots__ = ("added", "base", "removed")

    base: list[JobInfo]
    added: list[JobInfo]
    removed: list[JobInfo]

    def __init__(self, base: list[JobInfo], added: list[JobInfo], removed: list[JobInfo]) -> None:
        self.base = base
        self.added = added
        self.removed = removed


def queue_order(infos: list[JobInfo], distinct: bool) -> tuple[list[JobInfo], QueueChange | None]:
    """The jobs' information sorted by `queue_key` (member, then the member's queue
    order), and how it differs from the last order made, when that is known. `distinct`:
    no job id occurs twice, so no two keys are equal and any way of sorting gives this
    order; the last snapshot's order is then reused, its jobs still pending as they
    were, the others sorted and merged in. `infos`: what `job_infos` just returned (the
    share book calls the two in turn)."""
    global _ORDER
    last = _ORDER
    order: list[JobInfo] | None = None
    change: QueueChange | None = None
    if distinct and _SAME and len(last) == len(infos):
        # `job_infos` just found the last snapshot's jobs, no other, and the last order
        # is of them (no id repeats: as many jobs are the same jobs). About a third of
        # a busy replay's cycles queue nothing new.
        order = last
        change = QueueChange(last, [], [])
    elif distinct and last:
        kept: list[JobInfo] = []
        removed: list[JobInfo] = []
        learnt = _LEARNT
        fresh: list[JobInfo] | None = None
        if learnt is not None and learnt[0] is infos:
            # What `job_infos` made anew are the jobs that came; of the last order's,
            # those whose job still maps to the same information stayed.
            mapping = learnt[2]
            for info in last:
                (kept if mapping.get(id(info.job)) is info else removed).append(info)
            if len(kept) + len(learnt[1]) == len(infos):
                fresh = learnt[1]
            else:
                kept, removed = [], []
        if fresh is None:
            present = {id(info) for info in infos}
            for info in last:
                (kept if id(info) in present else removed).append(info)
        if len(kept) == len(infos):
            order = kept
            change = QueueChange(last, [], removed)
        elif kept:
            if fresh is None:
                seen = {id(info) for info in kept}
                fresh = [info for info in infos if id(info) not in seen]
            new = sorted(fresh, key=_QUEUE_KEY)
            change = QueueChange(last, new, removed)
            if len(new) <= _INSERTED_MOST:
                # A few arrivals: each finds its place by bisection, not a pass over all.
                order = kept
                for info in new:
                    insort(order, info, key=_QUEUE_KEY)
            else:
                # Two sorted runs: the sort only merges them.
                order = sorted(kept + new, key=_QUEUE_KEY)
    if order is None:
        order = sorted(infos, key=_QUEUE_KEY)
    # Kept only when no job occurs twice: reused, a repeated entry could stand in for a
    # job of the next snapshot that it does not hold.
    _ORDER = order if distinct else []
    return order, change
