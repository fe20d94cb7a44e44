"""Real workload controllers against the local control plane, with fairpool placing pods.

The Kubeflow training operator, the JobSet controller and Kueue run as built from their
Go modules (tests/controlplane/controllers.py); a test submits the object with kubectl,
the controller creates the pods, fairpool (in-process, least-privilege identity) binds
them, and kwok runs them to completion through the `fairpool.io/duration-seconds` stage.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.controlplane import ControlPlane
from tests.controlplane.build import binary_path
from tests.controlplane.controllers import (
    JOBSET,
    KUEUE,
    TRAINING_OPERATOR,
    RunningController,
    start_controller,
    stop_controller,
)
from tests.integration.test_daemon import Pool, pool, wait_until

pytestmark = pytest.mark.integration

__all__ = ["pool"]  # the fixture, shared with test_daemon.py

IMAGE = "example.invalid/train:1"
PYTORCH_JOBS = ("kubeflow.org", "v1", "pytorchjobs")
JOBSETS = ("jobset.x-k8s.io", "v1alpha2", "jobsets")
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def kubectl_apply(plane: ControlPlane, manifest: dict[str, Any]) -> str:
    command = [
        str(binary_path("kubectl", Path(plane.state.cache))),
        f"--kubeconfig={plane.kubeconfig('admin')}",
        "apply",
        "-f",
        "-",
    ]
    done = subprocess.run(
        command, input=yaml.safe_dump(manifest), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kubectl apply:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def training_operator(control_plane: ControlPlane) -> Iterator[RunningController]:
    running = start_controller(control_plane, TRAINING_OPERATOR)
    try:
        yield running
    finally:
        stop_controller(control_plane, running)


@pytest.fixture(scope="module")
def jobset_controller(control_plane: ControlPlane) -> Iterator[RunningController]:
    running = start_controller(control_plane, JOBSET)
    try:
        yield running
    finally:
        stop_controller(control_plane, running)


@pytest.fixture(scope="module")
def kueue(control_plane: ControlPlane) -> Iterator[RunningController]:
    running = start_controller(control_plane, KUEUE)
    try:
        yield running
    finally:
        stop_controller(control_plane, running)


def pytorch_job(
    name: str,
    namespace: str,
    workers: int,
    gpus: int,
    *,
    duration: float | None = None,
    restart: str = "Never",
) -> dict[str, Any]:
    """A PyTorchJob of one master and `workers` workers, `gpus` GPUs each. No gang label:
    fairpool reads the gang (all replicas) from the PyTorchJob itself. `restart`: its
    replicas' restartPolicy (with OnFailure the operator replaces evicted pods)."""

    def replica(count: int) -> dict[str, Any]:
        return {
            "replicas": count,
            "restartPolicy": restart,
            "template": pod_template("pytorch", gpus, duration),
        }

    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"pytorchReplicaSpecs": {"Master": replica(1), "Worker": replica(workers)}},
    }


def pod_template(container: str, gpus: int, duration: float | None) -> dict[str, Any]:
    annotations = {} if duration is None else {"fairpool.io/duration-seconds": str(duration)}
    return {
        "metadata": {"annotations": annotations},
        "spec": {
            "schedulerName": "fairpool",
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": container,
                    "image": IMAGE,
                    "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                }
            ],
        },
    }


def job_pods(pool: Pool, member: str, job: str) -> list[k8s.V1Pod]:
    return [
        p
        for p in pool.pods(member)
        if (p.metadata.labels or {}).get("training.kubeflow.org/job-name") == job
        and not p.metadata.deletion_timestamp
    ]


def true_conditions(
    plane: ControlPlane, kind: tuple[str, str, str], namespace: str, name: str
) -> set[str]:
    """The condition types that are True on a custom object (group, version, plural)."""
    group, version, plural = kind
    custom = k8s.CustomObjectsApi(plane.admin)
    body: dict[str, Any] = custom.get_namespaced_custom_object(
        group, version, namespace, plural, name
    )
    return {
        c["type"]
        for c in (body.get("status") or {}).get("conditions") or []
        if c.get("status") == "True"
    }


def test_pytorch_job_gang_is_bound_whole_and_succeeds(
    pool: Pool, training_operator: RunningController
) -> None:
    pool.add_member("a")
    nodes = pool.add_nodes("a", count=2, gpus=8)
    pool.daemon(pool.policy())
    kubectl_apply(
        pool.plane,
        pytorch_job("ddp", pool.ns("a"), workers=3, gpus=4, duration=3),
    )
    bound = wait_until(
        lambda: len(pool.bound("a")) == 4 and pool.bound("a"), timeout=60, what="4 pods bound"
    )
    assert set(bound.values()) <= set(nodes)
    wait_until(
        lambda: "Succeeded" in true_conditions(pool.plane, PYTORCH_JOBS, pool.ns("a"), "ddp"),
        timeout=60,
        what="PyTorchJob Succeeded",
    )


