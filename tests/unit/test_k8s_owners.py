"""Gangs from the objects that own pods: each kind's gang size read from its object (a
dict as the API sends it), and the cache grouping pods by their owners."""

from __future__ import annotations

from typing import Any

import pytest

from policies.loader import load_policy
from scheduler.engine.explain import Waiting, sentence
from scheduler.k8s.cache import (
    JOBS,
    JOBSETS,
    PODS,
    PYTORCHJOBS,
    VOLCANO_POD_GROUPS,
    ClusterCache,
)
from scheduler.k8s.owners import (
    Owner,
    OwnerRef,
    controller_of,
    eviction_backoff,
    job_gang_size,
    jobset_gangs,
    owner_gang,
    pytorchjob_gang_size,
    volcano_group_of,
    volcano_pod_group_min_member,
)
from tests.unit.test_k8s_cache import pod

POLICY = load_policy()


def indexed_job(
    name: str = "train",
    parallelism: int | None = 4,
    completions: int | None = 4,
    mode: str = "Indexed",
    succeeded: int = 0,
    owner: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"completionMode": mode}
    if parallelism is not None:
        spec["parallelism"] = parallelism
    if completions is not None:
        spec["completions"] = completions
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "physics",
        "uid": f"uid-job-{name}",
        "labels": labels or {},
    }
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {"kind": "Job", "metadata": meta, "spec": spec, "status": {"succeeded": succeeded}}


def owned_by(kind: str, name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": "x/v1", "kind": kind, "name": name, "uid": uid, "controller": True}


def replicated(name: str, replicas: int, parallelism: int, **extra: Any) -> dict[str, Any]:
    job = {"spec": {"parallelism": parallelism, "completions": parallelism}}
    return {"name": name, "replicas": replicas, "template": job, **extra}


def jobset(name: str, *rjobs: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "kind": "JobSet",
        "metadata": {"name": name, "namespace": "physics", "uid": f"uid-js-{name}"},
        "spec": {"replicatedJobs": list(rjobs), **spec},
    }


def pytorchjob(name: str = "bert", **spec: Any) -> dict[str, Any]:
    return {
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": "physics", "uid": f"uid-pt-{name}"},
        "spec": spec,
    }


# --- each kind's gang size --------------------------------------------------------------


@pytest.mark.parametrize(
    ("parallelism", "completions", "mode", "succeeded", "size"),
    [
        (4, 4, "Indexed", 0, 4),
        (4, 4, "Indexed", 2, 2),  # two have completed: the two left are the gang
        (4, 8, "Indexed", 0, None),  # completions > parallelism: waves, each pod alone
        (4, 6, "Indexed", 4, None),
        (4, 2, "Indexed", 0, None),  # completions < parallelism: no gang
        (4, 4, "NonIndexed", 0, None),
        (1, 1, "Indexed", 0, None),  # one pod is no gang
        (None, None, "Indexed", 0, None),  # parallelism defaults to 1
        (3, None, "Indexed", 0, 3),  # completions default to parallelism
    ],
)
def test_indexed_job_gang_is_its_parallelism(
    parallelism: int | None, completions: int | None, mode: str, succeeded: int, size: int | None
) -> None:
    job = indexed_job(parallelism=parallelism, completions=completions, mode=mode)
    job["status"]["succeeded"] = succeeded
    assert job_gang_size(job) == size


def test_a_job_with_an_unreadable_count_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"Job physics/train: spec.parallelism: 'four'"):
        job_gang_size(indexed_job(parallelism="four"))  # type: ignore[arg-type]


def test_jobset_replicated_jobs_that_start_together_are_one_gang() -> None:
    gangs = jobset_gangs(jobset("llm", replicated("leader", 1, 1), replicated("workers", 2, 4)))
    assert gangs == {"leader": ("llm", 9), "workers": ("llm", 9)}


def test_jobset_depends_on_starts_a_later_gang() -> None:
    # A Kubeflow TrainJob's JobSet: the initializers run first, then the trainer nodes.
    gangs = jobset_gangs(
        jobset(
            "tj",
            replicated("dataset-initializer", 1, 1),
            replicated("model-initializer", 1, 1),
            replicated("node", 4, 1, dependsOn=[{"name": "model-initializer"}]),
        )
    )
    assert gangs == {
        "dataset-initializer": ("tj/dataset-initializer", 2),
        "model-initializer": ("tj/dataset-initializer", 2),
        "node": ("tj/node", 4),
    }


