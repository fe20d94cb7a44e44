"""The pending queue as ListPending and ExplainPending read it: one publication's pending
jobs indexed by name and member, the engine's sentence for each, and the answers scoped
to what the caller may see.

The daemon's process answers from its own books (`share_service`); the read front
answers from a copy of the queue it keeps (`queue_copy`). Both answer through the
functions here, so a caller gets the same answer from either."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from proto.fairpool.v1 import share_pb2
from scheduler.api import messages
from scheduler.api.auth import Principal, RoleKind, refuse_unknown_member
from scheduler.api.errors import abort
from scheduler.engine.snapshot import PendingJob
from scheduler.k8s.published import Rejected
from scheduler.k8s.redaction import redact_explanation

MAX_PENDING_PAGE = 5000
NO_DECISION_YET = "no scheduling decision yet: the job arrived after the latest cycle"
BOUND_BY_THE_LATEST_CYCLE = (
    "not waiting: the latest cycle bound it to {} (its binds may be on their way)"
)


@dataclass(frozen=True, slots=True)
class QueueIndex:
    """The pending jobs of one publication, indexed for lookups by name and member.

    Never changed: `changed` makes the next publication's index from this one, sharing
    what did not change, so the read front keeps its index up to date with the work of
    what changed, not of the whole queue (at 50,000 jobs a whole index took about 0.2 s,
    at every publication where a job came or went)."""

    jobs: Mapping[str, PendingJob]
    by_pod: Mapping[str, tuple[PendingJob, ...]]
    """pod name -> jobs with a pod of that name (names repeat across namespaces)."""
    by_gang: Mapping[str, tuple[PendingJob, ...]]
    """gang name -> its jobs: a gang's job id without its namespace ("job/train" of
    "ns/job/train") and its last part ("train")."""
    _order: list[tuple[tuple[PendingJob, ...], dict[str, tuple[PendingJob, ...]]]] = field(
        default_factory=list
    )
    """The jobs oldest first and by member, sorted at the first call that reads them."""

    @classmethod
    def of(cls, pending: Iterable[PendingJob]) -> QueueIndex:
        return cls({}, {}, {}).changed((), pending)

    def changed(self, gone: Iterable[str], added: Iterable[PendingJob]) -> QueueIndex:
        """This index without the jobs `gone` and with `added` (a job of an id already
        here replaces it)."""
        jobs = dict(self.jobs)
        by_pod: dict[str, tuple[PendingJob, ...]] = dict(self.by_pod)
        by_gang: dict[str, tuple[PendingJob, ...]] = dict(self.by_gang)

        def drop(job_id: str) -> None:
            old = jobs.pop(job_id, None)
            if old is None:
                return
            for index, keys in ((by_pod, {p.name for p in old.pods}), (by_gang, _gang_keys(old))):
                for key in keys:
                    kept = tuple(j for j in index.get(key, ()) if j is not old)
                    if kept:
                        index[key] = kept
                    else:
                        index.pop(key, None)

        for job_id in gone:
            drop(job_id)
        for job in added:
            drop(job.job_id)
            jobs[job.job_id] = job
            for key in {p.name for p in job.pods}:
                by_pod[key] = (*by_pod.get(key, ()), job)
            for key in _gang_keys(job):
                by_gang[key] = (*by_gang.get(key, ()), job)
        return QueueIndex(jobs, by_pod, by_gang)

    @property
    def oldest_first(self) -> tuple[PendingJob, ...]:
        return self._ordered()[0]

    @property
    def by_member(self) -> Mapping[str, tuple[PendingJob, ...]]:
        """member -> its jobs, oldest first."""
        return self._ordered()[1]

    def _ordered(self) -> tuple[tuple[PendingJob, ...], dict[str, tuple[PendingJob, ...]]]:
        if not self._order:
            ordered = tuple(sorted(self.jobs.values(), key=lambda j: (j.submitted_at, j.job_id)))
            by_member: dict[str, list[PendingJob]] = {}
            for job in ordered:
                by_member.setdefault(job.member, []).append(job)
            # Two readers may sort at once: both get the same order, one is kept.
            self._order.append((ordered, {m: tuple(js) for m, js in by_member.items()}))
        return self._order[0]

    def named(self, name: str, namespace: str) -> list[PendingJob]:
        """The jobs `name` may mean, in `namespace` when given: a job id, a pod name, a
        gang name, or `<namespace>/<pod or gang>`, the form each cut FailedScheduling
        event names (`scheduler.k8s.events.fitted`)."""
        found: list[PendingJob] = []
        for key, where in _name_forms(name, namespace):
            for job in (
                self.jobs.get(key),
                *self.by_pod.get(key, ()),
                *self.by_gang.get(key, ()),
            ):
                if (
                    job is not None
                    and job not in found
                    and (not where or any(p.namespace == where for p in job.pods))
                ):
                    found.append(job)
        return found


class QueueBook(Protocol):
    """What ListPending and ExplainPending read besides the index, from one publication
    under one policy."""

    @property
    def members(self) -> tuple[str, ...]:
        """The policy's members (one asked for that is none of them is refused, as misspelt)."""

    @property
    def now(self) -> float:
        """When the publication's cycle ran (jobs' waiting time is counted to it)."""

    @property
    def rejected(self) -> tuple[Rejected, ...]:
        """The pods the cycle could not hand to the engine."""

    @property
    def explanations(self) -> Mapping[str, str]:
        """job id -> the engine's sentence."""

    def bound(self, job_id: str) -> list[str]:
        """The nodes the cycle bound the job's pods to (none: it was not bound)."""


def _name_forms(name: str, namespace: str) -> list[tuple[str, str]]:
    """(name, namespace or "") pairs a request's name may mean: as given, and
    `<namespace>/<name>` read as such."""
    wanted = [(name, namespace)]
    head, slash, rest = name.partition("/")
    if slash and not namespace and rest:
        wanted.append((rest, head))
    return wanted


