"""The daemon's view of the cluster at scale: what a cycle costs before the engine runs.

Every cycle the daemon turns its cache of API objects into the engine's snapshot
(`ClusterCache.view`): running pods, pending jobs, nominations. A cache is filled
with N nodes of 8 GPUs (the demo policy's three namespaced members owning them in turn),
4 running 1-GPU pods per node and P pending 1-GPU pods, as informers would fill it. Timed
(best of three):
- cold: the first view, every pod converted (each view cost this before the
  conversions were kept between views, scheduler/k8s/converted.py);
- steady: a view after 1 % of the pending pods changed (the daemon's usual cycle: a few
  pods arrive, bind or are deleted between two cycles);
- engine: one `schedule` on that snapshot, for scale: the daemon's cycle before any
  API call is steady view + engine.
All with the daemon's interpreter settings (`scheduler.k8s.runtime`): its garbage
collector thresholds, and what the informers listed frozen out of the collector.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from policies.loader import load_policy
from scheduler.cli.tables import print_table
from scheduler.engine import schedule
from scheduler.k8s import runtime
from scheduler.k8s.cache import NODES, PODS, ClusterCache

MEMBERS = ("physics", "lab-bio", "uni-north")
MODEL = "NVIDIA-A100-SXM4-80GB"
CASES = ((1_000, 10_000), (5_000, 50_000), (10_000, 100_000))
RUNNING_PER_NODE = 4
CHANGED = 0.01


def node(name: str, owner: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"fairpool.io/owner": owner, "nvidia.com/gpu.product": MODEL},
        },
        "status": {
            "allocatable": {"nvidia.com/gpu": "8", "cpu": "96", "memory": "1024Gi"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(name: str, namespace: str, node_name: str = "", reclaims: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "creationTimestamp": "2026-11-28T10:00:00Z",
            "annotations": {"fairpool.io/reclaims": str(reclaims)} if reclaims else {},
        },
        "spec": {
            "schedulerName": "fairpool",
            "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
        "status": {"phase": "Running" if node_name else "Pending"},
    }
    if node_name:
        body["spec"]["nodeName"] = node_name
    return body


def _best(fn: Callable[[], object], times: int = 3) -> float:
    best = float("inf")
    for _ in range(times):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def measure(nodes: int, pending: int) -> dict[str, float]:
    previous = runtime.tune()
    try:
        return _measure(nodes, pending)
    finally:
        gc.unfreeze()
        runtime.restore(previous)


def _measure(nodes: int, pending: int) -> dict[str, float]:
    policy = load_policy()
    names = [f"node-{k:05d}" for k in range(nodes)]
    node_objs = [node(n, MEMBERS[k % len(MEMBERS)]) for k, n in enumerate(names)]
    running = [
        pod(f"run-{k}", MEMBERS[k % len(MEMBERS)], names[k % nodes])
        for k in range(nodes * RUNNING_PER_NODE)
    ]
    waiting = [pod(f"wait-{k}", MEMBERS[k % len(MEMBERS)]) for k in range(pending)]

    def cold() -> None:
        cache = ClusterCache()
        cache.replace(NODES, node_objs)
        cache.replace(PODS, running + waiting)
        filled.append(cache)
        gc.unfreeze()
        runtime.freeze_startup_objects()
        started = time.perf_counter()
        cache.view(policy, now=1000.0)
        views.append(time.perf_counter() - started)

    filled: list[ClusterCache] = []
    views: list[float] = []
    _best(cold)
    cache = filled[-1]
    changed = max(1, int(pending * CHANGED))
    steady_s = float("inf")
    for r in range(1, 4):
        # The watch's changes land first, as informers apply them between two cycles;
        # only the view is timed.
        for k in range(changed):
            cache.apply(PODS, "MODIFIED", pod(f"wait-{k}", MEMBERS[k % len(MEMBERS)], "", r))
        steady_s = min(steady_s, _best(lambda r=r: cache.view(policy, now=1000.0 + r), 1))
    snapshot = cache.view(policy, now=2000.0).snapshot
    engine_s = _best(lambda: schedule(snapshot, policy), 1)
    return {
        "cold": min(views),
        "steady": steady_s,
        "engine": engine_s,
        "changed": float(changed),
        "running": float(len(snapshot.running)),
        "jobs": float(len(snapshot.pending)),
    }


def run(console: Console) -> None:
    table = Table(title="the daemon's view of the cluster (ClusterCache.view)")
    for column in (
        "nodes",
        "running pods",
        "pending pods",
        "cold view ms",
        "pods changed",
        "steady view ms",
        "engine ms",
        "steady view + engine ms",
    ):
        table.add_column(column, justify="right")
    for nodes, pending in CASES:
        with console.status(f"{nodes:,} nodes, {pending:,} pending"):
            m = measure(nodes, pending)
        table.add_row(
            f"{nodes:,}",
            f"{int(m['running']):,}",
            f"{int(m['jobs']):,}",
            f"{m['cold'] * 1000:,.0f}",
            f"{int(m['changed']):,}",
            f"{m['steady'] * 1000:,.0f}",
            f"{m['engine'] * 1000:,.0f}",
            f"{(m['steady'] + m['engine']) * 1000:,.0f}",
        )
    print_table(console, table)
    console.print(
        "best of 3; cold: the first view of a filled cache (every pod converted, what every "
        f"view cost before conversions were kept); steady: after {CHANGED:.0%} of the "
        "pending pods changed; engine: one schedule of that snapshot (compiled or not: the "
        "line above the table says)"
    )
