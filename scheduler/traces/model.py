"""A trace: jobs with a member, a submit time, a duration and a shape."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TraceJob:
    job_id: str
    org: str
    """The member that submits the job."""
    submit_time: float
    """Seconds from trace start."""
    duration_s: float
    """Run time once all its pods run; a preempted job restarts it (or resumes, when it
    is checkpointable)."""
    num_pods: int
    gpus_per_pod: int
    gpu_model: str | None = None
    priority: int = 0
    checkpointable: bool | None = None
    """The job resumes where it stopped when preempted; None: as its member's
    `checkpointable` says."""

    @property
    def gpus(self) -> int:
        return self.num_pods * self.gpus_per_pod

    @property
    def is_gang(self) -> bool:
        return self.num_pods > 1


@dataclass(frozen=True, slots=True)
class Trace:
    jobs: tuple[TraceJob, ...]
    """Sorted by (submit_time, job_id)."""
    start_epoch: float | None = None
    """UTC epoch seconds of trace time 0 (from ISO-8601 submit times), else None: 'the
    start of the simulated month'. (0.0 meant that too, so a trace whose first job was
    at 1970-01-01T00:00:00Z lost its dates.)"""

    def members(self) -> list[str]:
        return sorted({j.org for j in self.jobs})