def test_jobset_in_order_startup_makes_each_replicated_job_a_gang() -> None:
    gangs = jobset_gangs(
        jobset(
            "io",
            replicated("driver", 1, 1),
            replicated("workers", 3, 2),
            startupPolicy={"startupPolicyOrder": "InOrder"},
        )
    )
    assert gangs == {"driver": ("io/driver", 1), "workers": ("io/workers", 6)}


def test_jobset_replicated_job_in_waves_is_no_gang() -> None:
    # "shards" runs 10 completions 2 at a time: each finished pod is replaced by the next
    # index, so its pods are placed alone, and the gang that starts with it leaves them
    # out. Fewer completions than parallelism run at once: a gang of the completions.
    waves = replicated("shards", 1, 2)
    waves["template"]["spec"]["completions"] = 10
    few = replicated("eval", 2, 4)
    few["template"]["spec"]["completions"] = 3
    gangs = jobset_gangs(jobset("prep", replicated("leader", 1, 1), waves, few))
    assert gangs == {"leader": ("prep", 7), "eval": ("prep", 7), "shards": None}
    assert jobset_gangs(jobset("only", waves)) == {"shards": None}


def test_owner_gang_of_a_jobset_job_in_waves_is_none() -> None:
    owners = {
        "j": Owner(
            "Job", "ns", "prep-shards-0", "j", None, OwnerRef("JobSet", "prep", "s"), "shards"
        ),
        "s": Owner("JobSet", "ns", "prep", "s", stages={"shards": None, "leader": ("prep", 1)}),
    }
    assert owner_gang(OwnerRef("Job", "prep-shards-0", "j"), owners, {"Job", "JobSet"}) is None


def test_jobset_without_replicated_jobs_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"JobSet physics/empty: spec\.replicatedJobs: none"):
        jobset_gangs(jobset("empty"))


def test_pytorchjob_gang_is_the_sum_of_its_replicas() -> None:
    job = pytorchjob(
        pytorchReplicaSpecs={"Master": {"replicas": 1}, "Worker": {"replicas": 3}},
    )
    assert pytorchjob_gang_size(job) == 4


def test_pytorchjob_min_available_wins() -> None:
    job = pytorchjob(
        pytorchReplicaSpecs={"Master": {"replicas": 1}, "Worker": {"replicas": 7}},
        runPolicy={"schedulingPolicy": {"minAvailable": 5}},
    )
    assert pytorchjob_gang_size(job) == 5


def test_pytorchjob_without_replicas_is_an_error() -> None:
    with pytest.raises(ValueError, match="pytorchReplicaSpecs: none"):
        pytorchjob_gang_size(pytorchjob())


def test_volcano_pod_group_and_the_pod_annotation() -> None:
    group = {"metadata": {"name": "pg", "namespace": "bio"}, "spec": {"minMember": 6}}
    assert volcano_pod_group_min_member(group) == ("bio/pg", 6)
    assert volcano_group_of({"scheduling.k8s.io/group-name": "pg"}) == "pg"
    assert volcano_group_of({}) == ""


def test_controller_reference_is_the_one_marked_controller() -> None:
    meta = {
        "ownerReferences": [
            {"kind": "ConfigMap", "name": "c", "uid": "1"},
            {"kind": "Job", "name": "train", "uid": "2", "controller": True},
        ]
    }
    assert controller_of(meta) == OwnerRef("Job", "train", "2")
    assert controller_of({}) is None


def test_owner_gang_follows_a_job_to_its_jobset() -> None:
    owners = {
        "j": Owner("Job", "ns", "llm-workers-0", "j", 4, OwnerRef("JobSet", "llm", "s"), "workers"),
        "s": Owner("JobSet", "ns", "llm", "s", stages={"workers": ("llm", 8)}),
    }
    ref = OwnerRef("Job", "llm-workers-0", "j")
    gang = owner_gang(ref, owners, {"Job", "JobSet"})
    assert gang is not None and (gang.name, gang.size) == ("jobset/llm", 8)
    # JobSets off (CRD not installed): the Indexed Job alone is the gang.
    gang = owner_gang(ref, owners, {"Job"})
    assert gang is not None and (gang.name, gang.size) == ("job/llm-workers-0", 4)
    # Jobs off too: no gang at all.
    assert owner_gang(ref, owners, set()) is None


