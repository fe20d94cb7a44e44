"""The cluster cache: informer events in, consistent snapshots out, assumed binds."""

from __future__ import annotations

from typing import Any

import pytest

from policies.loader import load_policy
from scheduler.engine import schedule
from scheduler.k8s.cache import NODES, POD_GROUPS, PODS, PRIORITY_CLASSES, ClusterCache

POLICY = load_policy()


def node(name: str, owner: str = "physics", gpus: int = 8) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {
                "fairpool.io/owner": owner,
                "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
            },
        },
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "64", "memory": "512Gi"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(
    name: str,
    namespace: str = "physics",
    node_name: str | None = None,
    phase: str = "Pending",
    scheduler: str = "fairpool",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "creationTimestamp": "2026-11-28T10:00:00Z",
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": {
            "schedulerName": scheduler,
            "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
            **spec,
        },
        "status": {"phase": phase},
    }
    if node_name:
        body["spec"]["nodeName"] = node_name
    return body


def test_replace_then_events_build_the_snapshot() -> None:
    cache = ClusterCache()
    cache.replace(NODES, [node("n1"), node("n2", owner="lab-bio")])
    cache.replace(
        PODS,
        [
            pod("run", node_name="n1", phase="Running"),
            pod("foreign", node_name="n2", phase="Running", scheduler="default-scheduler"),
            pod("done", node_name="n1", phase="Succeeded"),
            pod("wait"),
            pod("not-ours", scheduler="default-scheduler"),
        ],
    )
    snap = cache.view(POLICY, now=100.0).snapshot
    assert [n.name for n in snap.nodes] == ["n1", "n2"]
    assert {p.name for p in snap.running} == {"run", "foreign"}
    assert [j.pods[0].name for j in snap.pending] == ["wait"]
    assert snap.now == 100.0

    cache.apply(PODS, "MODIFIED", pod("wait", node_name="n2", phase="Running"))
    cache.apply(PODS, "DELETED", pod("run"))
    cache.apply(NODES, "DELETED", node("n1"))
    snap = cache.view(POLICY).snapshot
    assert {p.name for p in snap.running} == {"foreign", "wait"}
    assert snap.pending == ()
    assert [n.name for n in snap.nodes] == ["n2"]


def test_assumed_pod_counts_on_its_node_until_confirmed() -> None:
    cache = ClusterCache(assume_ttl=30)
    cache.replace(NODES, [node("n1")])
    cache.replace(PODS, [pod("a")])
    cache.assume("uid-a", "n1", now=10.0)
    snap = cache.view(POLICY, now=11.0).snapshot
    assert snap.pending == ()
    (running,) = snap.running
    assert (running.name, running.node, running.started_at) == ("a", "n1", 10.0)
    # The watch confirms the bind: the assumption is dropped, the pod stays running.
    cache.apply(PODS, "MODIFIED", pod("a", node_name="n1", phase="Running"))
    assert not cache.is_assumed("uid-a")
    assert [p.name for p in cache.view(POLICY, now=12.0).snapshot.running] == ["a"]


def test_failed_bind_is_forgotten_and_pending_again() -> None:
    cache = ClusterCache()
    cache.replace(PODS, [pod("a")])
    cache.assume("uid-a", "n1")
    cache.forget("uid-a")
    snap = cache.view(POLICY).snapshot
    assert snap.running == () and len(snap.pending) == 1


def test_unconfirmed_assumption_expires_once_its_bind_was_answered() -> None:
    cache = ClusterCache(assume_ttl=30)
    cache.replace(PODS, [pod("a")])
    cache.assume("uid-a", "n1", now=0.0)
    # Its bind waits behind thousands of others, or is retried: it holds its GPUs.
    assert cache.view(POLICY, now=1000.0).snapshot.running
    cache.settle("uid-a", now=1000.0)  # bound, but the watch does not say so
    assert cache.view(POLICY, now=1029.0).snapshot.running
    snap = cache.view(POLICY, now=1031.0).snapshot
    assert snap.running == () and len(snap.pending) == 1


