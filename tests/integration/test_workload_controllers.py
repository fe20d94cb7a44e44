"""Real workload controllers against the local control plane, with fairpool placing pods.

The Kubeflow training operator, the JobSet controller and Kueue run as built from their
Go modules (tests/controlplane/controllers.py); a test submits the object with kubectl,
the controller creates the pods, fairpool (in-process, least-privilege identity) binds
them, and kwok runs them to completion through the `fairpool.io/duration-seconds` stage.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests.controlplane import ControlPlane
from tests.controlplane.build import binary_path
from tests.controlplane.controllers import (
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


def pytorch_job(
    name: str,
    namespace: str,
    workers: int,
    gpus: int,
    *,
    duration: float | None = None,
    gang_size: int | None = None,
) -> dict[str, Any]:
    """A PyTorchJob of one master and `workers` workers, `gpus` GPUs each."""
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    if gang_size is not None:
        labels["fairpool.io/gang"] = name
        annotations["fairpool.io/gang-size"] = str(gang_size)
    if duration is not None:
        annotations["fairpool.io/duration-seconds"] = str(duration)

    def replica(count: int) -> dict[str, Any]:
        return {
            "replicas": count,
            "restartPolicy": "Never",
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "schedulerName": "fairpool",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "pytorch",
                            "image": IMAGE,
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                        }
                    ],
                },
            },
        }

    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"pytorchReplicaSpecs": {"Master": replica(1), "Worker": replica(workers)}},
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
        pytorch_job("ddp", pool.ns("a"), workers=3, gpus=4, duration=3, gang_size=4),
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
    kubectl_apply(pool.plane, pytorch_job("big", pool.ns("a"), workers=4, gpus=4, gang_size=5))
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
    pool.daemon(pool.policy(grace=2))
    # A's gang of 4 x 4 GPUs needs both nodes: half of it borrows B's idle node.
    kubectl_apply(pool.plane, pytorch_job("wide", pool.ns("a"), workers=3, gpus=4, gang_size=4))
    bound = wait_until(
        lambda: len(pool.bound("a")) == 4 and pool.bound("a"), timeout=60, what="A's gang bound"
    )
    assert sum(node in b_nodes for node in bound.values()) == 2
    first = {p.metadata.uid for p in job_pods(pool, "a", "wide")}

    kubectl_apply(pool.plane, pytorch_job("mine", pool.ns("b"), workers=1, gpus=4, gang_size=2))
    wait_until(lambda: len(pool.bound("b")) == 2, timeout=60, what="B's gang bound")
    assert set(pool.bound("b").values()) == set(b_nodes)
    # The whole gang went, the half on A's own node too: half a gang would hold GPUs for
    # nothing. The operator makes new pods for it, and they wait whole.
    remaining = {p.metadata.uid for p in job_pods(pool, "a", "wide")}
    assert first.isdisjoint(remaining)
    assert {e.involved_object.name for e in pool.events("a", "Preempted")} >= {p for p in bound}
    time.sleep(2)
    assert pool.bound("a") == {}
