"""Fake GPU nodes and identities on the real control plane."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from policies.inventory import parse_inventory
from tests.controlplane import ControlPlane
from tests.controlplane.namespaces import remove_namespace
from tests.controlplane.nodes import create_nodes, is_ready, wait_nodes_ready
from tests.controlplane.objects import as_dict
from tests.integration.conftest import TEST_NODE_LABEL

pytestmark = pytest.mark.integration


def test_inventory_nodes_have_labels_allocatable_and_are_ready(
    control_plane: ControlPlane, namespace: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    inventory = parse_inventory(f"""
apiVersion: fairpool.io/v1
kind: ClusterInventory
spec:
  nodeGroups:
    - name: north-{tag}
      owner: uni-north
      count: 3
      gpusPerNode: 8
      gpuModel: NVIDIA-H100-80GB-HBM3
      cpu: 96
      memoryGiB: 1024
      topologyDomain: rack-a
      taints: [{{key: dedicated, value: north, effect: NoSchedule}}]
    - name: bio-{tag}
      owner: lab-bio
      count: 2
      gpusPerNode: 4
      gpuModel: NVIDIA-A100-SXM4-80GB
      maxPods: 40
      topologyDomain: rack-c
""")
    core = k8s.CoreV1Api(control_plane.admin)
    result = create_nodes(core, inventory, labels={TEST_NODE_LABEL: "true"})
    assert sorted(result.created) == sorted(
        [f"north-{tag}-{i}" for i in range(3)] + [f"bio-{tag}-{i}" for i in range(2)]
    )
    wait_nodes_ready(core, result.created, timeout=30)

    north_node = core.read_node(f"north-{tag}-2")
    assert is_ready(north_node)
    north = as_dict(north_node)
    assert north["metadata"]["labels"]["fairpool.io/owner"] == "uni-north"
    assert north["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert north["metadata"]["labels"]["fairpool.io/topology-domain"] == "rack-a"
    assert north["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert north["status"]["allocatable"]["memory"] == "1Ti"
    assert north["status"]["capacity"]["cpu"] == "96"
    assert [(t["key"], t["effect"]) for t in north["spec"]["taints"]] == [
        ("dedicated", "NoSchedule")
    ]

    bio = as_dict(core.read_node(f"bio-{tag}-1"))
    assert bio["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    assert bio["status"]["allocatable"]["pods"] == "40"
    assert bio["metadata"]["labels"]["topology.kubernetes.io/zone"] == "rack-c"

    again = create_nodes(core, inventory, labels={TEST_NODE_LABEL: "true"})
    assert again.created == [] and len(again.existing) == 5


def test_scheduler_identity_reads_and_binds_but_cannot_write_objects(
    control_plane: ControlPlane, namespace: str
) -> None:
    scheduler = k8s.CoreV1Api(control_plane.scheduler)
    scheduler.list_node()
    scheduler.list_pod_for_all_namespaces()
    k8s.SchedulingV1Api(control_plane.scheduler).list_priority_class()
    k8s.CoordinationV1Api(control_plane.scheduler).create_namespaced_lease(
        namespace,
        {"metadata": {"name": "fairpool"}, "spec": {"holderIdentity": "me"}},  # type: ignore[arg-type]
    )
    with pytest.raises(ApiException) as denied:
        scheduler.create_namespaced_pod(
            namespace,
            {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}},  # type: ignore[arg-type]
        )
    assert denied.value.status == 403
    with pytest.raises(ApiException) as denied:
        scheduler.delete_collection_node(label_selector=TEST_NODE_LABEL)
    assert denied.value.status == 403


def test_scheduler_identity_binds_annotates_reports_and_evicts(
    control_plane: ControlPlane, namespace: str
) -> None:
    admin = k8s.CoreV1Api(control_plane.admin)
    scheduler = k8s.CoreV1Api(control_plane.scheduler)
    group = f"bind-{uuid.uuid4().hex[:6]}"
    created = create_nodes(
        admin,
        parse_inventory(f"""