def test_deleted_pod_drops_its_assumption_and_relist_prunes() -> None:
    cache = ClusterCache()
    cache.replace(PODS, [pod("a"), pod("b")])
    cache.assume("uid-a", "n1")
    cache.assume("uid-b", "n1")
    cache.apply(PODS, "DELETED", pod("a"))
    assert not cache.is_assumed("uid-a")
    cache.replace(PODS, [])  # b vanished while the watch was down
    assert not cache.is_assumed("uid-b")
    assert cache.view(POLICY).snapshot.running == ()


def test_changed_is_signalled() -> None:
    cache = ClusterCache()
    cache.changed.clear()
    cache.apply(PODS, "ADDED", pod("a"))
    assert cache.changed.is_set()


def test_priority_classes_and_pod_groups_feed_pending_jobs() -> None:
    cache = ClusterCache()
    cache.replace(PRIORITY_CLASSES, [{"metadata": {"name": "high"}, "value": 500}])
    cache.replace(
        POD_GROUPS, [{"metadata": {"name": "pg", "namespace": "physics"}, "spec": {"minMember": 2}}]
    )
    group = {"scheduling.x-k8s.io/pod-group": "pg"}
    cache.replace(
        PODS,
        [
            pod("w0", labels=group, priorityClassName="high"),
            pod("w1", labels=group, priorityClassName="high"),
        ],
    )
    (job,) = cache.view(POLICY).snapshot.pending
    assert (job.job_id, job.min_member, job.priority, len(job.pods)) == ("physics/pg", 2, 500, 2)


@pytest.mark.parametrize(
    ("spec", "min_member", "reason"),
    [
        ({}, 4, None),  # read as 1: 2 of a gang of 4 started
        ({"minMember": 0}, 4, None),
        ({"minMember": 3}, 3, None),
        ({"minMember": -3}, None, "spec.minMember: -3 is not a count"),
        ({"minMember": "3"}, None, "spec.minMember: '3' is not a count"),
    ],
)
def test_a_pod_group_without_a_min_member_leaves_the_size_to_the_pods(
    spec: dict[str, object], min_member: int | None, reason: str | None
) -> None:
    cache = ClusterCache()
    cache.replace(POD_GROUPS, [{"metadata": {"name": "pg", "namespace": "physics"}, "spec": spec}])
    group = {"scheduling.x-k8s.io/pod-group": "pg"}
    size = {"fairpool.io/gang-size": "4"}
    cache.replace(PODS, [pod(f"w{i}", labels=group, annotations=size) for i in range(2)])
    view = cache.view(POLICY)
    if reason is None:
        (job,) = view.snapshot.pending
        assert job.min_member == min_member
    else:
        assert view.snapshot.pending == ()
        (bad,) = view.unschedulable
        assert f"PodGroup physics/pg: {reason}" in bad.reason


def test_unreadable_pending_pod_is_reported_not_snapshotted() -> None:
    cache = ClusterCache()
    cache.replace(PODS, [pod("g", labels={"fairpool.io/gang": "x"})])
    view = cache.view(POLICY)
    assert view.snapshot.pending == ()
    (bad,) = view.unschedulable
    assert "fairpool.io/gang-size" in bad.reason and bad.pods[0].name == "g"