def test_owner_gang_waits_for_an_owner_not_read_yet() -> None:
    gang = owner_gang(OwnerRef("PyTorchJob", "bert", "p"), {}, {"PyTorchJob"})
    assert gang is not None and gang.size is None
    assert gang.waits_for == "PyTorchJob bert not read yet"


# --- the cache: pods grouped by their owners --------------------------------------------


def job_pod(name: str, job: str = "train", **labels: str) -> dict[str, Any]:
    body = pod(name, labels=labels)
    body["metadata"]["ownerReferences"] = [owned_by("Job", job, f"uid-job-{job}")]
    return body


def test_an_indexed_jobs_pods_are_one_gang() -> None:
    cache = ClusterCache()
    cache.replace(JOBS, [indexed_job()])
    cache.replace(PODS, [job_pod(f"train-{i}") for i in range(4)])
    (job,) = cache.view(POLICY).snapshot.pending
    assert (job.job_id, job.min_member, len(job.pods)) == ("physics/job/train", 4, 4)


def test_a_pod_whose_deletion_a_relist_missed_is_forgotten_by_the_gangs_too() -> None:
    # train-3 was deleted while the watch was down: only the relist tells, by leaving it
    # out. The next change of the Job regroups the pods without it.
    cache = ClusterCache()
    cache.replace(JOBS, [indexed_job()])
    cache.replace(PODS, [job_pod(f"train-{i}") for i in range(4)])
    cache.replace(PODS, [job_pod(f"train-{i}") for i in range(3)])
    cache.apply(JOBS, "MODIFIED", indexed_job())
    (job,) = cache.view(POLICY).snapshot.pending
    assert (job.min_member, len(job.pods)) == (4, 3)
    assert len(cache.pods()) == 3


def test_a_pod_seen_before_its_job_waits_then_joins_the_gang() -> None:
    cache = ClusterCache()
    cache.replace(JOBS, [])
    cache.replace(PODS, [job_pod("train-0"), job_pod("train-1")])
    view = cache.view(POLICY)
    assert view.snapshot.pending == ()
    (waiting,) = view.unschedulable
    assert "Job train not read yet" in waiting.reason
    cache.apply(JOBS, "ADDED", indexed_job(parallelism=2, completions=2))
    (job,) = cache.view(POLICY).snapshot.pending
    assert (job.job_id, job.min_member) == ("physics/job/train", 2)
    assert cache.pod("uid-train-0") is not None
    assert cache.pod("uid-train-0").gang.name == "job/train"  # type: ignore[union-attr]


def test_jobs_off_means_the_pods_are_placed_one_by_one() -> None:
    cache = ClusterCache()
    cache.replace(JOBS, [indexed_job()])
    assert cache.reads(JOBS)
    cache.unavailable(JOBS)
    assert not cache.reads(JOBS)
    cache.replace(PODS, [job_pod("train-0"), job_pod("train-1")])
    pending = cache.view(POLICY).snapshot.pending
    assert sorted(j.job_id for j in pending) == ["uid-train-0", "uid-train-1"]


def test_a_jobs_gang_is_missing_pods_and_explain_says_how_many() -> None:
    cache = ClusterCache()
    cache.replace(JOBS, [indexed_job()])
    cache.replace(PODS, [job_pod("train-0"), job_pod("train-1"), job_pod("train-2")])
    (job,) = cache.view(POLICY).snapshot.pending
    assert (job.min_member, len(job.pods)) == (4, 3)
    text = sentence(job, Waiting("incomplete"), None, 0, 0.0, "")
    assert "1 not created yet" in text and "3 of its 4 pods" in text


def test_the_explicit_label_wins_over_the_owner() -> None:
    cache = ClusterCache()
    cache.replace(JOBS, [indexed_job()])
    labelled = job_pod("train-0", **{"fairpool.io/gang": "mine"})
    labelled["metadata"]["annotations"]["fairpool.io/gang-size"] = "1"
    cache.replace(PODS, [labelled])
    (job,) = cache.view(POLICY).snapshot.pending
    assert (job.job_id, job.min_member) == ("physics/mine", 1)