apiVersion: fairpool.io/v1
kind: ClusterInventory
spec:
  nodeGroups: [{{name: {group}, owner: lab, count: 1, gpusPerNode: 4, gpuModel: T4}}]
"""),
        labels={TEST_NODE_LABEL: "true"},
    )
    node = created.created[0]
    wait_nodes_ready(admin, [node], timeout=30)
    pod = {
        "metadata": {"name": "job-0"},
        "spec": {
            "schedulerName": "fairpool",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "c", "image": "i", "resources": {"limits": {"nvidia.com/gpu": "2"}}}
            ],
        },
    }
    admin.create_namespaced_pod(namespace, pod)  # type: ignore[arg-type]

    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "job-0"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }
    # The generated client cannot read the Status a binding returns into V1Binding.
    scheduler.create_namespaced_pod_binding(
        "job-0",
        namespace,
        binding,  # type: ignore[arg-type]
        _preload_content=False,
    )
    scheduler.patch_namespaced_pod(
        "job-0", namespace, {"metadata": {"annotations": {"fairpool.io/member": "lab"}}}
    )
    # The client turns eventTime into a datetime and writes it with isoformat(), which
    # drops a zero microsecond part that the API's MicroTime requires.
    now = dt.datetime.now(dt.UTC)
    event_time = now.replace(microsecond=now.microsecond or 1).isoformat()
    k8s.EventsV1Api(control_plane.scheduler).create_namespaced_event(
        namespace,
        {  # type: ignore[arg-type]
            "metadata": {"generateName": "job-0-"},
            "eventTime": event_time,
            "reportingController": "fairpool.io/scheduler",
            "reportingInstance": "fairpool-0",
            "action": "Binding",
            "reason": "Scheduled",
            "type": "Normal",
            "regarding": {"kind": "Pod", "namespace": namespace, "name": "job-0"},
        },
    )
    deadline = time.monotonic() + 30
    while as_dict(admin.read_namespaced_pod("job-0", namespace))["status"].get("phase") != (
        "Running"
    ):
        assert time.monotonic() < deadline, "bound pod never ran"
        time.sleep(0.2)
    bound = as_dict(admin.read_namespaced_pod("job-0", namespace))
    assert bound["spec"]["nodeName"] == node
    assert bound["metadata"]["annotations"]["fairpool.io/member"] == "lab"

    scheduler.create_namespaced_pod_eviction(
        "job-0",
        namespace,
        {"metadata": {"name": "job-0", "namespace": namespace}},  # type: ignore[arg-type]
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            admin.read_namespaced_pod("job-0", namespace)
        except ApiException as exc:
            assert exc.status == 404
            break
        assert time.monotonic() < deadline, "evicted pod was never removed"
        time.sleep(0.2)


def test_namespace_with_a_running_pod_is_removed_by_the_namespace_controller(
    control_plane: ControlPlane, namespace: str
) -> None:
    core = k8s.CoreV1Api(control_plane.admin)
    name = f"removal-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})  # type: ignore[arg-type]
    created = create_nodes(
        core,
        parse_inventory(f"""
apiVersion: fairpool.io/v1
kind: ClusterInventory
spec:
  nodeGroups: [{{name: {name}, owner: lab, count: 1, gpusPerNode: 1, gpuModel: T4}}]
"""),
        labels={TEST_NODE_LABEL: "true"},
    )
    pod = {
        "metadata": {"name": "p"},
        "spec": {"nodeName": created.created[0], "containers": [{"name": "c", "image": "i"}]},
    }
    core.create_namespaced_pod(name, pod)  # type: ignore[arg-type]

    remove_namespace(core, name)

    # kube-controller-manager's namespace controller finalizes it once it is empty.
    deadline = time.monotonic() + 60
    while True:
        try:
            core.read_namespace(name)
        except ApiException as exc:
            assert exc.status == 404
            break
        assert time.monotonic() < deadline, f"namespace {name} was never removed"
        time.sleep(0.2)