def test_pytorch_job_that_cannot_fit_binds_nothing(
    pool: Pool, training_operator: RunningController
) -> None:
    pool.add_member("a")
    pool.add_nodes("a", count=2, gpus=8)
    pool.daemon(pool.policy())
    # 5 x 4 = 20 GPUs on 16: no pod may start, or they would hold GPUs for nothing.
    kubectl_apply(pool.plane, pytorch_job("big", pool.ns("a"), workers=4, gpus=4))
    wait_until(lambda: len(job_pods(pool, "a", "big")) == 5, timeout=60, what="5 pods created")
    wait_until(lambda: pool.events("a", "FailedScheduling"), timeout=30, what="FailedScheduling")
    time.sleep(2)
    assert pool.bound("a") == {}


def test_reclaim_takes_a_borrowed_pytorch_job_back_whole(
    pool: Pool, training_operator: RunningController
) -> None:
    for member in ("a", "b"):
        pool.add_member(member)
    pool.add_nodes("a", count=1, gpus=8)
    b_nodes = pool.add_nodes("b", count=1, gpus=8)
    daemon = pool.daemon(pool.policy(grace=2))
    # A's gang of 4 x 4 GPUs needs both nodes: half of it borrows B's idle node.
    kubectl_apply(
        pool.plane, pytorch_job("wide", pool.ns("a"), workers=3, gpus=4, restart="OnFailure")
    )
    bound = wait_until(
        lambda: len(pool.bound("a")) == 4 and pool.bound("a"), timeout=60, what="A's gang bound"
    )
    assert sum(node in b_nodes for node in bound.values()) == 2
    first = {p.metadata.uid for p in job_pods(pool, "a", "wide")}

    kubectl_apply(pool.plane, pytorch_job("mine", pool.ns("b"), workers=1, gpus=4))
    wait_until(lambda: len(pool.bound("b")) == 2, timeout=60, what="B's gang bound")
    # Which node B's gang lands on is not checked: the reclaim frees both nodes (A's
    # gang goes whole), and B's pods take the GPUs the reclaimed pods leave first,
    # usually on B's own node.
    # The whole gang went, the half on A's own node too: half a gang would hold GPUs for
    # nothing. The operator makes new pods for it, and they wait whole.
    remaining = {p.metadata.uid for p in job_pods(pool, "a", "wide")}
    assert first.isdisjoint(remaining)
    assert {e.involved_object.name for e in pool.events("a", "Preempted")} >= set(bound)
    time.sleep(2)
    assert pool.bound("a") == {}
    # The reclaim is the job's, not its old pods': kept on the PyTorchJob, whose new
    # pods carry none of the victims' annotations, so the gang counts it (as the
    # simulator counts a job's reclaims across its restarts: maxReclaimsPerJob).
    custom = k8s.CustomObjectsApi(pool.plane.admin)
    group, version, plural = PYTORCH_JOBS
    owner = custom.get_namespaced_custom_object(group, version, pool.ns("a"), plural, "wide")
    assert owner["metadata"]["annotations"]["fairpool.io/reclaims"] == "1"
    assert "fairpool.io/reclaims" not in {
        k for p in job_pods(pool, "a", "wide") for k in (p.metadata.annotations or {})
    }
    waiting = wait_until(
        lambda: [j for j in daemon.snapshot().pending if j.member == "a"],
        what="A's new gang pending",
    )
    assert [(j.job_id, j.reclaims) for j in waiting] == [(f"{pool.ns('a')}/pytorchjob/wide", 1)]
    assert waiting[0].reclaimed_at is not None


# --- batch Job --------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def example_failure_policy() -> dict[str, Any]:
    """The podFailurePolicy the shipped example Jobs carry (docs/policy.md, "Workloads a
    reclaim puts back in the queue"), read from the example so this test checks it."""
    example = yaml.safe_load((EXAMPLES / "indexed-job.yaml").read_text())
    policy: dict[str, Any] = example["spec"]["podFailurePolicy"]
    return policy