def _gang_keys(job: PendingJob) -> set[str]:
    return set(gang_names(job.job_id))


def gang_names(job_id: str) -> tuple[str, ...]:
    """What a gang's job id is found by besides itself (`QueueIndex.by_gang`)."""
    _, slash, gang = job_id.partition("/")
    return (gang, gang.rpartition("/")[2]) if slash else ()


def rejected_named(rejected: tuple[Rejected, ...], name: str, namespace: str) -> list[Rejected]:
    """`QueueIndex.named` among the pods the cycle could not hand to the engine (few)."""
    found: list[Rejected] = []
    for key, where in _name_forms(name, namespace):
        for job in rejected:
            names = (job.job_id, *job.pod_names, *gang_names(job.job_id))
            if key in names and (not where or job.namespace == where) and job not in found:
                found.append(job)
    return found


def caller_scope(
    principal: Principal, wanted: str, context: grpc.ServicerContext, everyone: bool
) -> str | None:
    """The member a request is limited to (None = all). `everyone`: the role may read
    every member's rows (admin; viewer for entitlements)."""
    if principal.kind is RoleKind.MEMBER:
        if wanted and wanted != principal.member:
            abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"role {principal.role} may only read its own member's data",
            )
        return principal.member
    if not everyone:
        abort(context, grpc.StatusCode.PERMISSION_DENIED, f"role {principal.role} may not")
    return wanted or None


def list_pending(
    index: QueueIndex,
    book: QueueBook,
    request: share_pb2.ListPendingRequest,
    principal: Principal,
    context: grpc.ServicerContext,
    policy_version: int,
) -> share_pb2.ListPendingResponse:
    """The queue, oldest first, of the member asked for, or everyone's, as far as the
    caller may see."""
    if request.limit < 0:
        abort(context, grpc.StatusCode.INVALID_ARGUMENT, "limit: must be >= 0")
    member = caller_scope(principal, request.member, context, everyone=True)
    if member is not None and member not in book.members and member not in index.by_member:
        # A misspelt member would otherwise read as an empty queue.
        refuse_unknown_member(context, principal, member, policy_version)
    limit = min(request.limit or 1000, MAX_PENDING_PAGE)
    matching = index.oldest_first if member is None else index.by_member.get(member, ())
    return share_pb2.ListPendingResponse(
        jobs=[messages.pending_job(j, book.now) for j in matching[:limit]], total=len(matching)
    )


def explain_pending(
    index: QueueIndex,
    book: QueueBook,
    request: share_pb2.ExplainPendingRequest,
    principal: Principal,
    context: grpc.ServicerContext,
) -> share_pb2.ExplainPendingResponse:
    if not request.name:
        abort(context, grpc.StatusCode.INVALID_ARGUMENT, "name: a job, gang or pod name")
    candidates = index.named(request.name, request.namespace)
    # Another member's jobs are answered exactly like jobs that do not exist, so the
    # answer does not even reveal that they are there.
    candidates = [j for j in candidates if principal.may_see_member(j.member)]
    if not candidates:
        refused = [
            r
            for r in rejected_named(book.rejected, request.name, request.namespace)
            if principal.may_see_member(r.member)
        ]
        namespaces = sorted({r.namespace for r in refused})
        if len(namespaces) == 1:
            return _explain_rejected(refused[0], principal, book)
        if namespaces:
            abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{request.name!r} is ambiguous: give a namespace ({', '.join(namespaces)})",
            )
        where = f" in namespace {request.namespace}" if request.namespace else ""
        abort(
            context,
            grpc.StatusCode.NOT_FOUND,
            f"no pending pod or gang named {request.name!r}{where} that you may see "
            "(a pod held by spec.schedulingGates is pending only once they are removed)",
        )
    if len(candidates) > 1:
        namespaces = sorted({j.pods[0].namespace for j in candidates if j.pods})
        abort(
            context,
            grpc.StatusCode.FAILED_PRECONDITION,
            f"{request.name!r} is ambiguous: give a namespace ({', '.join(namespaces)})",
        )
    job = candidates[0]
    explanation = book.explanations.get(job.job_id)
    if explanation is None:
        nodes = book.bound(job.job_id)
        explanation = (
            BOUND_BY_THE_LATEST_CYCLE.format(", ".join(sorted(set(nodes))))
            if nodes
            else NO_DECISION_YET
        )
    explanation = redact_explanation(explanation, _reader(principal))
    return share_pb2.ExplainPendingResponse(
        job=messages.pending_job(job, book.now), explanation=explanation
    )


def _explain_rejected(
    job: Rejected, principal: Principal, book: QueueBook
) -> share_pb2.ExplainPendingResponse:
    """A pod the cycle could not hand to the engine: the reason of its FailedScheduling
    event (it was answered as no pending pod at all)."""
    explanation = job.reason
    explanation = redact_explanation(explanation, _reader(principal))
    message = share_pb2.PendingJob(
        job_id=job.job_id,
        member=job.member,
        kind=share_pb2.JOB_KIND_GANG if gang_names(job.job_id) else share_pb2.JOB_KIND_POD,
        namespace=job.namespace,
        pod_names=list(job.pod_names),
        min_member=len(job.pod_names),
        gpus=job.gpus,
        gpu_model=job.gpu_model,
        waiting_seconds=max(0.0, book.now - job.submitted_at),
    )
    return share_pb2.ExplainPendingResponse(job=message, explanation=explanation)


def _reader(principal: Principal) -> str | None:
    """Whose view of the engine's sentences the principal reads (None: every member's)."""
    return principal.member if principal.kind is RoleKind.MEMBER else None
