"""What the cycle needs to know about each pending job, learnt once per job.

A job is immutable, so what is derived from it (its GPUs, GPU model, shape number and
queue position) is kept by identity for the jobs of the last snapshot: a job that waits
through a thousand cycles is looked at once. The cache changes no decision: an entry
holds its job, so a recycled id cannot be mistaken for it, and a job it does not hold is
looked at afresh.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.engine.placement import SpecKey, spec_key
from scheduler.engine.snapshot import PendingJob

QueueKey = tuple[str, int, float, str]


@dataclass(frozen=True, slots=True)
class JobInfo:
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


def job_gpu_model(job: PendingJob) -> str | None:
    for pod in job.pods:
        if pod.spec.gpu_model is not None:
            return pod.spec.gpu_model
    return None


_SHAPES: dict[tuple[object, ...], int] = {}
"""Shape tuple -> its number. Shared by cycles, so that a job's number stays valid in
`_INFOS`; both are dropped together when the table grows past `_SHAPES_KEPT`."""
_SHAPES_KEPT = 100_000
_INFOS: dict[int, JobInfo] = {}
"""id(job) -> its information, for the jobs of the last snapshot."""


def _job_info(job: PendingJob) -> JobInfo:
    if len(job.pods) == 1:
        shape: tuple[object, ...] = (spec_key(job.pods[0].spec),)
    else:
        shape = tuple(sorted((spec_key(p.spec) for p in job.pods), key=repr))
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
    global _INFOS
    if len(_SHAPES) > _SHAPES_KEPT:
        _SHAPES.clear()
        _INFOS = {}
    known = _INFOS.get
    out: list[JobInfo] = []
    for job in pending:
        info = known(id(job))
        if info is None or info.job is not job:
            info = _job_info(job)
        out.append(info)
    _INFOS = {id(info.job): info for info in out}
    return out
