"""The local control plane end to end: the stock kube-scheduler binds a GPU pod to a
kwok node, kwok runs it and completes it after its annotated duration."""

from __future__ import annotations

import time
import uuid

import pytest
from kubernetes import client as k8s
from kubernetes import watch

from policies.inventory import parse_inventory
from tests.controlplane import ControlPlane
from tests.controlplane.nodes import create_nodes, wait_nodes_ready
from tests.controlplane.objects import as_dict
from tests.integration.conftest import TEST_NODE_LABEL

pytestmark = pytest.mark.integration

DURATION_S = 3


def _inventory(group: str, gpus: int) -> str:
    return f"""
apiVersion: fairpool.io/v1
kind: ClusterInventory
spec:
  nodeGroups:
    - name: {group}
      owner: lab
      count: 1
      gpusPerNode: {gpus}
      gpuModel: NVIDIA-H100-80GB-HBM3
"""


def _gpu_pod(name: str, group: str, duration_s: int | None) -> dict[str, object]:
    annotations = {} if duration_s is None else {"fairpool.io/duration-seconds": str(duration_s)}
    return {
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "nodeSelector": {"fairpool.io/node-group": group},
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "train",
                    "image": "example.invalid/train:1",
                    "resources": {
                        "requests": {"nvidia.com/gpu": "1", "cpu": "1"},
                        "limits": {"nvidia.com/gpu": "1"},
                    },
                }
            ],
        },
    }


def test_gpu_pod_is_bound_runs_and_succeeds_after_its_duration(
    control_plane: ControlPlane, namespace: str
) -> None:
    core = k8s.CoreV1Api(control_plane.admin)
    group = f"smoke-{uuid.uuid4().hex[:6]}"
    created = create_nodes(
        core, parse_inventory(_inventory(group, 2)), labels={TEST_NODE_LABEL: "true"}
    )
    wait_nodes_ready(core, created.created, timeout=30)
    node = created.created[0]

    control_plane.start_kube_scheduler()
    try:
        core.create_namespaced_pod(namespace, _gpu_pod("timed", group, DURATION_S))  # type: ignore[arg-type]
        core.create_namespaced_pod(namespace, _gpu_pod("endless", group, None))  # type: ignore[arg-type]

        seen: dict[str, float] = {}
        bound_to: str | None = None
        stream = watch.Watch().stream(
            core.list_namespaced_pod,
            namespace,
            field_selector="metadata.name=timed",
            timeout_seconds=60,
        )
        for event in stream:
            pod = as_dict(event["object"])
            node_name = pod["spec"].get("nodeName")
            if node_name and "bound" not in seen:
                seen["bound"] = time.monotonic()
                bound_to = node_name
            phase = pod.get("status", {}).get("phase")
            if phase in ("Running", "Succeeded", "Failed") and phase not in seen:
                seen[phase] = time.monotonic()
            if phase in ("Succeeded", "Failed"):
                break
    finally:
        control_plane.stop_process("kube-scheduler")

    assert bound_to == node
    assert list(seen) == ["bound", "Running", "Succeeded"], seen
    ran_for = seen["Succeeded"] - seen["Running"]
    assert DURATION_S - 0.5 <= ran_for <= DURATION_S + 5, ran_for

    timed = as_dict(core.read_namespaced_pod("timed", namespace))
    terminated = timed["status"]["containerStatuses"][0]["state"].get("terminated")
    assert terminated is not None and terminated["exitCode"] == 0
    endless = as_dict(core.read_namespaced_pod("endless", namespace))
    assert endless["spec"]["nodeName"] == node
    assert endless["status"]["phase"] == "Running"
