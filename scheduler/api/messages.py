"""Engine and store values -> protobuf messages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from policies.errors import PolicyError
from proto.fairpool.v1 import policy_pb2, share_pb2
from scheduler.api.policy_store import Origin, StoredVersion
from scheduler.engine.decisions import MemberShare
from scheduler.engine.snapshot import PendingJob

_ORIGINS = {
    Origin.BOOTSTRAP: policy_pb2.POLICY_ORIGIN_BOOTSTRAP,
    Origin.API: policy_pb2.POLICY_ORIGIN_API,
    Origin.EXTERNAL: policy_pb2.POLICY_ORIGIN_EXTERNAL,
}


def timestamp(moment: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(moment.astimezone(UTC))
    return out


def from_timestamp(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def policy_version(
    entry: StoredVersion, with_document: bool = True, member_view: str = ""
) -> policy_pb2.PolicyVersion:
    return policy_pb2.PolicyVersion(
        version=entry.version,
        author=entry.author,
        applied_at=timestamp(entry.applied_at),
        yaml=entry.document if with_document else "",
        diff=entry.diff,
        comment=entry.comment,
        origin=_ORIGINS[entry.origin],
        member_view=member_view,
    )


def violations(error: PolicyError) -> list[policy_pb2.FieldViolation]:
    return [
        policy_pb2.FieldViolation(path=i.path, line=i.line or 0, message=i.message)
        for i in error.issues
    ]


def member_share(share: MemberShare) -> share_pb2.MemberShare:
    return share_pb2.MemberShare(
        member=share.member,
        gpu_model=share.gpu_model,
        contribution=share.contribution,
        entitlement=share.entitlement,
        fair_share=share.fair_share,
        allocated=share.allocated,
        borrowed=share.borrowed,
        reclaimable=share.reclaimable,
        lent=share.lent,
        pending=share.pending,
        demand=share.demand,
    )


def pool_summaries(
    shares: Iterable[MemberShare], capacity: Mapping[str, int]
) -> list[share_pb2.PoolSummary]:
    """The shared summary per GPU model: totals only, nothing of any one member.
    `capacity`: the Ready GPUs per model, unowned nodes' included (the members'
    contributions alone left those out, and showed more allocated than there were)."""
    pools: dict[str, share_pb2.PoolSummary] = {}
    for s in shares:
        pool = pools.get(s.gpu_model)
        if pool is None:
            pool = pools[s.gpu_model] = share_pb2.PoolSummary(
                gpu_model=s.gpu_model, capacity=capacity.get(s.gpu_model, 0)
            )
        pool.allocated += s.allocated
        pool.pending += s.pending
        if s.contribution or s.allocated or s.pending or s.entitlement:
            pool.members += 1
    return [pools[k] for k in sorted(pools)]


def _gang(job: PendingJob) -> bool:
    """A gang's job, also the pods a started PodGroup still has waiting: placed one by
    one (min_member 1), they were listed as one pod ("pod of a, 2 pod(s)")."""
    return job.is_gang or len(job.pods) > 1


def pending_job(job: PendingJob, now: float) -> share_pb2.PendingJob:
    models = {p.spec.gpu_model for p in job.pods if p.spec.gpu_model}
    return share_pb2.PendingJob(
        job_id=job.job_id,
        member=job.member,
        kind=share_pb2.JOB_KIND_GANG if _gang(job) else share_pb2.JOB_KIND_POD,
        namespace=job.pods[0].namespace if job.pods else "",
        pod_names=[p.name for p in job.pods],
        min_member=job.min_member,
        gpus=job.gpus,
        gpu_model=models.pop() if len(models) == 1 else "",
        priority=job.priority,
        waiting_seconds=max(0.0, now - job.submitted_at),
    )
