"""Fake GPU node objects from a cluster inventory (pure, no cluster)."""

from __future__ import annotations

from policies.inventory import load_inventory, parse_inventory
from tests.controlplane.nodes import node_manifests

TINY = """
apiVersion: fairpool.io/v1
kind: ClusterInventory
spec:
  nodeGroups:
    - name: lab-h100
      owner: lab
      count: 2
      gpusPerNode: 8
      gpuModel: NVIDIA-H100-80GB-HBM3
      cpu: 96
      memoryGiB: 1024
      maxPods: 50
      topologyDomain: rack-a
      labels:
        fairpool.io/owner: somebody-else
        site: north
      taints:
        - key: dedicated
          value: lab
          effect: NoSchedule
    - name: cpu-only
      owner: uni
      count: 1
      gpusPerNode: 0
      gpuModel: none
"""


def test_one_node_per_inventory_node_named_like_the_simulator() -> None:
    inventory = parse_inventory(TINY)
    names = [m["metadata"]["name"] for m in node_manifests(inventory)]
    assert names == ["lab-h100-0", "lab-h100-1", "cpu-only-0"]


def test_labels_carry_owner_gpu_model_and_topology_and_cannot_be_overridden() -> None:
    labels = node_manifests(parse_inventory(TINY))[0]["metadata"]["labels"]
    assert labels["fairpool.io/owner"] == "lab"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["fairpool.io/topology-domain"] == "rack-a"
    assert labels["topology.kubernetes.io/zone"] == "rack-a"
    assert labels["kubernetes.io/hostname"] == "lab-h100-0"
    assert labels["site"] == "north"


def test_capacity_and_allocatable_are_the_groups_resources() -> None:
    first, _, cpu_only = node_manifests(parse_inventory(TINY))
    expected = {"nvidia.com/gpu": "8", "cpu": "96", "memory": "1024Gi", "pods": "50"}
    assert first["status"]["capacity"] == expected
    assert first["status"]["allocatable"] == expected
    assert cpu_only["status"]["allocatable"]["nvidia.com/gpu"] == "0"
    assert cpu_only["status"]["allocatable"]["memory"] == "512Gi"


def test_taints_and_the_kwok_annotation() -> None:
    first, _, cpu_only = node_manifests(parse_inventory(TINY))
    assert first["spec"]["taints"] == [{"key": "dedicated", "value": "lab", "effect": "NoSchedule"}]
    assert "taints" not in cpu_only["spec"]
    assert first["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"}


def test_default_inventory_gives_every_gpu() -> None:
    inventory = load_inventory()
    manifests = node_manifests(inventory)
    assert len(manifests) == sum(g.count for g in inventory.node_groups)
    gpus = sum(int(m["status"]["allocatable"]["nvidia.com/gpu"]) for m in manifests)
    assert gpus == inventory.total_gpus()
