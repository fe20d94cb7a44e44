"""Gangs formed from the object that owns a pod: no annotation to write.

Pure: each owner kind has one function reading its object (a JSON dict as the API
server sends it) into an `Owner`, and `owner_gang` finds the gang of a pod from its
controller reference. The cache keeps the `Owner`s (scheduler/k8s/cache.py); the daemon
lists and watches each kind with its own informer, and a kind the cluster does not serve
(or fairpool may not read) is simply off.

- batch `Job`, Indexed, with `completions == parallelism`: its pods run at once, so they
  are one gang of `parallelism` pods (fewer once some have completed). Other Jobs are no
  gang: each pod is placed alone. With more completions than parallelism the indices
  run in waves, each finished one replaced by the next: independent pieces of work, not
  a gang (as a gang, the next index's pod would join running pods, and one that could
  not be placed at once would have them all deleted).
- `JobSet` (jobset.x-k8s.io): its pods belong to its child Jobs. The replicated jobs that
  start together form one gang of `replicas x pods per Job` summed; a replicated job
  that `dependsOn` another starts later, so it forms a gang with those that depend on
  the same, and under `startupPolicyOrder: InOrder` every replicated job is its own
  gang. A replicated job whose Jobs have more completions than parallelism runs in
  waves, as such a Job does, so its pods are in no gang. A Kubeflow TrainJob runs as a
  JobSet of the same name, so it is read this way.
- Kubeflow `PyTorchJob` (kubeflow.org): one gang of the sum of all replica counts, or
  its own `runPolicy.schedulingPolicy.minAvailable` when set.
- Volcano `PodGroup` (scheduling.volcano.sh): the pods it names (annotation
  `scheduling.k8s.io/group-name`) are one gang of `spec.minMember` pods.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from scheduler.k8s import labels as L

Obj = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class OwnerKind:
    """One kind fairpool reads gangs from: what it is called and where the API serves it."""

    kind: str
    group: str
    version: str
    plural: str


JOB = OwnerKind("Job", "batch", "v1", "jobs")
JOBSET = OwnerKind("JobSet", "jobset.x-k8s.io", "v1alpha2", "jobsets")
PYTORCHJOB = OwnerKind("PyTorchJob", "kubeflow.org", "v1", "pytorchjobs")
VOLCANO_POD_GROUP = OwnerKind("PodGroup", "scheduling.volcano.sh", "v1beta1", "podgroups")
SCHEDULER_PLUGINS_POD_GROUP = OwnerKind("PodGroup", "scheduling.x-k8s.io", "v1alpha1", "podgroups")
OWNER_KINDS: tuple[OwnerKind, ...] = (JOB, JOBSET, PYTORCHJOB)
"""The kinds whose objects own pods (directly or through a Job) and size their gang."""

VOLCANO_GROUP_ANNOTATIONS = ("scheduling.k8s.io/group-name", "scheduling.volcano.sh/group-name")
"""Where a pod names its Volcano PodGroup (the first is what Volcano's controllers write)."""
JOBSET_REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"


class OwnerError(ValueError):
    """An owner object whose gang cannot be read; the message names the object and field."""


@dataclass(frozen=True, slots=True)
class OwnerRef:
    """A pod's or a Job's controller reference (`metadata.ownerReferences`)."""

    kind: str
    name: str
    uid: str


@dataclass(frozen=True, slots=True)
class Owner:
    """What fairpool keeps of one owning object."""

    kind: str
    namespace: str
    name: str
    uid: str
    size: int | None = None
    """Job, PyTorchJob: pods of its gang; None for a Job that is no gang."""
    parent: OwnerRef | None = None
    """Its own controller: the JobSet that made a Job."""
    replicated_job: str = ""
    """A JobSet's Job: the replicated job it belongs to."""
    stages: Mapping[str, tuple[str, int] | None] = field(default_factory=dict)
    """A JobSet: replicated job -> (the gang's name, its size); None for one whose pods
    run in waves (no gang)."""
    error: str | None = None
    """Why its gang cannot be read (its pods wait, and say so)."""
    created_at: float = 0.0
    """Its creation time: when the job of the pods it controls was submitted (a pod it
    makes anew after a reclaim keeps its job's place in the member's queue)."""
    eviction_fails: int | None = None
    """A Job without a podFailurePolicy rule that ignores `DisruptionTarget`: the
    backoffLimit an eviction of its pods counts against (`eviction_backoff`); None for
    one with the rule, and for other kinds."""
    reclaim_record: Mapping[str, str] = field(default_factory=dict)
    """Its `fairpool.io/reclaims` and `fairpool.io/reclaimed-at` annotations: the
    evictor writes them on the object that recreates a victim's pods (`record_owner`),
    so that the new pods carry their job's reclaims (`PodInfo.with_reclaim_record`)."""


def controller_of(meta: Obj) -> OwnerRef | None:
    """The owner reference marked `controller: true`, if any."""
    for ref in meta.get("ownerReferences") or ():
        if ref.get("controller"):
            return OwnerRef(ref.get("kind", ""), ref.get("name", ""), ref.get("uid", ""))
    return None


def _count(value: object, where: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise OwnerError(f"{where}: {value!r} is not a count")
    return value


def _identity(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    return (
        meta.get("namespace", ""),
        meta.get("name", ""),
        meta.get("uid", ""),
        f"{obj.get('kind', '?')} {meta.get('namespace', '')}/{meta.get('name', '')}",
    )


def job_gang_size(job: Obj) -> int | None:
    """Pods of an Indexed Job's gang: its completions still to come; None for a Job that
    is no gang (NonIndexed, or `completions` other than `parallelism`, see the module)."""
    *_, where = _identity(job)
    spec = job.get("spec") or {}
    if spec.get("completionMode") != "Indexed":
        return None
    parallelism = _count(spec.get("parallelism"), f"{where}: spec.parallelism", 1)
    completions = _count(spec.get("completions"), f"{where}: spec.completions", parallelism)
    if completions != parallelism:
        return None
    succeeded = _count((job.get("status") or {}).get("succeeded"), f"{where}: status", 0)
    left = completions - succeeded
    return left if left > 1 else None


def eviction_backoff(job: Obj) -> int | None:
    """The backoffLimit a Job counts a reclaim's eviction against, or None when its
    podFailurePolicy ignores pods with the condition `DisruptionTarget` (which the API
    server gives an evicted pod): without such a rule the Job counts every evicted pod
    as failed, and one with backoffLimit 0 fails for good at its first reclaim
    (docs/policy.md, "Workloads a reclaim puts back in the queue")."""
    spec = job.get("spec") or {}
    policy = spec.get("podFailurePolicy")
    rules = policy.get("rules") if isinstance(policy, Mapping) else None
    for rule in rules if isinstance(rules, list) else ():
        if not isinstance(rule, Mapping) or rule.get("action") != "Ignore":
            continue
        for condition in rule.get("onPodConditions") or ():
            if (
                isinstance(condition, Mapping)
                and condition.get("type") == "DisruptionTarget"
                and condition.get("status", "True") == "True"
            ):
                return None
    limit = spec.get("backoffLimit")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else 6


def _replicated_job_pods(rjob: Obj, where: str) -> int | None:
    """Pods one replicated job runs at once: replicas x the pods of each Job; None when
    its Jobs run in waves (more completions than parallelism: see the module)."""
    replicas = _count(rjob.get("replicas"), f"{where}.replicas", 1)
    job_spec = (rjob.get("template") or {}).get("spec") or {}
    parallelism = _count(job_spec.get("parallelism"), f"{where}.template.spec.parallelism", 1)
    completions = _count(
        job_spec.get("completions"), f"{where}.template.spec.completions", parallelism
    )
    if completions > parallelism:
        return None
    return replicas * completions


def jobset_gangs(jobset: Obj) -> dict[str, tuple[str, int] | None]:
    """Replicated job name -> (gang name, gang size) of a JobSet, or None for one whose
    pods run in waves. The gang name is the JobSet's when every replicated job starts
    together, else the JobSet's followed by the first replicated job of the gang."""
    _ns, name, _uid, where = _identity(jobset)
    spec = jobset.get("spec") or {}
    in_order = (spec.get("startupPolicy") or {}).get("startupPolicyOrder") == "InOrder"
    stages: dict[tuple[str, ...], list[tuple[str, int]]] = {}
    gangs: dict[str, tuple[str, int] | None] = {}
    for i, rjob in enumerate(spec.get("replicatedJobs") or ()):
        path = f"{where}: spec.replicatedJobs[{i}]"
        rname = rjob.get("name")
        if not isinstance(rname, str) or not rname:
            raise OwnerError(f"{path}.name: missing")
        pods = _replicated_job_pods(rjob, path)
        if pods is None:
            gangs[rname] = None
            continue
        after = tuple(sorted(str(d.get("name", "")) for d in rjob.get("dependsOn") or ()))
        key = (rname,) if in_order else after
        stages.setdefault(key, []).append((rname, pods))
    if not stages and not gangs:
        raise OwnerError(f"{where}: spec.replicatedJobs: none")
    for members in stages.values():
        gang = name if len(stages) == 1 else f"{name}/{members[0][0]}"
        size = sum(pods for _, pods in members)
        for rname, _ in members:
            gangs[rname] = (gang, size)
    return gangs


_PYTORCH_REPLICAS = "pytorchReplicaSpecs"


def pytorchjob_gang_size(job: Obj) -> int:
    """Pods of a PyTorchJob's gang: its `runPolicy.schedulingPolicy.minAvailable`, else
    the sum of every replica type's `replicas` (Master and Worker)."""
    *_, where = _identity(job)
    spec = job.get("spec") or {}
    policy = (spec.get("runPolicy") or {}).get("schedulingPolicy") or {}
    available = _count(
        policy.get("minAvailable"), f"{where}: spec.runPolicy.schedulingPolicy.minAvailable", 0
    )
    if available > 0:
        return available
    replicas = spec.get(_PYTORCH_REPLICAS) or {}
    if not replicas:
        raise OwnerError(f"{where}: spec.{_PYTORCH_REPLICAS}: none")
    return sum(
        _count(r.get("replicas"), f"{where}: spec.{_PYTORCH_REPLICAS}.{kind}.replicas", 1)
        for kind, r in replicas.items()
    )


def volcano_pod_group_min_member(obj: Obj) -> tuple[str, int]:
    """`namespace/name` and spec.minMember of a Volcano PodGroup."""
    namespace, name, _uid, where = _identity(obj)
    spec = obj.get("spec") or {}
    return f"{namespace}/{name}", max(1, _count(spec.get("minMember"), f"{where}: minMember", 1))


def volcano_group_of(annotations: Obj) -> str:
    """The Volcano PodGroup a pod names, or ''."""
    for key in VOLCANO_GROUP_ANNOTATIONS:
        value = annotations.get(key)
        if value:
            return str(value)
    return ""


RECLAIM_RECORD_KEYS = (L.RECLAIMS_ANNOTATION, L.RECLAIMED_AT_ANNOTATION)


def owner_from_api(kind: str, obj: Obj) -> Owner:
    """The `Owner` of one Job, JobSet or PyTorchJob; an object whose gang cannot be read
    is kept with the error, so its pods wait with the reason instead of being placed
    one by one."""
    owner = _owner_from_api(kind, obj)
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    record = {k: str(annotations[k]) for k in RECLAIM_RECORD_KEYS if k in annotations}
    return replace(owner, reclaim_record=record) if record else owner


def record_owner(ref: OwnerRef | None, owners: Mapping[str, Owner]) -> Owner | None:
    """The object that keeps the reclaim record of a pod whose controller is `ref`: the
    one that makes its replacement, so the record outlives the pod. A JobSet's Job is
    made anew by its JobSet when it restarts, so the JobSet keeps it."""
    if ref is None:
        return None
    owner = owners.get(ref.uid)
    if owner is None:
        return None
    if owner.parent is not None and owner.parent.kind == JOBSET.kind:
        return owners.get(owner.parent.uid, owner)
    return owner


def _owner_from_api(kind: str, obj: Obj) -> Owner:
    namespace, name, uid, _where = _identity(obj)
    meta = obj.get("metadata") or {}
    try:
        if kind == JOB.kind:
            labels = meta.get("labels") or {}
            return Owner(
                kind=kind,
                namespace=namespace,
                name=name,
                uid=uid,
                size=job_gang_size(obj),
                parent=controller_of(meta),
                replicated_job=labels.get(JOBSET_REPLICATED_JOB_LABEL, ""),
                eviction_fails=eviction_backoff(obj),
            )
        if kind == JOBSET.kind:
            return Owner(
                kind=kind, namespace=namespace, name=name, uid=uid, stages=jobset_gangs(obj)
            )
        if kind == PYTORCHJOB.kind:
            return Owner(
                kind=kind, namespace=namespace, name=name, uid=uid, size=pytorchjob_gang_size(obj)
            )
    except OwnerError as exc:
        return Owner(kind=kind, namespace=namespace, name=name, uid=uid, error=str(exc))
    raise ValueError(f"not an owner kind: {kind!r}")  # a caller's mistake, not input


@dataclass(frozen=True, slots=True)
class OwnerGang:
    """A pod's gang as its owner says: the name (unique in the namespace: `kind/name`,
    which no label value can be), the size, or why the size is not known yet."""

    name: str
    kind: str
    size: int | None
    waits_for: str = ""


def owner_gang(
    ref: OwnerRef | None, owners: Mapping[str, Owner], kinds_on: frozenset[str] | set[str]
) -> OwnerGang | None:
    """The gang of a pod whose controller is `ref`, from the owners known by uid; None
    when the pod is no gang member (no owner, an owner kind that is off, a Job that is
    no gang)."""
    if ref is None or ref.kind not in kinds_on:
        return None
    owner = owners.get(ref.uid)
    label = f"{ref.kind.lower()}/{ref.name}"
    if owner is None:
        return OwnerGang(label, ref.kind, None, f"{ref.kind} {ref.name} not read yet")
    if owner.error is not None:
        return OwnerGang(label, ref.kind, None, owner.error)
    if (
        owner.kind == JOB.kind
        and owner.parent is not None
        and owner.parent.kind == JOBSET.kind
        and JOBSET.kind in kinds_on
    ):
        return _jobset_gang(owner, owners)
    if owner.size is None:
        return None
    return OwnerGang(label, ref.kind, owner.size)


def _jobset_gang(job: Owner, owners: Mapping[str, Owner]) -> OwnerGang | None:
    assert job.parent is not None
    parent = job.parent
    label = f"{parent.kind.lower()}/{parent.name}"
    jobset = owners.get(parent.uid)
    if jobset is None:
        return OwnerGang(label, parent.kind, None, f"JobSet {parent.name} not read yet")
    if jobset.error is not None:
        return OwnerGang(label, parent.kind, None, jobset.error)
    if job.replicated_job not in jobset.stages:
        reason = (
            f"Job {job.name} of JobSet {parent.name} names replicated job "
            f"{job.replicated_job!r} (label {JOBSET_REPLICATED_JOB_LABEL}), which the "
            "JobSet does not have"
        )
        return OwnerGang(label, parent.kind, None, reason)
    stage = jobset.stages[job.replicated_job]
    if stage is None:
        return None  # its Jobs run in waves: each pod alone
    gang, size = stage
    return OwnerGang(f"{parent.kind.lower()}/{gang}", parent.kind, size)