def batch_job(
    name: str, namespace: str, gpus: int, duration: float | None, rule: bool
) -> dict[str, Any]:
    """A one-pod Job with backoffLimit 0, as a training gang's; `rule`: the examples'
    podFailurePolicy."""
    spec: dict[str, Any] = {"backoffLimit": 0, "template": pod_template("train", gpus, duration)}
    if rule:
        spec["podFailurePolicy"] = example_failure_policy()
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def job_status(pool: Pool, member: str, name: str) -> k8s.V1JobStatus:
    batch = k8s.BatchV1Api(pool.plane.admin)
    status: k8s.V1JobStatus = batch.read_namespaced_job(name, pool.ns(member)).status
    return status


def failed_reasons(status: k8s.V1JobStatus) -> set[str]:
    return {c.reason for c in status.conditions or () if c.type == "Failed" and c.status == "True"}


def test_a_reclaimed_job_with_the_examples_rule_waits_again_and_one_without_fails(
    pool: Pool,
) -> None:
    for member in ("a", "b"):
        pool.add_member(member)
    pool.add_nodes("b", count=2, gpus=8)
    pool.daemon(pool.policy(grace=2))
    # A owns nothing: both its Jobs borrow B's nodes, and B's two Jobs take both back.
    kubectl_apply(pool.plane, batch_job("kept", pool.ns("a"), 8, None, rule=True))
    kubectl_apply(pool.plane, batch_job("plain", pool.ns("a"), 8, None, rule=False))
    wait_until(lambda: len(pool.bound("a")) == 2, timeout=60, what="A's Jobs bound")
    for name in ("b1", "b2"):
        kubectl_apply(pool.plane, batch_job(name, pool.ns("b"), 8, 30, rule=True))
    wait_until(lambda: len(pool.bound("b")) == 2, timeout=90, what="B's Jobs bound")
    # Without the rule the eviction is a failed pod: backoffLimit 0 fails the Job for
    # good, and its work is never run again (Kubernetes' default, which the docs warn of).
    wait_until(
        lambda: "BackoffLimitExceeded" in failed_reasons(job_status(pool, "a", "plain")),
        timeout=60,
        what="the Job without the rule failed",
    )
    # With it the eviction is no failure: the Job makes a new pod, which waits.
    waiting = wait_until(
        lambda: [
            p
            for p in pool.pods("a")
            if p.metadata.name.startswith("kept-")
            and not p.metadata.deletion_timestamp
            and not p.spec.node_name
        ],
        timeout=60,
        what="the Job with the rule made a new pod",
    )
    assert len(waiting) == 1
    status = job_status(pool, "a", "kept")
    assert not failed_reasons(status) and not status.failed
    # The victim of the Job without the rule was told why its Job failed.
    events = {e.involved_object.name.split("-")[0]: e for e in pool.events("a", "Preempted")}
    assert events["kept"].type == "Normal"
    assert events["plain"].type == "Warning"
    assert "Job plain counts this eviction as a failed pod" in events["plain"].message
    # B's Jobs end after 30 s: the new pod takes the GPUs, the other Job stays failed.
    wait_until(
        lambda: any(n.startswith("kept-") for n in pool.bound("a")),
        timeout=90,
        what="the new pod bound once B's Jobs ended",
    )
    assert not any(n.startswith("plain-") for n in pool.bound("a"))


def test_a_gang_job_whose_bind_is_undone_does_not_fail(pool: Pool) -> None:
    # An Indexed Job of 3 pods, backoffLimit 0 and the examples' rule: one of its binds
    # fails (a refusal injected into fairpool's bind call), so fairpool deletes the two
    # bound pods to bind the gang whole later. Marked DisruptionTarget first, their end
    # is no failure of the Job (a plain deletion failed it for good); the Job makes them
    # anew, and the gang binds whole.
    pool.add_member("a")
    pool.add_nodes("a", count=2, gpus=4)
    daemon = pool.daemon(pool.policy(grace=2))
    binder = daemon.binder
    attempt = binder._attempt
    refused: list[str] = []

    def refuse_one(bind: Any, pod: Any, *rest: Any) -> Any:
        if not refused and pod.name.startswith("gang-") and "-1-" in pod.name:
            refused.append(pod.name)
            return "failed", "refused for the test", ""
        return attempt(bind, pod, *rest)  # the gang's batch, for its Bindings

    binder._attempt = refuse_one  # type: ignore[method-assign]
    job = batch_job("gang", pool.ns("a"), 2, None, rule=True)
    job["spec"].update({"completionMode": "Indexed", "completions": 3, "parallelism": 3})
    kubectl_apply(pool.plane, job)
    wait_until(lambda: refused, timeout=60, what="the refused bind")
    undone = wait_until(
        lambda: len(pool.events("a", "GangBindUndone")) == 2 and pool.events("a", "GangBindUndone"),
        timeout=30,
        what="the gang's two bound pods undone",
    )
    bound = wait_until(
        lambda: len(pool.bound("a")) == 3 and pool.bound("a"),
        timeout=90,
        what="the gang bound whole again",
    )
    # The refused pod waited and is bound now; the two undone ones were made anew.
    assert refused[0] in bound
    assert not {e.involved_object.name for e in undone} & set(bound)
    status = job_status(pool, "a", "gang")
    assert not failed_reasons(status) and not status.failed


