"""Gangs formed from the objects people submit, on the local control plane with
kube-controller-manager: the real Job controller makes an Indexed Job's pods, fairpool
binds them whole (or not at all), kwok completes them and the Job turns Complete.

JobSets and PyTorchJobs: their CRDs come from the Go modules that define them
(tests/controlplane/crds.py); this test plays their controllers' part (a JobSet's child
Jobs, a PyTorchJob's pods, each owned through ownerReferences as the controllers own
them) and checks that the gang is read from the owning object.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from policies.inventory import parse_inventory
from scheduler.engine.mentions import plain
from scheduler.k8s.cache import JOBSETS, PYTORCHJOBS, VOLCANO_POD_GROUPS
from tests.controlplane import ControlPlane
from tests.controlplane.build import binary_path
from tests.controlplane.crds import crd_manifest, ensure_crd
from tests.controlplane.nodes import create_nodes, wait_nodes_ready
from tests.integration.conftest import TEST_NODE_LABEL
from tests.integration.test_daemon import H100, Pool, pool, wait_until

pytestmark = pytest.mark.integration
__all__ = ["pool"]

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
DURATION = "3"
"""Seconds kwok runs each pod before it turns it Succeeded (pod-stages.yaml)."""


@pytest.fixture(scope="module")
def workload_crds(control_plane: ControlPlane) -> list[str]:
    return [
        ensure_crd(control_plane.admin, crd_manifest(name))
        for name in ("jobsets.jobset.x-k8s.io", "pytorchjobs.kubeflow.org")
    ]


def example(name: str, namespace: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text(encoding="utf-8"))
    body["metadata"]["namespace"] = namespace
    return body


def completing(pod_template: dict[str, Any]) -> None:
    """kwok's pod-completion stage: the pod turns Succeeded DURATION seconds after it runs."""
    meta = pod_template.setdefault("metadata", {})
    meta.setdefault("annotations", {})["fairpool.io/duration-seconds"] = DURATION
    pod_template["spec"]["terminationGracePeriodSeconds"] = 1