def test_a_jobset_gang_spans_its_jobs() -> None:
    cache = ClusterCache()
    cache.replace(JOBSETS, [jobset("llm", replicated("workers", 2, 2))])
    jobs = [
        indexed_job(
            f"llm-workers-{i}",
            parallelism=2,
            completions=2,
            owner=owned_by("JobSet", "llm", "uid-js-llm"),
            labels={"jobset.sigs.k8s.io/replicatedjob-name": "workers"},
        )
        for i in range(2)
    ]
    cache.replace(JOBS, jobs)
    pods = [job_pod(f"llm-workers-{i}-{k}", f"llm-workers-{i}") for i in (0, 1) for k in (0, 1)]
    cache.replace(PODS, pods)
    (job,) = cache.view(POLICY).snapshot.pending
    assert (job.job_id, job.min_member, len(job.pods)) == ("physics/jobset/llm", 4, 4)
    # The JobSet is deleted (its CRD removed, say): each Indexed Job is a gang again.
    cache.apply(JOBSETS, "DELETED", jobset("llm"))
    cache.unavailable(JOBSETS)
    pending = cache.view(POLICY).snapshot.pending
    assert sorted((j.job_id, j.min_member) for j in pending) == [
        ("physics/job/llm-workers-0", 2),
        ("physics/job/llm-workers-1", 2),
    ]


def test_a_pytorchjobs_pods_are_one_gang_of_every_replica() -> None:
    cache = ClusterCache()
    spec = {"pytorchReplicaSpecs": {"Master": {"replicas": 1}, "Worker": {"replicas": 2}}}
    cache.replace(PYTORCHJOBS, [pytorchjob(**spec)])
    pods = []
    for name in ("bert-master-0", "bert-worker-0", "bert-worker-1"):
        body = pod(name)
        body["metadata"]["ownerReferences"] = [owned_by("PyTorchJob", "bert", "uid-pt-bert")]
        pods.append(body)
    cache.replace(PODS, pods)
    (job,) = cache.view(POLICY).snapshot.pending
    assert (job.job_id, job.min_member, len(job.pods)) == ("physics/pytorchjob/bert", 3, 3)


def test_a_volcano_pod_group_sizes_its_gang() -> None:
    cache = ClusterCache()
    cache.replace(
        VOLCANO_POD_GROUPS,
        [{"metadata": {"name": "pg", "namespace": "physics"}, "spec": {"minMember": 2}}],
    )
    group = {"scheduling.k8s.io/group-name": "pg"}
    cache.replace(PODS, [pod("a", annotations=group), pod("b", annotations=group)])
    (job,) = cache.view(POLICY).snapshot.pending
    assert (job.job_id, job.min_member) == ("physics/pg", 2)


def test_a_volcano_pod_group_with_an_unreadable_size_makes_its_pods_wait() -> None:
    cache = ClusterCache()
    cache.replace(
        VOLCANO_POD_GROUPS,
        [{"metadata": {"name": "pg", "namespace": "physics"}, "spec": {"minMember": "two"}}],
    )
    group = {"scheduling.k8s.io/group-name": "pg"}
    cache.replace(PODS, [pod("a", annotations=group)])
    view = cache.view(POLICY)
    assert view.snapshot.pending == ()
    (waiting,) = view.unschedulable
    assert "Volcano PodGroup pg: spec.minMember is no count" in waiting.reason


# --- the reclaim record on the object that recreates a victim's pods ----------------------


def _recorded(body: dict[str, Any], reclaims: str, at: str) -> dict[str, Any]:
    body["metadata"]["annotations"] = {
        "fairpool.io/reclaims": reclaims,
        "fairpool.io/reclaimed-at": at,
    }
    return body


def test_pods_a_job_recreates_carry_its_reclaim_record() -> None:
    """The evictor writes a victim's job's reclaims on its Job; the Job's new pods carry
    none of their own, and their job counts from the Job's record, as the simulator
    counts a job's reclaims across its restarts."""
    cache = ClusterCache()
    cache.replace(JOBS, [_recorded(indexed_job(), "2", "2026-10-05T10:00:00Z")])
    cache.replace(PODS, [job_pod(f"train-{i}") for i in range(4)])
    (job,) = cache.view(POLICY).snapshot.pending
    assert (job.reclaims, job.reclaimed_at) == (2, 1791194400.0)
    # A pod that says more (written on it before the Job's record was read) keeps it.
    own = _recorded(job_pod("train-0"), "3", "2026-10-05T11:00:00Z")
    cache.apply(PODS, "MODIFIED", own)
    (job,) = cache.view(POLICY).snapshot.pending
    assert (job.reclaims, job.reclaimed_at) == (3, 1791198000.0)