# --- JobSet ---------------------------------------------------------------------------


def jobset(
    name: str, namespace: str, replicas: int, pods: int, gpus: int, duration: float | None
) -> dict[str, Any]:
    """A JobSet of `replicas` Indexed Jobs of `pods` pods each; no gang label; each Job
    with the examples' podFailurePolicy, so that a reclaim fails none of them."""
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicatedJobs": [
                {
                    "name": "workers",
                    "replicas": replicas,
                    "template": {
                        "spec": {
                            "parallelism": pods,
                            "completions": pods,
                            "backoffLimit": 0,
                            "podFailurePolicy": example_failure_policy(),
                            "template": pod_template("train", gpus, duration),
                        }
                    },
                }
            ]
        },
    }


def jobset_pods(pool: Pool, member: str, name: str) -> list[k8s.V1Pod]:
    return [
        p
        for p in pool.pods(member)
        if (p.metadata.labels or {}).get("jobset.sigs.k8s.io/jobset-name") == name
        and not p.metadata.deletion_timestamp
    ]


def test_jobset_gang_is_bound_whole_and_completes(
    pool: Pool, jobset_controller: RunningController
) -> None:
    pool.add_member("a")
    nodes = pool.add_nodes("a", count=2, gpus=8)
    pool.daemon(pool.policy())
    # 2 Jobs x 2 pods x 4 GPUs: one gang of 4 pods across the two child Jobs.
    kubectl_apply(pool.plane, jobset("js", pool.ns("a"), replicas=2, pods=2, gpus=4, duration=3))
    bound = wait_until(
        lambda: len(pool.bound("a")) == 4 and pool.bound("a"), timeout=90, what="4 pods bound"
    )
    assert set(bound.values()) <= set(nodes)
    wait_until(
        lambda: "Completed" in true_conditions(pool.plane, JOBSETS, pool.ns("a"), "js"),
        timeout=90,
        what="JobSet Completed",
    )


def test_jobset_that_cannot_fit_binds_nothing(
    pool: Pool, jobset_controller: RunningController
) -> None:
    pool.add_member("a")
    pool.add_nodes("a", count=2, gpus=8)
    pool.daemon(pool.policy())
    # 3 Jobs x 2 pods x 4 GPUs = 24 GPUs on 16.
    kubectl_apply(
        pool.plane, jobset("big", pool.ns("a"), replicas=3, pods=2, gpus=4, duration=None)
    )
    wait_until(lambda: len(jobset_pods(pool, "a", "big")) == 6, timeout=90, what="6 pods")
    wait_until(lambda: pool.events("a", "FailedScheduling"), timeout=30, what="FailedScheduling")
    time.sleep(2)
    assert pool.bound("a") == {}


def test_reclaim_takes_a_borrowed_jobset_back_whole(
    pool: Pool, jobset_controller: RunningController
) -> None:
    for member in ("a", "b"):
        pool.add_member(member)
    pool.add_nodes("a", count=1, gpus=8)
    b_nodes = pool.add_nodes("b", count=1, gpus=8)
    pool.daemon(pool.policy(grace=2))
    # A's JobSet of 2 Jobs x 2 pods x 4 GPUs needs both nodes: half of it borrows B's.
    kubectl_apply(
        pool.plane, jobset("wide", pool.ns("a"), replicas=2, pods=2, gpus=4, duration=None)
    )
    bound = wait_until(
        lambda: len(pool.bound("a")) == 4 and pool.bound("a"), timeout=90, what="A's gang bound"
    )
    assert sum(node in b_nodes for node in bound.values()) == 2
    first = {p.metadata.uid for p in jobset_pods(pool, "a", "wide")}

    kubectl_apply(
        pool.plane, jobset("mine", pool.ns("b"), replicas=1, pods=2, gpus=4, duration=None)
    )
    wait_until(lambda: len(pool.bound("b")) == 2, timeout=90, what="B's gang bound")
    # Which node B's gang lands on is not checked: the reclaim frees both nodes (A's
    # gang goes whole), and B's pods take the GPUs the reclaimed pods leave first,
    # usually on B's own node.
    # Every pod of A's gang went, those on A's own node too, in one reclaim.
    assert first.isdisjoint({p.metadata.uid for p in jobset_pods(pool, "a", "wide")})
    assert {e.involved_object.name for e in pool.events("a", "Preempted")} == set(bound)
    time.sleep(2)
    assert pool.bound("a") == {}
    # No Job failed (the rule): each makes its pods anew, and they wait whole.
    wait_until(
        lambda: len([p for p in jobset_pods(pool, "a", "wide") if not p.spec.node_name]) == 4,
        timeout=60,
        what="A's new pods",
    )
    assert "Failed" not in true_conditions(pool.plane, JOBSETS, pool.ns("a"), "wide")
    assert pool.bound("a") == {}


