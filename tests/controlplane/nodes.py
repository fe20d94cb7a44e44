"""Fake GPU nodes from the simulator's cluster inventory.

`node_manifests` is pure: one Node object (a dict the Kubernetes client accepts) per
inventory node, with capacity and allocatable already in `.status` (the API server keeps
a node's status on create, and kwok's stages keep what is there). `create_nodes` sends
them with bounded concurrency so 1,000 nodes take seconds, not minutes.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from policies.inventory import ClusterInventory, NodeGroup
from tests.controlplane.cluster import KWOK_NODE_ANNOTATION, KWOK_NODE_ANNOTATION_VALUE

OWNER_LABEL = "fairpool.io/owner"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
TOPOLOGY_DOMAIN_LABEL = "fairpool.io/topology-domain"
ZONE_LABEL = "topology.kubernetes.io/zone"
NODE_GROUP_LABEL = "fairpool.io/node-group"
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_CONCURRENCY = 16

Manifest = dict[str, Any]


def node_manifest(
    group: NodeGroup, name: str, extra_labels: Mapping[str, str] | None = None
) -> Manifest:
    """The Node object for one node of `group`.

    The group's own labels (and `extra_labels`, e.g. to find test nodes again) come
    first so they can never overwrite the labels fairpool reads ownership, GPU model and
    topology from.
    """
    labels = {
        **group.labels,
        **(extra_labels or {}),
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        NODE_GROUP_LABEL: group.name,
        OWNER_LABEL: group.owner,
        GPU_PRODUCT_LABEL: group.gpu_model,
        TOPOLOGY_DOMAIN_LABEL: group.topology_domain,
        ZONE_LABEL: group.topology_domain,
    }
    resources = {
        "cpu": str(group.cpu),
        "memory": f"{group.memory_gi_b}Gi",
        "pods": str(group.max_pods),
        GPU_RESOURCE: str(group.gpus_per_node),
    }
    spec: Manifest = {}
    if group.taints:
        spec["taints"] = [
            {"key": t.key, "value": t.value, "effect": t.effect} for t in group.taints
        ]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {KWOK_NODE_ANNOTATION: KWOK_NODE_ANNOTATION_VALUE},
        },
        "spec": spec,
        "status": {"capacity": dict(resources), "allocatable": dict(resources)},
    }


def node_manifests(
    inventory: ClusterInventory, extra_labels: Mapping[str, str] | None = None
) -> list[Manifest]:
    """Every node of the inventory, group by group, in `NodeGroup.node_names()` order."""
    return [
        node_manifest(group, name, extra_labels)
        for group in inventory.node_groups
        for name in group.node_names()
    ]


@dataclass(frozen=True)
class NodeCreation:
    created: list[str]
    existing: list[str]
    seconds: float


def _core(api: k8s.ApiClient | k8s.CoreV1Api) -> k8s.CoreV1Api:
    return api if isinstance(api, k8s.CoreV1Api) else k8s.CoreV1Api(api)


def create_node_objects(
    api: k8s.ApiClient | k8s.CoreV1Api,
    manifests: Sequence[Manifest],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> NodeCreation:
    """Create the nodes; ones that already exist are left as they are and reported."""
    workers = max(1, concurrency)
    # A client of its own with one connection per worker: urllib3 would otherwise drop
    # the connections beyond its default pool size and reconnect every request.
    configuration = copy.deepcopy(_core(api).api_client.configuration)
    configuration.connection_pool_maxsize = workers
    client = k8s.ApiClient(configuration)
    core = k8s.CoreV1Api(client)

    def create(manifest: Manifest) -> tuple[str, bool]:
        name = manifest["metadata"]["name"]
        try:
            # The client sends a dict body as it is; building V1Node objects for 1,000
            # nodes would only be serialized straight back.
            core.create_node(manifest)  # type: ignore[arg-type]
        except ApiException as exc:
            if exc.status == 409:
                return name, False
            raise
        return name, True

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(create, manifests))
    finally:
        client.close()
    return NodeCreation(
        created=[n for n, new in results if new],
        existing=[n for n, new in results if not new],
        seconds=time.monotonic() - started,
    )


def create_nodes(
    api: k8s.ApiClient | k8s.CoreV1Api,
    inventory: ClusterInventory,
    *,
    labels: Mapping[str, str] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> NodeCreation:
    """Create the inventory's nodes as kwok-managed fake GPU nodes (plus `labels`)."""
    manifests = node_manifests(inventory, labels)
    return create_node_objects(api, manifests, concurrency=concurrency)


def is_ready(node: k8s.V1Node) -> bool:
    conditions = (node.status.conditions if node.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def wait_nodes_ready(
    api: k8s.ApiClient | k8s.CoreV1Api,
    names: Iterable[str],
    *,
    timeout: float = 60.0,
) -> None:
    """Wait until every named node reports Ready (kwok's node stage ran for it)."""
    core = _core(api)
    waiting = set(names)
    deadline = time.monotonic() + timeout
    while waiting:
        listed = core.list_node(label_selector="type=kwok")
        waiting -= {n.metadata.name for n in listed.items if n.metadata and is_ready(n)}
        if not waiting:
            return
        if time.monotonic() > deadline:
            sample = ", ".join(sorted(waiting)[:5])
            raise TimeoutError(
                f"{len(waiting)} node(s) not Ready after {timeout:.0f}s (e.g. {sample}); "
                "is kwok running? see its log in the cluster directory"
            )
        time.sleep(0.3)