def test_a_plain_jobs_pod_and_a_jobset_jobs_pod_carry_the_record_too() -> None:
    """A Job that is no gang (its pod is a job of its own, named by its uid) keeps the
    record all the same; a JobSet's Job is made anew when the JobSet restarts, so the
    JobSet keeps it."""
    cache = ClusterCache()
    single = _recorded(indexed_job("solo", 1, 1, "NonIndexed"), "1", "2026-10-05T10:00:00Z")
    cache.replace(JOBS, [single])
    cache.replace(PODS, [job_pod("solo-x", job="solo")])
    (job,) = cache.view(POLICY).snapshot.pending
    assert (job.job_id, job.reclaims) == ("uid-solo-x", 1)

    cache = ClusterCache()
    js = _recorded(jobset("run", replicated("workers", 2, 2)), "3", "2026-10-05T10:00:00Z")
    child = [
        indexed_job(
            f"run-workers-{i}",
            2,
            2,
            owner=owned_by("JobSet", "run", "uid-js-run"),
            labels={"jobset.sigs.k8s.io/replicatedjob-name": "workers"},
        )
        for i in range(2)
    ]
    cache.replace(JOBSETS, [js])
    cache.replace(JOBS, child)
    cache.replace(
        PODS, [job_pod(f"w-{i}-{k}", job=f"run-workers-{i}") for i in range(2) for k in range(2)]
    )
    (job,) = cache.view(POLICY).snapshot.pending
    assert (job.min_member, job.reclaims) == (4, 3)
    owner = cache.record_of(cache.pods()[0])
    assert owner is not None and (owner.kind, owner.name) == ("JobSet", "run")


def test_pods_a_job_makes_anew_keep_its_place_in_the_queue() -> None:
    """A job was submitted when its Job was created: pods the Job makes after a reclaim
    (created an hour later) keep that time, so the job keeps its place in its member's
    queue, as the simulator re-queues a reclaimed job with its submission time."""
    cache = ClusterCache()
    job = indexed_job()
    job["metadata"]["creationTimestamp"] = "2026-10-05T10:00:00Z"
    cache.replace(JOBS, [job])
    later = [job_pod(f"train-{i}") for i in range(4)]
    for body in later:
        body["metadata"]["creationTimestamp"] = "2026-10-05T11:00:00Z"
    cache.replace(PODS, later)
    (pending,) = cache.view(POLICY).snapshot.pending
    assert pending.submitted_at == 1791194400.0
    assert {p.created_at for p in pending.pods} == {1791198000.0}
    # A pod no controller of a known kind owns was submitted when it was created.
    alone = pod("alone")
    alone["metadata"]["creationTimestamp"] = "2026-10-05T11:00:00Z"
    cache.replace(PODS, [alone])
    (pending,) = cache.view(POLICY).snapshot.pending
    assert pending.submitted_at == 1791198000.0


def test_a_job_without_the_disruption_rule_counts_an_eviction_against_its_backoff_limit() -> None:
    # docs/policy.md, "Workloads a reclaim puts back in the queue": the API server gives
    # an evicted pod DisruptionTarget, which only such a rule keeps off backoffLimit.
    plain = indexed_job()
    assert eviction_backoff(plain) == 6  # Kubernetes' default backoffLimit
    plain["spec"]["backoffLimit"] = 0
    assert eviction_backoff(plain) == 0
    ignored = {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    kept = indexed_job()
    kept["spec"]["podFailurePolicy"] = {"rules": [ignored]}
    assert eviction_backoff(kept) is None
    # Another condition, another action, or the condition False do not keep it off.
    for rule in (
        {"action": "Ignore", "onPodConditions": [{"type": "ConfigIssue"}]},
        {"action": "Count", "onPodConditions": [{"type": "DisruptionTarget"}]},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "False"}]},
    ):
        other = indexed_job()
        other["spec"]["podFailurePolicy"] = {"rules": [rule]}
        assert eviction_backoff(other) == 6, rule
    # Read into the Job's Owner, which the evictor's event reads (only a Job's).
    cache = ClusterCache()
    plain["spec"]["backoffLimit"] = 0
    cache.replace(JOBS, [plain])
    cache.replace(PODS, [job_pod("train-0")])
    owner = cache.job_of(cache.pods()[0])
    assert owner is not None and owner.eviction_fails == 0
    cache.replace(JOBS, [kept])
    owner = cache.job_of(cache.pods()[0])
    assert owner is not None and owner.eviction_fails is None
    # A pod no Job controls has none.
    cache.replace(PODS, [pod("alone")])
    assert cache.job_of(cache.pods()[0]) is None