# --- Kueue ------------------------------------------------------------------------------


def kueue_queue(namespace: str, name: str, gpus: int) -> list[dict[str, Any]]:
    """A ResourceFlavor, a ClusterQueue of `gpus` GPUs and a LocalQueue in `namespace`."""
    api = "kueue.x-k8s.io/v1beta2"
    return [
        {"apiVersion": api, "kind": "ResourceFlavor", "metadata": {"name": name}},
        {
            "apiVersion": api,
            "kind": "ClusterQueue",
            "metadata": {"name": name},
            "spec": {
                "namespaceSelector": {},
                "resourceGroups": [
                    {
                        "coveredResources": ["nvidia.com/gpu"],
                        "flavors": [
                            {
                                "name": name,
                                "resources": [{"name": "nvidia.com/gpu", "nominalQuota": gpus}],
                            }
                        ],
                    }
                ],
            },
        },
        {
            "apiVersion": api,
            "kind": "LocalQueue",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterQueue": name},
        },
    ]


def queued_job(name: str, namespace: str, queue: str, pods: int, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": {QUEUE_LABEL: queue}},
        "spec": {
            "parallelism": pods,
            "completions": pods,
            "completionMode": "Indexed",
            "template": pod_template("train", gpus, 4),
        },
    }


def test_kueue_admits_and_fairpool_places(pool: Pool, kueue: RunningController) -> None:
    """Kueue decides when (its ClusterQueue holds 8 GPUs: one Job at a time), fairpool
    decides where (the pool has 16)."""
    pool.add_member("a")
    nodes = pool.add_nodes("a", count=2, gpus=8)
    pool.daemon(pool.policy())
    queue = pool.prefix
    for body in kueue_queue(pool.ns("a"), queue, gpus=8):
        kubectl_apply(pool.plane, body)
    batch = k8s.BatchV1Api(pool.plane.admin)
    try:
        for name in ("first", "second"):
            kubectl_apply(pool.plane, queued_job(name, pool.ns("a"), queue, pods=2, gpus=4))

        def running(name: str) -> bool:
            job = batch.read_namespaced_job(name, pool.ns("a"))
            return job.spec.suspend is False

        wait_until(lambda: running("first") or running("second"), timeout=60, what="admitted")
        first = "first" if running("first") else "second"
        second = "second" if first == "first" else "first"
        bound = wait_until(
            lambda: len(pool.bound("a")) == 2 and pool.bound("a"), timeout=60, what="2 bound"
        )
        assert set(bound.values()) <= set(nodes)
        assert all(name.startswith(first) for name in bound)
        # Over the queue's quota: Kueue keeps it suspended, so it has no pod at all.
        assert batch.read_namespaced_job(second, pool.ns("a")).spec.suspend is True
        assert not any(p.metadata.name.startswith(second) for p in pool.pods("a"))

        def complete(name: str) -> bool:
            job = batch.read_namespaced_job(name, pool.ns("a"))
            return any(
                c.type == "Complete" and c.status == "True" for c in job.status.conditions or []
            )

        wait_until(lambda: complete(first), timeout=60, what=f"{first} Complete")
        wait_until(lambda: complete(second), timeout=90, what=f"{second} admitted and Complete")
    finally:
        custom = k8s.CustomObjectsApi(pool.plane.admin)
        for plural in ("clusterqueues", "resourceflavors"):
            with contextlib.suppress(ApiException):
                custom.delete_cluster_custom_object("kueue.x-k8s.io", "v1beta2", plural, queue)