def test_views_share_one_nodes_tuple_while_no_node_changes() -> None:
    # The engine keeps its node-only work for one nodes tuple (as the simulator's): a new
    # tuple each view made every cycle redo it.
    cache = ClusterCache()
    cache.replace(NODES, [node("n1"), node("n2")])
    first = cache.view(POLICY).snapshot.nodes
    assert cache.view(POLICY).snapshot.nodes is first
    # A heartbeat (a status change the engine does not read) keeps it.
    beat = node("n1")
    beat["status"]["conditions"][0]["lastHeartbeatTime"] = "2026-12-07T15:00:00Z"
    cache.apply(NODES, "MODIFIED", beat)
    assert cache.view(POLICY).snapshot.nodes is first
    # Anything the engine reads makes a new one.
    cache.apply(NODES, "MODIFIED", node("n1", gpus=4))
    second = cache.view(POLICY).snapshot.nodes
    assert second is not first and [n.gpus for n in second] == [4, 8]
    cache.apply(NODES, "DELETED", node("n2"))
    third = cache.view(POLICY).snapshot.nodes
    assert [n.name for n in third] == ["n1"]
    broken = node("n1")
    broken["status"]["allocatable"]["nvidia.com/gpu"] = "many"
    cache.apply(NODES, "MODIFIED", broken)
    assert cache.view(POLICY).snapshot.nodes == ()
    cache.replace(NODES, [node("n1", gpus=4)])
    relisted = cache.view(POLICY).snapshot.nodes
    assert [n.gpus for n in relisted] == [4] and relisted is not third


def test_unreadable_node_is_left_out_with_reason() -> None:
    cache = ClusterCache()
    broken = node("n1")
    broken["status"]["allocatable"]["nvidia.com/gpu"] = "many"
    cache.replace(NODES, [broken, node("n2")])
    assert [n.name for n in cache.view(POLICY).snapshot.nodes] == ["n2"]
    assert "n1" in cache.node_errors


def test_has_pending_ignores_assumed_and_bound_pods() -> None:
    cache = ClusterCache(assume_ttl=30)
    assert not cache.has_pending()
    cache.replace(PODS, [pod("a"), pod("b", node_name="n1", phase="Running")])
    assert cache.has_pending()
    cache.assume("uid-a", "n1", now=0.0)
    assert not cache.has_pending()
    cache.forget("uid-a")
    assert cache.has_pending()
    cache.assume("uid-a", "n1", now=0.0)
    cache.settle("uid-a", now=0.0)
    cache.view(POLICY, now=31.0)  # the assumption expires: pending again
    assert cache.has_pending()
    cache.apply(PODS, "MODIFIED", pod("a", node_name="n1", phase="Running"))
    assert not cache.has_pending()


def test_a_pod_held_by_a_scheduling_gate_waits_for_its_gate_not_for_fairpool() -> None:
    # Kueue's pod integration creates pods gated until it admits them; the API server
    # refuses their Binding meanwhile, so no GPUs are reclaimed for them either.
    cache = ClusterCache()
    cache.replace(NODES, [node("n1")])
    eight = [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]
    borrowed = {"fairpool.io/member": "lab-bio", "fairpool.io/borrowed-from": "physics"}
    four = [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "4"}}}]
    gated = pod("gated", containers=four, schedulingGates=[{"name": "kueue.x-k8s.io/admission"}])
    borrower = pod("borrower", "lab-bio", "n1", "Running", annotations=borrowed, containers=eight)
    borrower["status"]["startTime"] = "2026-11-28T10:00:00Z"  # past its minimum runtime
    cache.replace(PODS, [borrower, gated])
    assert not cache.has_pending()
    view = cache.view(POLICY, now=1795910400.0)
    assert view.snapshot.pending == () and view.unschedulable == ()
    decisions = schedule(view.snapshot, POLICY)
    assert decisions.preemptions == () and decisions.binds == ()
    # The gate removed: the pod is pending, and its owner takes its node back.
    cache.apply(PODS, "MODIFIED", pod("gated", containers=four, schedulingGates=[]))
    assert cache.has_pending()
    view = cache.view(POLICY, now=1795910400.0)
    assert [j.pods[0].name for j in view.snapshot.pending] == ["gated"]
    assert [p.pod_uid for p in schedule(view.snapshot, POLICY).preemptions] == ["uid-borrower"]
