"""The read front's copy of the pending queue, kept from what changed at each publication.

The daemon's process sends, with each publication's `ReadAnswers`, a `QueueChange`: the
jobs that are new or changed since the last one it sent (the cluster cache keeps a
job's object while its pods do not change, so a queue of 50,000 jobs where ten changed
sends ten), the ids of the jobs gone, the engine's sentences that changed, the latest
cycle's binds and the pods it could not hand to the engine. The front applies it to a
copy (`QueueCopy`) and answers ListPending and ExplainPending from that, so neither
waits for the scheduling loop's hold on the daemon's interpreter.

A standby's sentences are worked out only when someone asks (a whole engine run), so
its changes carry none, and the front forwards ExplainPending to the daemon's process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from scheduler.api.pending_queue import QueueIndex
from scheduler.engine.snapshot import PendingJob, PendingPod, PodSpec
from scheduler.k8s.published import Published, Rejected

WirePod = tuple[str, str, str, int, str | None]
"""uid, name, namespace, GPUs, GPU model: what the answers read of a pending pod."""
WireJob = tuple[str, str, int, int, float, tuple[WirePod, ...]]
"""job id, member, min member, priority, submitted at, pods."""


def to_wire(job: PendingJob) -> WireJob:
    """What ListPending and ExplainPending read of a job, in plain tuples: pickled as
    engine records (through their constructors), 50,000 jobs took about 0.7 s each way,
    in plain tuples a tenth of that."""
    return (
        job.job_id,
        job.member,
        job.min_member,
        job.priority,
        job.submitted_at,
        tuple((p.uid, p.name, p.namespace, p.spec.gpus, p.spec.gpu_model) for p in job.pods),
    )


def from_wire(wire: WireJob) -> PendingJob:
    job_id, member, min_member, priority, submitted_at, pods = wire
    return PendingJob(
        job_id,
        member,
        tuple(
            PendingPod(uid, name, namespace, PodSpec(gpus=gpus, gpu_model=model))
            for uid, name, namespace, gpus, model in pods
        ),
        min_member=min_member,
        priority=priority,
        submitted_at=submitted_at,
    )


@dataclass(frozen=True, slots=True)
class QueueChange:
    """One publication's pending queue as a change to the one sent before it."""

    full: bool
    """The whole queue: the copy starts again from nothing (a new front)."""
    jobs: tuple[WireJob, ...]
    """Jobs new or changed since the last change sent (`to_wire`)."""
    gone: tuple[str, ...]
    """Ids of jobs no longer pending."""
    sentences: Mapping[str, str] | None
    """job id -> the engine's sentence, new or changed; None: the sentences are worked
    out only when asked, by the daemon's process."""
    unsaid: tuple[str, ...]
    """Ids of jobs whose sentence is gone."""
    bound: Mapping[str, tuple[str, ...]]
    """job id -> nodes the publication's cycle bound its pods to."""
    rejected: tuple[Rejected, ...] | None
    """The pods the cycle could not hand to the engine; None: as in the last change."""


class QueueSender:
    """The daemon's side: what the front's copy holds, to send only what changed."""

    def __init__(self) -> None:
        self._published: Published | None = None
        self._jobs: dict[str, PendingJob] = {}
        self._pending: tuple[PendingJob, ...] | None = None
        self._sentences: dict[str, str] | None = None
        self._said: Mapping[str, str] | None = None
        self._rejected: tuple[Rejected, ...] | None = None

    def change(self, published: Published) -> QueueChange | None:
        """What changed since the last change sent; None when the publication is the
        same (only the policy changed)."""
        if published is self._published:
            return None
        full = self._published is None
        self._published = published
        jobs, gone = self._jobs_changed(published.snapshot.pending)
        sentences, unsaid = self._sentences_changed(published)
        rejected = published.rejected if published.rejected != self._rejected else None
        self._rejected = published.rejected
        bound: dict[str, tuple[str, ...]] = {}
        for bind in published.decisions.binds:
            bound[bind.job_id] = (*bound.get(bind.job_id, ()), bind.node)
        return QueueChange(full, jobs, gone, sentences, unsaid, bound, rejected)

    def _jobs_changed(
        self, pending: tuple[PendingJob, ...]
    ) -> tuple[tuple[WireJob, ...], tuple[str, ...]]:
        if pending is self._pending:
            return (), ()
        self._pending = pending
        last = self._jobs
        now = {job.job_id: job for job in pending}
        self._jobs = now
        changed = tuple(to_wire(job) for job_id, job in now.items() if last.get(job_id) is not job)
        return changed, tuple(job_id for job_id in last if job_id not in now)

    def _sentences_changed(
        self, published: Published
    ) -> tuple[Mapping[str, str] | None, tuple[str, ...]]:
        if published.sentences_on_request:
            self._sentences = self._said = None
            return None, ()
        said = published.decisions.explanations
        last = self._sentences
        if said is self._said and last is not None:
            return {}, ()
        # Read here if the scheduling loop has not read them yet: it reads every one of
        # them to post its events, and they are worked out once.
        now = dict(said)
        self._sentences, self._said = now, said
        if last is None:
            return now, ()
        changed = {job_id: s for job_id, s in now.items() if last.get(job_id) != s}
        return changed, tuple(job_id for job_id in last if job_id not in now)


@dataclass(frozen=True, slots=True)
class QueueCopy:
    """The front's copy of one publication's queue (never changed: `apply` makes the
    next one, so a reader keeps a consistent copy while the next arrives)."""

    index: QueueIndex = field(default_factory=lambda: QueueIndex.of(()))
    sentences: Mapping[str, str] | None = None
    bound_nodes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    rejected: tuple[Rejected, ...] = ()

    def apply(self, change: QueueChange) -> QueueCopy:
        added = [from_wire(wire) for wire in change.jobs]
        if change.full:
            index = QueueIndex.of(added)
        elif added or change.gone:
            index = self.index.changed(change.gone, added)
        else:
            index = self.index
        sentences: dict[str, str] | None = None
        if change.sentences is not None:
            sentences = {} if change.full or self.sentences is None else dict(self.sentences)
            for job_id in change.unsaid:
                sentences.pop(job_id, None)
            sentences.update(change.sentences)
        rejected = self.rejected if change.rejected is None else change.rejected
        return QueueCopy(index, sentences, change.bound, rejected)

    def bound(self, job_id: str) -> list[str]:
        return list(self.bound_nodes.get(job_id, ()))