def kubectl_apply(plane: ControlPlane, body: dict[str, Any]) -> str:
    command = [
        str(binary_path("kubectl", Path(plane.state.cache))),
        f"--kubeconfig={plane.kubeconfig('admin')}",
        "apply",
        "-f",
        "-",
    ]
    done = subprocess.run(
        command, input=yaml.safe_dump(body), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def job_condition(batch: k8s.BatchV1Api, namespace: str, name: str, kind: str) -> bool:
    job = batch.read_namespaced_job(name, namespace)
    return any(c.type == kind and c.status == "True" for c in job.status.conditions or ())


def gang_names(pool: Pool, namespace: str) -> dict[str, tuple[str, int | None]]:
    """pod name -> (gang name, size) as the daemon's cache reads it."""
    daemon = pool.daemons[0]
    return {
        p.name: (p.gang.name, p.gang.size)
        for p in daemon.cache.pods()
        if p.namespace == namespace and p.gang is not None
    }


def test_an_indexed_job_from_the_examples_is_bound_whole_and_completes(pool: Pool) -> None:
    pool.add_member("a")
    nodes = pool.add_nodes("a", count=4, gpus=8)
    daemon = pool.daemon(pool.policy(), watch_pod_groups=True)
    job = example("indexed-job.yaml", pool.ns("a"))
    completing(job["spec"]["template"])
    assert "job.batch/ddp-train created" in kubectl_apply(pool.plane, job)

    # The Job controller makes the 4 pods; fairpool binds them, one pod per node.
    bound = wait_until(lambda: len(pool.bound("a")) == 4 and pool.bound("a"), what="4 binds")
    assert sorted(bound.values()) == sorted(nodes)
    assert set(gang_names(pool, pool.ns("a")).values()) == {("job/ddp-train", 4)}
    batch = k8s.BatchV1Api(pool.plane.admin)
    wait_until(
        lambda: job_condition(batch, pool.ns("a"), "ddp-train", "Complete"),
        timeout=60,
        what="the Job Complete",
    )
    # Volcano's PodGroup CRD is not installed: that integration is off, nothing fails.
    volcano = next(i for i in daemon.informers if i.kind == VOLCANO_POD_GROUPS)
    assert volcano.forbidden and volcano.synced.is_set()


def test_an_indexed_job_that_cannot_fit_binds_nothing_until_it_fits(pool: Pool) -> None:
    pool.add_member("a")
    pool.add_nodes("a", count=3, gpus=8)
    daemon = pool.daemon(pool.policy())
    job = example("indexed-job.yaml", pool.ns("a"))
    completing(job["spec"]["template"])
    kubectl_apply(pool.plane, job)
    job_id = f"{pool.ns('a')}/job/ddp-train"
    wait_until(
        lambda: len(pool.pods("a")) == 4 and job_id in daemon.last_decisions().explanations,
        what="the gang's explanation",
    )
    assert pool.bound("a") == {}
    # Three 8-GPU nodes can never hold 4 pods of 8, and the sentence says so.
    explanation = plain(daemon.last_decisions().explanations[job_id])
    assert explanation.endswith(
        "it can never run as the cluster and policy stand: it needs 32 GPUs of one model at "
        "once, and a can hold at most 24 NVIDIA-H100-80GB-HBM3 in pods of 8: 24 on its own "
        "nodes"
    ), explanation
    # Nor is it in a's demand: a's fair share does not grow by GPUs it can never hold.
    position = next(s for s in daemon.last_decisions().shares if s.member == "a")
    assert (position.pending, position.demand, position.fair_share) == (0, 0, 0.0), position
    # A fourth node: the gang now fits, and is bound whole.
    fourth = create_nodes(
        pool.core,
        parse_inventory(
            yaml.safe_dump(
                {
                    "apiVersion": "fairpool.io/v1",
                    "kind": "ClusterInventory",
                    "spec": {
                        "nodeGroups": [
                            {
                                "name": f"{pool.prefix}-late",
                                "owner": "a",
                                "count": 1,
                                "gpusPerNode": 8,
                                "gpuModel": H100,
                            }
                        ]
                    },
                }
            )
        ),
        labels={TEST_NODE_LABEL: "true"},
    )
    wait_nodes_ready(pool.core, fourth.created, timeout=30)
    wait_until(lambda: len(pool.bound("a")) == 4, what="4 binds")
    batch = k8s.BatchV1Api(pool.plane.admin)
    wait_until(
        lambda: job_condition(batch, pool.ns("a"), "ddp-train", "Complete"),
        timeout=60,
        what="the Job Complete",
    )


def test_a_jobsets_gang_is_read_from_the_jobset(pool: Pool, workload_crds: list[str]) -> None:
    pool.add_member("a")
    pool.add_nodes("a", count=5, gpus=8)  # 4 workers of 8 GPUs, a driver of 1
    pool.daemon(pool.policy())
    namespace = pool.ns("a")
    body = example("jobset.yaml", namespace)
    custom = k8s.CustomObjectsApi(pool.plane.admin)
    jobset = custom.create_namespaced_custom_object(
        "jobset.x-k8s.io", "v1alpha2", namespace, "jobsets", body
    )
    # The JobSet controller's part: one Job per replica, owned by the JobSet and
    # labelled with its replicated job. The Job controller makes the pods.
    batch = k8s.BatchV1Api(pool.plane.admin)
    children = []
    for rjob in jobset["spec"]["replicatedJobs"]:
        for index in range(rjob["replicas"]):
            spec = copy.deepcopy(rjob["template"]["spec"])
            completing(spec["template"])
            name = f"llm-pretrain-{rjob['name']}-{index}"
            children.append(name)
            owner = {
                "apiVersion": "jobset.x-k8s.io/v1alpha2",
                "kind": "JobSet",
                "name": "llm-pretrain",
                "uid": jobset["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
            labels = {"jobset.sigs.k8s.io/replicatedjob-name": rjob["name"]}
            batch.create_namespaced_job(
                namespace,
                {
                    "metadata": {"name": name, "labels": labels, "ownerReferences": [owner]},
                    "spec": spec,
                },
            )
    bound = wait_until(lambda: len(pool.bound("a")) == 5 and pool.bound("a"), what="5 binds")
    assert len(bound) == 5
    assert set(gang_names(pool, namespace).values()) == {("jobset/llm-pretrain", 5)}
    for name in children:
        wait_until(
            lambda name=name: job_condition(batch, namespace, name, "Complete"),
            timeout=60,
            what=f"Job {name} Complete",
        )
    # The garbage collector removes the child Jobs with their JobSet.
    custom.delete_namespaced_custom_object(
        "jobset.x-k8s.io", "v1alpha2", namespace, "jobsets", "llm-pretrain"
    )
    wait_until(
        lambda: not batch.list_namespaced_job(namespace).items,
        timeout=60,
        what="child Jobs garbage-collected",
    )


def test_a_pytorchjobs_gang_waits_for_every_replica(pool: Pool, workload_crds: list[str]) -> None:
    pool.add_member("a")
    pool.add_nodes("a", count=4, gpus=8)
    daemon = pool.daemon(pool.policy())
    namespace = pool.ns("a")
    body = example("pytorchjob.yaml", namespace)
    custom = k8s.CustomObjectsApi(pool.plane.admin)
    job = custom.create_namespaced_custom_object(
        "kubeflow.org", "v1", namespace, "pytorchjobs", body
    )
    owner = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "name": "bert-finetune",
        "uid": job["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    names = ["bert-finetune-master-0"] + [f"bert-finetune-worker-{i}" for i in range(3)]
    replicas = job["spec"]["pytorchReplicaSpecs"]

    def make(name: str) -> None:
        kind = "Master" if "master" in name else "Worker"
        template = copy.deepcopy(replicas[kind]["template"])
        completing(template)
        template["metadata"]["name"] = name
        template["metadata"]["ownerReferences"] = [owner]
        template["spec"]["restartPolicy"] = "Never"
        pool.core.create_namespaced_pod(namespace, template)

    # The training operator's part: the pods, owned by the PyTorchJob; one is late.
    for name in names[:3]:
        make(name)
    job_id = f"{namespace}/pytorchjob/bert-finetune"
    said = "has 3 of its 4 pods (1 not created yet); it waits for the rest"
    wait_until(
        lambda: said in daemon.last_decisions().explanations.get(job_id, ""),
        what="the gang's explanation",
    )
    assert pool.bound("a") == {}
    make(names[3])
    wait_until(lambda: len(pool.bound("a")) == 4, what="4 binds")
    assert set(gang_names(pool, namespace).values()) == {("pytorchjob/bert-finetune", 4)}
    jobsets = next(i for i in daemon.informers if i.kind == JOBSETS)
    pytorchjobs = next(i for i in daemon.informers if i.kind == PYTORCHJOBS)
    assert not pytorchjobs.forbidden and jobsets.synced.is_set()
