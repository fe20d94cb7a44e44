"""The scheduler daemon against the local control plane: a real kube-apiserver, kwok nodes.

Each test gets its own members (namespaces `<prefix>-a`, `<prefix>-b`, ...) and its own
fake GPU nodes, and runs the daemon in-process with the `fairpool` scheduler identity
(the least-privilege RBAC of tests/controlplane/rbac.yaml).
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from policies.inventory import parse_inventory
from policies.loader import parse_policy
from policies.model import Policy
from scheduler.engine.decisions import Bind, Preemption
from scheduler.k8s.client import api_client, namespaced_path, post_json, read_body
from scheduler.k8s.daemon import Daemon, DaemonConfig, PolicyConfigMap, SchedulerView
from scheduler.k8s.evictor import Evictor, EvictResult
from scheduler.k8s.labels import RECLAIMS_ANNOTATION
from scheduler.k8s.objects import PodInfo, pod_info
from scheduler.k8s.owners import Owner
from tests.controlplane import ControlPlane
from tests.controlplane.nodes import create_nodes, wait_nodes_ready
from tests.integration.conftest import TEST_NAMESPACE_LABEL, TEST_NODE_LABEL

pytestmark = pytest.mark.integration

H100 = "NVIDIA-H100-80GB-HBM3"


def wait_until(
    check: Callable[[], Any], timeout: float = 30.0, every: float = 0.2, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: {last!r}")


@dataclass
class Pool:
    """One test's consortium: members (a namespace each), their nodes, a policy."""

    plane: ControlPlane
    prefix: str
    core: k8s.CoreV1Api
    members: list[str] = field(default_factory=list)
    daemons: list[Daemon] = field(default_factory=list)

    def ns(self, member: str) -> str:
        return f"{self.prefix}-{member}"

    def ns_member(self, namespace: str) -> str:
        return namespace.removeprefix(f"{self.prefix}-")

    def add_member(self, member: str) -> None:
        self.members.append(member)
        self.core.create_namespace(
            {"metadata": {"name": self.ns(member), "labels": {TEST_NAMESPACE_LABEL: "true"}}}  # type: ignore[arg-type]
        )

    def add_nodes(self, owner: str, count: int, gpus: int, model: str = H100) -> list[str]:
        group = f"{self.prefix}-{owner}"
        inventory = parse_inventory(
            yaml.safe_dump(
                {
                    "apiVersion": "fairpool.io/v1",
                    "kind": "ClusterInventory",
                    "spec": {
                        "nodeGroups": [
                            {
                                "name": group,
                                "owner": owner,
                                "count": count,
                                "gpusPerNode": gpus,
                                "gpuModel": model,
                            }
                        ]
                    },
                }
            )
        )
        created = create_nodes(self.core, inventory, labels={TEST_NODE_LABEL: "true"})
        wait_nodes_ready(self.core, created.created, timeout=30)
        return created.created

    def policy_text(
        self,
        weights: dict[str, float] | None = None,
        grace: int = 2,
        checkpointable: tuple[str, ...] = (),
        **sharing: Any,
    ) -> str:
        return yaml.safe_dump(
            {
                "apiVersion": "fairpool.io/v1",
                "kind": "Policy",
                "metadata": {"name": self.prefix},
                "spec": {
                    "gpuModels": [{"name": H100, "hourlyCost": "2.40"}],
                    "members": [
                        {
                            "name": m,
                            "namespaces": [self.ns(m)],
                            "weight": (weights or {}).get(m, 1),
                            "checkpointable": m in checkpointable,
                        }
                        for m in self.members
                    ],
                    "sharing": {"reclaimGracePeriodSeconds": grace, **sharing},
                },
            }
        )

    def policy(self, **kwargs: Any) -> Policy:
        return parse_policy(self.policy_text(**kwargs))

    def daemon(
        self,
        policy: Policy | None = None,
        configmap: PolicyConfigMap | None = None,
        **config: Any,
    ) -> Daemon:
        settings: dict[str, Any] = {
            "leader_elect": False,
            "cycle_seconds": 0.5,
            "explain_after_seconds": 0.5,
            "event_repeat_seconds": 5.0,
            "watch_pod_groups": False,
        }
        settings.update(config)
        api = api_client(self.plane.kubeconfig("scheduler"), pool_size=32)
        daemon = Daemon(
            api,
            policy if configmap is None else None,
            DaemonConfig(**settings),
            policy_configmap=configmap,
        )
        self.daemons.append(daemon)
        return daemon.start()

    def pod(
        self,
        member: str,
        name: str,
        gpus: int = 1,
        *,
        gang: str | None = None,
        gang_size: int | None = None,
        duration: float | None = None,
        grace: int = 1,
        extra_spec: dict[str, Any] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> k8s.V1Pod:
        labels: dict[str, str] = {}
        annotations = dict(annotations or {})
        if gang is not None:
            labels["fairpool.io/gang"] = gang
            annotations["fairpool.io/gang-size"] = str(gang_size)
        if duration is not None:
            annotations["fairpool.io/duration-seconds"] = str(duration)
        body = {
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "spec": {
                "schedulerName": "fairpool",
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": grace,
                "containers": [
                    {
                        "name": "train",
                        "image": "example.invalid/train:1",
                        "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                    }
                ],
                **(extra_spec or {}),
            },
        }
        return self.core.create_namespaced_pod(self.ns(member), body)  # type: ignore[arg-type]

    def pods(self, member: str) -> list[k8s.V1Pod]:
        return list(self.core.list_namespaced_pod(self.ns(member)).items)

    def bound(self, member: str) -> dict[str, str]:
        """pod name -> node, for bound pods of the member still not being deleted."""
        return {
            p.metadata.name: p.spec.node_name
            for p in self.pods(member)
            if p.spec.node_name and not p.metadata.deletion_timestamp
        }

    def events(self, member: str, reason: str) -> list[k8s.CoreV1Event]:
        listed = self.core.list_namespaced_event(self.ns(member))
        return [e for e in listed.items if e.reason == reason]


@pytest.fixture
def pool(control_plane: ControlPlane, namespace: str) -> Iterator[Pool]:
    """`namespace` is requested for its clean-up: every test namespace and test node
    goes after the test."""
    core = k8s.CoreV1Api(control_plane.admin)
    result = Pool(control_plane, f"fp{uuid.uuid4().hex[:6]}", core)
    try:
        yield result
    finally:
        for daemon in result.daemons:
            with contextlib.suppress(Exception):
                daemon.stop()


# --- single pods ------------------------------------------------------------------------


def test_single_pods_are_bound_annotated_and_reported(pool: Pool) -> None:
    pool.add_member("a")
    nodes = pool.add_nodes("a", count=2, gpus=4)
    daemon = pool.daemon(pool.policy())
    assert isinstance(daemon, SchedulerView)
    for i in range(3):
        pool.pod("a", f"p{i}", gpus=2)
    bound = wait_until(lambda: len(pool.bound("a")) == 3 and pool.bound("a"), what="3 binds")
    assert set(bound.values()) <= set(nodes)
    per_node: dict[str, int] = {}
    for node in bound.values():
        per_node[node] = per_node.get(node, 0) + 2
    assert max(per_node.values()) <= 4
    for p in pool.pods("a"):
        assert p.metadata.annotations["fairpool.io/member"] == "a"
        assert "fairpool.io/borrowed-from" not in p.metadata.annotations
    wait_until(lambda: len(pool.events("a", "Scheduled")) == 3, timeout=10, what="Scheduled events")
    # kwok runs them: the pod GPU allocation metric shows each running pod.
    wait_until(lambda: all(p.status.phase == "Running" for p in pool.pods("a")), what="Running")
    port = daemon.metrics.serve(0, "127.0.0.1")

    def allocation_lines() -> list[str]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        return [
            line
            for line in text.splitlines()
            if line.startswith("fairpool_pod_gpu_allocation{") and pool.ns("a") in line
        ]

    lines = wait_until(lambda: len(allocation_lines()) == 3 and allocation_lines())
    assert all('member="a"' in line and line.endswith(" 2.0") for line in lines)
    assert all(f'gpu_model="{H100}"' in line and 'owner="a"' in line for line in lines)


def test_foreign_pods_take_resources(pool: Pool) -> None:
    """A pod bound by someone else (here: created with nodeName) takes its GPUs."""
    pool.add_member("a")
    (node,) = pool.add_nodes("a", count=1, gpus=4)
    pool.pod(
        "a", "foreign", gpus=3, extra_spec={"schedulerName": "default-scheduler", "nodeName": node}
    )
    daemon = pool.daemon(pool.policy())
    pool.pod("a", "fits", gpus=1)
    pool.pod("a", "too-big", gpus=2)
    wait_until(lambda: "fits" in pool.bound("a"), what="fits bound")
    time.sleep(2)
    assert "too-big" not in pool.bound("a")
    uid = next(p.metadata.uid for p in pool.pods("a") if p.metadata.name == "too-big")
    explanation = daemon.last_decisions().explanations[uid]
    assert "taken" in explanation, explanation


def test_unsatisfiable_pod_gets_failed_scheduling_with_reason(pool: Pool) -> None:
    pool.add_member("a")
    pool.add_nodes("a", count=1, gpus=4)
    pool.daemon(pool.policy())
    pool.pod("a", "huge", gpus=16)
    events = wait_until(lambda: pool.events("a", "FailedScheduling"), what="FailedScheduling")
    assert events[0].type == "Warning"
    assert events[0].involved_object.name == "huge"
    assert "16" in events[0].message, events[0].message
    assert "huge" not in pool.bound("a")
    # Rate-limited: the same explanation is not repeated every cycle.
    time.sleep(3)
    assert sum((e.count or 1) for e in pool.events("a", "FailedScheduling")) <= 2


def test_pod_of_namespace_outside_the_policy_is_explained(pool: Pool) -> None:
    pool.add_member("a")
    pool.add_member("stray")
    pool.add_nodes("a", count=1, gpus=4)
    policy = parse_policy(pool.policy_text().replace(f"- {pool.ns('stray')}", "- nobody-here"))
    pool.daemon(policy)
    pool.pod("stray", "lost")
    events = wait_until(lambda: pool.events("stray", "FailedScheduling"))
    assert "belongs to no member" in events[0].message


def test_pods_kube_scheduler_would_not_place_wait_with_the_reason(pool: Pool) -> None:
    """Each of these was bound (kwok runs anything; a kubelet would refuse them), beside a
    plain pod that still is. A pod asking for a resource fairpool does not count (rdma/ib)
    was bound to a node with none of it, where kube-scheduler found
    "Insufficient rdma/ib" and a kubelet refuses it (OutOfrdma/ib)."""
    pool.add_member("a")
    pool.add_nodes("a", count=1, gpus=8)
    pool.daemon(pool.policy())
    nowhere = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{}]}}
    waiting = {
        "whole-pod-cpu": {"resources": {"requests": {"cpu": "1000"}}},
        "empty-term": {"affinity": {"nodeAffinity": nowhere}},
        "claim": {"resourceClaims": [{"name": "gpu", "resourceClaimName": "absent"}]},
        "rdma": _containers_asking({"nvidia.com/gpu": "1", "rdma/ib": "1"}),
    }
    for name, spec in waiting.items():
        pool.pod("a", name, extra_spec=spec)
    pool.pod("a", "alone", annotations={"fairpool.io/gang-size": "2"})
    pool.pod("a", "plain")
    # ephemeral-storage is not counted, and keeps no pod waiting (docs/policy.md).
    pool.pod("a", "scratch", extra_spec=_containers_asking({"ephemeral-storage": "1Gi"}))
    wait_until(lambda: "plain" in pool.bound("a"), what="the plain pod bound")

    def reasons() -> dict[str, str]:
        return {e.involved_object.name: e.message for e in pool.events("a", "FailedScheduling")}

    found = wait_until(lambda: len(reasons()) == 5 and reasons(), what="5 FailedScheduling")
    assert "too little CPU" in found["whole-pod-cpu"], found
    assert "node selector or affinity" in found["empty-term"], found
    assert "spec.resourceClaims[0] (gpu)" in found["claim"], found
    assert "spec.containers[0].resources: rdma/ib" in found["rdma"], found
    assert "fairpool.io/gang-size='2'" in found["alone"], found
    assert set(pool.bound("a")) == {"plain", "scratch"}


def _containers_asking(limits: dict[str, str]) -> dict[str, Any]:
    """A pod spec part whose one container asks for `limits` (requests default to them)."""
    return {
        "containers": [
            {"name": "train", "image": "example.invalid/train:1", "resources": {"limits": limits}}
        ]
    }


# --- gangs ------------------------------------------------------------------------------


def test_gang_waits_for_all_members_then_binds_whole(pool: Pool) -> None:
    pool.add_member("a")
    pool.add_nodes("a", count=2, gpus=4)
    pool.daemon(pool.policy())
    for i in range(3):
        pool.pod("a", f"w{i}", gpus=2, gang="train", gang_size=4)
    time.sleep(2.5)
    assert pool.bound("a") == {}, "a gang must not start before all its pods exist"
    events = wait_until(lambda: pool.events("a", "FailedScheduling"))
    assert "gang" in events[0].message or "pods" in events[0].message
    pool.pod("a", "w3", gpus=2, gang="train", gang_size=4)
    bound = wait_until(lambda: len(pool.bound("a")) == 4 and pool.bound("a"), what="gang bound")
    assert len(bound) == 4


def test_gang_that_cannot_fit_binds_nothing(pool: Pool) -> None:
    pool.add_member("a")
    pool.add_nodes("a", count=2, gpus=4)
    pool.daemon(pool.policy())
    for i in range(3):
        pool.pod("a", f"big{i}", gpus=4, gang="big", gang_size=3)  # 12 GPUs > 8
    for i in range(2):
        pool.pod("a", f"small{i}", gpus=2, gang="small", gang_size=2)
    wait_until(lambda: len(pool.bound("a")) == 2, what="small gang bound")
    time.sleep(2)
    assert set(pool.bound("a")) == {"small0", "small1"}
    events = wait_until(
        lambda: [e for e in pool.events("a", "FailedScheduling") if "big" in e.involved_object.name]
    )
    assert events[0].message


def test_gang_pod_deleted_between_check_and_bind_leaves_no_pod_of_the_gang_bound(
    pool: Pool,
) -> None:
    """A gang pod deleted after the daemon checked the gang and before its bind: the
    binds of the others succeed, so they are deleted again, each with an event saying
    why; no pod of the gang stays bound."""
    pool.add_member("a")
    pool.add_nodes("a", count=2, gpus=4)
    deleted: list[str] = []

    def delete_one_gang_pod(binds: Sequence[tuple[Bind, PodInfo]]) -> None:
        names = sorted(pod.name for _, pod in binds)
        if deleted or len(names) < 3:
            return
        pool.core.delete_namespaced_pod(names[1], pool.ns("a"), grace_period_seconds=0)
        deleted.append(names[1])

    daemon = pool.daemon(pool.policy())
    daemon.binder.before_binds = delete_one_gang_pod
    for i in range(3):
        pool.pod("a", f"w{i}", gpus=2, gang="train", gang_size=3, grace=1)
    wait_until(lambda: deleted, what="the gang's binds going out")
    assert deleted == ["w1"]
    assert daemon.binder.wait_idle(10)
    assert pool.bound("a") == {}, "no pod of the gang stays bound"
    assert daemon.binder.undone == 1

    def undone_events() -> list[k8s.CoreV1Event]:
        found = pool.events("a", "GangBindUndone")
        return found if len(found) == 2 else []

    events = wait_until(undone_events, timeout=10, what="GangBindUndone events")
    assert {e.involved_object.name for e in events} == {"w0", "w2"}
    for event in events:
        assert event.type == "Warning"
        assert f"pod {pool.ns('a')}/w1: pod deleted before it was bound" in event.message
        assert "recreates" in event.message
    wait_until(lambda: not pool.pods("a"), timeout=20, what="the bound pods gone")


def test_a_running_gang_that_lost_a_pod_keeps_running_while_its_replacement_waits(
    pool: Pool,
) -> None:
    """A worker of a running gang fails; its controller recreates it after the gang's
    binds, and the new pod does not fit (here: a node selector no node matches). The
    gang's running pods are no half-done bind: nothing is deleted, and the replacement
    waits like any pod."""
    pool.add_member("a")
    pool.add_nodes("a", count=1, gpus=4)
    daemon = pool.daemon(pool.policy())
    for i in range(2):
        pool.pod("a", f"w{i}", gpus=2, gang="train", gang_size=2)
    wait_until(lambda: len(pool.bound("a")) == 2, what="the gang bound")
    pool.core.delete_namespaced_pod("w1", pool.ns("a"), grace_period_seconds=0)
    wait_until(lambda: len(pool.pods("a")) == 1, what="w1 gone")
    time.sleep(1.1)  # the API server's times are to the second
    pool.pod(
        "a", "w1-new", gpus=2, gang="train", gang_size=2, extra_spec={"nodeSelector": {"x": "y"}}
    )
    started = daemon.cycles
    wait_until(lambda: daemon.cycles >= started + 5, what="cycles with the replacement pending")
    assert daemon.binder.wait_idle(10)
    assert set(pool.bound("a")) == {"w0"}, "w0 runs on, w1-new waits"
    assert daemon.binder.undone == 0
    assert not pool.events("a", "GangBindUndone")


# --- borrowing and reclaim --------------------------------------------------------------


def test_borrowing_onto_another_members_idle_nodes(pool: Pool) -> None:
    for m in ("a", "b"):
        pool.add_member(m)
    a_nodes = pool.add_nodes("a", count=1, gpus=4)
    b_nodes = pool.add_nodes("b", count=1, gpus=4)
    pool.daemon(pool.policy())
    for i in range(6):
        pool.pod("a", f"p{i}")
    bound = wait_until(lambda: len(pool.bound("a")) == 6 and pool.bound("a"), what="6 binds")
    on_b = [name for name, node in bound.items() if node in b_nodes]
    assert len(on_b) == 2 and sum(node in a_nodes for node in bound.values()) == 4
    for p in pool.pods("a"):
        borrowed = p.metadata.annotations.get("fairpool.io/borrowed-from")
        if p.metadata.name in on_b:
            assert borrowed == "b"
        else:
            assert borrowed is None


def test_reclaim_end_to_end(pool: Pool) -> None:
    """A fills the pool; B submits; A's borrowed pods on B's node are evicted within the
    grace period plus a few seconds and B's pods run on B's node."""
    for m in ("a", "b"):
        pool.add_member(m)
    pool.add_nodes("a", count=1, gpus=4)
    b_nodes = pool.add_nodes("b", count=1, gpus=4)
    daemon = pool.daemon(pool.policy(grace=2))
    for i in range(8):
        pool.pod("a", f"a{i}", grace=2)
    wait_until(lambda: len(pool.bound("a")) == 8, what="A fills the pool")
    borrowed = {n for n, node in pool.bound("a").items() if node in b_nodes}
    assert len(borrowed) == 4

    started = time.monotonic()
    for i in range(4):
        pool.pod("b", f"b{i}")
    wait_until(lambda: len(pool.bound("b")) == 4, timeout=30, every=0.1, what="B's pods bound")
    took = time.monotonic() - started
    assert took < 2 + 8, f"reclaim took {took:.1f}s"
    assert set(pool.bound("b").values()) == set(b_nodes)
    assert set(pool.bound("a")).isdisjoint(borrowed), "the borrowed pods are gone"
    assert len(pool.bound("a")) == 4
    preempted = pool.events("a", "Preempted")
    assert {e.involved_object.name for e in preempted} == borrowed
    # Read in a's namespace by a: b and b's job are another member's (docs/api.md).
    assert all(
        e.message.startswith("Preempted by another member for a job of another member: ")
        for e in preempted
    ), preempted[0].message
    said = " ".join(e.message for e in preempted)
    assert "member b" not in said and f"{pool.ns('b')}/" not in said, said
    uids = {p.metadata.uid for p in pool.pods("b")}
    assert not any(uid in said for uid in uids)
    text = urllib.request.urlopen(
        f"http://127.0.0.1:{daemon.metrics.serve(0, '127.0.0.1')}/metrics"
    )
    metrics = text.read().decode()
    # b takes back its own node: within its entitlement.
    evicted = '{cause="entitlement",reclaimer="b",result="evicted"} 4.0'
    assert "fairpool_preemptions_total" + evicted in metrics
    lost = '{cause="entitlement",gpu_model="' + H100 + '",member="a"}'
    assert "fairpool_reclaim_lost_gpu_seconds_total" + lost in metrics


def test_a_gated_pod_waits_for_its_gate_then_reclaims(pool: Pool) -> None:
    """A pod held by a scheduling gate (Kueue's pod integration gates its pods until it
    admits them) is neither bound nor reclaimed for; once the gate is removed it is
    fairpool's like any pod: the borrowed work on its owner's node goes, and it binds."""
    for m in ("a", "b"):
        pool.add_member(m)
    b_nodes = pool.add_nodes("b", count=1, gpus=4)
    pool.daemon(pool.policy(grace=1))
    for i in range(4):
        pool.pod("a", f"a{i}")
    wait_until(lambda: len(pool.bound("a")) == 4, what="A borrows B's node")
    gate = {"schedulingGates": [{"name": "kueue.x-k8s.io/admission"}]}
    pool.pod("b", "b0", gpus=4, extra_spec=gate)
    time.sleep(4)  # several cycles
    assert pool.bound("b") == {}
    assert len(pool.bound("a")) == 4 and pool.events("a", "Preempted") == []
    assert pool.events("b", "FailedScheduling") == []
    ungate = [{"op": "replace", "path": "/spec/schedulingGates", "value": []}]
    pool.core.patch_namespaced_pod("b0", pool.ns("b"), ungate)
    bound = wait_until(lambda: pool.bound("b"), timeout=30, what="b0 bound once ungated")
    assert bound == {"b0": b_nodes[0]}
    assert len(pool.events("a", "Preempted")) == 4


def test_victims_are_annotated_before_eviction(pool: Pool) -> None:
    """Victims with a long grace period stay visible while terminating, annotated."""
    for m in ("a", "b"):
        pool.add_member(m)
    pool.add_nodes("a", count=1, gpus=2)
    b_nodes = pool.add_nodes("b", count=1, gpus=2)
    pool.daemon(pool.policy(grace=20))
    for i in range(4):
        pool.pod("a", f"a{i}", grace=20)
    wait_until(lambda: len(pool.bound("a")) == 4)
    borrowed = {n for n, node in pool.bound("a").items() if node in b_nodes}
    pool.pod("b", "b0", gpus=2)

    def terminating() -> list[k8s.V1Pod]:
        return [p for p in pool.pods("a") if p.metadata.deletion_timestamp]

    victims = wait_until(lambda: len(terminating()) == 2 and terminating(), what="victims")
    for p in victims:
        assert p.metadata.name in borrowed
        assert p.metadata.annotations["fairpool.io/preempted-by"] == "another member"
        assert p.metadata.annotations["fairpool.io/preemption-reason"]
        assert p.metadata.deletion_grace_period_seconds == 20
    # Meanwhile B's pod is nominated and waits: nobody else takes the freed GPUs.
    time.sleep(2)
    assert pool.bound("b") == {}


# --- policy through a ConfigMap ---------------------------------------------------------


def _fair_shares(daemon: Daemon) -> dict[str, float]:
    return {s.member: s.fair_share for s in daemon.last_decisions().shares if s.gpu_model == H100}


def test_policy_configmap_change_shifts_shares_and_bad_policy_is_rejected(pool: Pool) -> None:
    for m in ("a", "b", "c"):
        pool.add_member(m)
    pool.add_nodes("c", count=1, gpus=8)  # only c owns GPUs, and c is idle
    config_ns = pool.ns("c")
    name = "fairpool-policy"
    pool.core.create_namespaced_config_map(
        config_ns,
        {"metadata": {"name": name}, "data": {"policy.yaml": pool.policy_text()}},  # type: ignore[arg-type]
    )
    daemon = pool.daemon(configmap=PolicyConfigMap(config_ns, name))
    for m in ("a", "b"):
        for i in range(8):
            # A gang one pod short (9 declared) waits whole, yet could run: it is demand
            # (a pod no node takes never runs, so it is not).
            pool.pod(m, f"{m}{i}", gang=f"{m}-gang", gang_size=9)
    # Shares follow the pods as the informer sees them arrive: a cycle may run while only
    # some of the 16 are in. Equal shares must come, once all are in.
    wait_until(
        lambda: (
            (s := _fair_shares(daemon)).get("a", 0) > 0
            and s.get("a") == pytest.approx(s.get("b", 0))
        ),
        what="equal shares",
    )

    pool.core.patch_namespaced_config_map(
        name, config_ns, {"data": {"policy.yaml": pool.policy_text(weights={"a": 3})}}
    )
    shares = wait_until(
        lambda: (s := _fair_shares(daemon))["a"] > s["b"] + 1 and s, what="weights applied"
    )
    assert shares["a"] == pytest.approx(3 * shares["b"])
    # Events are posted by the recorder's own workers, after the policy is in force.
    wait_until(lambda: pool.events("c", "PolicyApplied"), what="PolicyApplied")

    bad = pool.policy_text(weights={"a": 3}).replace("weight: 3", "weight: -1")
    pool.core.patch_namespaced_config_map(name, config_ns, {"data": {"policy.yaml": bad}})
    events = wait_until(lambda: pool.events("c", "PolicyRejected"), what="PolicyRejected")
    assert "weight" in events[0].message and events[0].type == "Warning"
    assert daemon.policy().member("a").weight == 3
    assert _fair_shares(daemon)["a"] == pytest.approx(3 * _fair_shares(daemon)["b"])

    # Valid on its own, but c's node has a GPU model it does not price: its hours could
    # not be billed, so it is refused too.
    unpriced = pool.policy_text(weights={"a": 5}).replace(H100, "NVIDIA-B200")
    pool.core.patch_namespaced_config_map(name, config_ns, {"data": {"policy.yaml": unpriced}})
    refused = wait_until(
        lambda: [e for e in pool.events("c", "PolicyRejected") if "gpuModels" in e.message],
        what="PolicyRejected for the unpriced model",
    )
    assert f"spec.gpuModels: the cluster has nodes of '{H100}' (" in refused[0].message
    assert daemon.policy().member("a").weight == 3


def test_set_policy_hot_swap(pool: Pool) -> None:
    pool.add_member("a")
    pool.add_nodes("a", count=1, gpus=4)
    daemon = pool.daemon(pool.policy())
    pool.add_member("b")
    pool.pod("b", "late")
    time.sleep(1.5)
    assert pool.bound("b") == {}, "namespace b is in no member of the running policy"
    daemon.set_policy(pool.policy())
    wait_until(lambda: "late" in pool.bound("b"), what="bound after the swap")
    assert daemon.policy().member("b").name == "b"


def test_pod_deleted_before_bind_is_dropped(pool: Pool) -> None:
    pool.add_member("a")
    pool.add_nodes("a", count=1, gpus=4)
    daemon = pool.daemon(pool.policy())
    pod = pool.pod("a", "brief")
    with contextlib.suppress(ApiException):
        pool.core.delete_namespaced_pod("brief", pool.ns("a"), grace_period_seconds=0)
    pool.pod("a", "after")
    wait_until(lambda: "after" in pool.bound("a"))
    assert daemon.binder.in_flight() == 0
    assert not daemon.cache.is_assumed(pod.metadata.uid)


def test_requests_outside_the_generated_client_keep_its_answers(pool: Pool) -> None:
    """Binds and events go out through `post_json`, not the generated client methods: a
    request the API server takes returns its body, and one it refuses still raises the
    client's exception with the API server's status and message, which the binder's
    retry rules read (404: the pod is gone; 409 with a precondition: it was replaced)."""
    pool.add_member("a")
    node = pool.add_nodes("a", count=1, gpus=4)[0]
    api = api_client(pool.plane.kubeconfig("scheduler"), pool_size=4)
    ns = pool.ns("a")
    bind = {"target": {"kind": "Node", "name": node}}
    missing = {"metadata": {"name": "no-such-pod"}, **bind}
    with pytest.raises(ApiException) as gone:
        post_json(api, namespaced_path(ns, "pods", "no-such-pod", "binding"), missing, (5, 30))
    assert gone.value.status == 404
    assert json.loads(gone.value.body or "{}")["message"] == 'pods "no-such-pod" not found'
    pod = pool.core.create_namespaced_pod(
        ns,
        {  # type: ignore[arg-type]
            "metadata": {"name": "held"},
            "spec": {"schedulerName": "nobody", "containers": [{"name": "c", "image": "x"}]},
        },
    )
    replaced = {"metadata": {"name": "held", "uid": "not-its-uid"}, **bind}
    with pytest.raises(ApiException) as conflict:
        post_json(api, namespaced_path(ns, "pods", "held", "binding"), replaced, (5, 30))
    assert conflict.value.status == 409
    assert "precondition" in (conflict.value.body or "").lower()
    body = {"metadata": {"name": "held", "uid": pod.metadata.uid}, **bind}
    answer = json.loads(
        post_json(api, namespaced_path(ns, "pods", "held", "binding"), body, (5, 30))
    )
    assert answer["kind"] == "Status" and answer["status"] == "Success"
    assert pool.core.read_namespaced_pod("held", ns).spec.node_name == node


def _evict_once(
    pool: Pool,
    victim: PodInfo,
    record: Owner | None = None,
    patch: Callable[..., Any] | None = None,
) -> list[EvictResult]:
    """The results of one eviction of `victim` by an evictor of its own (the scheduler's
    identity), for job a/worker: `record` keeps its job's reclaim record, and `patch`,
    given the evictor's pod patch call, returns the call to make instead."""
    results: list[EvictResult] = []
    evictor = Evictor(pool.plane.api_client("scheduler"), on_result=results.append)
    if patch is not None:
        evictor._core.patch_namespaced_pod = patch(evictor._core.patch_namespaced_pod)  # type: ignore[method-assign]
    try:
        preemption = Preemption(victim.uid, "a/worker", "a", "b", "b/x", "r", 0, "entitlement")
        assert evictor.submit(preemption, victim, record)
        evictor.wait_idle()
    finally:
        evictor.close()
    return results


def test_a_victim_replaced_under_its_name_is_not_annotated(pool: Pool) -> None:
    """A controller that names its pods (a StatefulSet) may replace a victim by a pod of
    the same name between the decision and the eviction. The victim's annotations carry
    its uid as a precondition: the new pod gets no reclaim count it never earned, and the
    eviction is "gone"."""
    pool.add_member("a")
    ns = pool.ns("a")
    old = pool.pod("a", "worker-0")
    victim = pod_info(pool.core.api_client.sanitize_for_serialization(old))
    pool.core.delete_namespaced_pod("worker-0", ns, grace_period_seconds=0)
    wait_until(lambda: not pool.pods("a"), what="the old pod gone")
    new = pool.pod("a", "worker-0")
    assert new.metadata.uid != victim.uid
    results = _evict_once(pool, victim)
    assert [(r.outcome, r.detail) for r in results] == [("gone", "pod replaced")]
    current = pool.core.read_namespaced_pod("worker-0", ns)
    assert current.metadata.uid == new.metadata.uid
    assert RECLAIMS_ANNOTATION not in (current.metadata.annotations or {})
    assert current.metadata.deletion_timestamp is None


def _a_fills_b_s_node(pool: Pool) -> tuple[Daemon, list[str]]:
    """Members a and b with a 2-GPU node each; a's four 1-GPU pods fill both (two borrow
    b's node, victims when b's pod comes); evictions retried every second. The daemon
    and b's nodes."""
    for m in ("a", "b"):
        pool.add_member(m)
    pool.add_nodes("a", count=1, gpus=2)
    b_nodes = pool.add_nodes("b", count=1, gpus=2)
    daemon = pool.daemon(pool.policy(grace=1))
    daemon.evictor.retry_seconds = 1.0
    for i in range(4):
        pool.pod("a", f"a{i}")
    wait_until(lambda: len(pool.bound("a")) == 4)
    return daemon, b_nodes


def test_eviction_blocked_by_a_disruption_budget_is_retried_later(pool: Pool) -> None:
    """The Eviction API answers 429 while a PodDisruptionBudget forbids the eviction
    (here always: no disruption controller runs, so the budget is never processed);
    victims are left alone and tried again once the budget is gone."""
    daemon, b_nodes = _a_fills_b_s_node(pool)
    k8s.PolicyV1Api(pool.plane.admin).create_namespaced_pod_disruption_budget(
        pool.ns("a"),
        {"metadata": {"name": "keep-all"}, "spec": {"minAvailable": 4, "selector": {}}},  # type: ignore[arg-type]
    )
    pool.pod("b", "b0", gpus=2)
    metrics_port = daemon.metrics.serve(0, "127.0.0.1")

    def blocked() -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        for line in text.splitlines():
            if line.startswith(
                'fairpool_preemptions_total{cause="entitlement",reclaimer="b",result="blocked"}'
            ):
                return float(line.split()[-1])
        return 0.0

    def owed() -> dict[str, float]:
        """member -> fairpool_member_owed."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        return {
            line.split('member="')[1].split('"')[0]: float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("fairpool_member_owed{")
        }

    # Each of the two victims is refused more often than maxReclaimsPerJob (3). A refusal
    # is no reclaim: a's pods stay victims, their reclaim annotations as they were.
    wait_until(lambda: blocked() >= 8, timeout=40, what="evictions refused and retried")
    assert not [p for p in pool.pods("a") if p.metadata.deletion_timestamp]
    assert pool.bound("b") == {}
    for pod in pool.pods("a"):
        annotations = pod.metadata.annotations or {}
        assert RECLAIMS_ANNOTATION not in annotations, (pod.metadata.name, annotations)
    # b waits for its own node: owed, as the FairpoolOwnerBelowEntitlement alert reads,
    # and told that a budget holds it (the victims stay while their evictions are refused).
    assert owed() == {"a": 0.0, "b": 1.0}
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    held = [
        line.split('cause="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("fairpool_member_owed_blocker{")
        and 'member="b"' in line
        and float(line.split()[-1]) == 1.0
    ]
    assert held == ["disruption_budget"]
    k8s.PolicyV1Api(pool.plane.admin).delete_namespaced_pod_disruption_budget(
        "keep-all", pool.ns("a")
    )
    wait_until(lambda: pool.bound("b"), timeout=20, what="B bound once the budget is gone")
    assert set(pool.bound("b").values()) == set(b_nodes)
    wait_until(lambda: owed() == {"a": 0.0, "b": 0.0}, timeout=10, what="b no longer owed")


def test_a_victim_under_two_budgets_is_no_reclaim(pool: Pool) -> None:
    """The Eviction API answers 500 for a pod two PodDisruptionBudgets cover (it cannot
    tell which applies), however often it is asked: nothing is evicted, so the victims'
    reclaim annotations are put back each time. Once the budgets are gone, the owner gets
    its node (one alone would still refuse: no disruption controller runs here)."""
    daemon, b_nodes = _a_fills_b_s_node(pool)
    results: list[EvictResult] = []
    daemon.evictor.on_result = _also(daemon.evictor.on_result, results.append)
    policy_api = k8s.PolicyV1Api(pool.plane.admin)
    for name in ("first", "second"):
        policy_api.create_namespaced_pod_disruption_budget(
            pool.ns("a"),
            {"metadata": {"name": name}, "spec": {"maxUnavailable": 4, "selector": {}}},  # type: ignore[arg-type]
        )
    pool.pod("b", "b0", gpus=2)
    # Each of the two victims refused more often than maxReclaimsPerJob (3).
    wait_until(lambda: len(results) >= 8, timeout=40, what="evictions refused and retried")
    assert {r.outcome for r in results} == {"failed"}
    assert all("more than one PodDisruptionBudget" in r.detail for r in results), results[0]
    assert not [p for p in pool.pods("a") if p.metadata.deletion_timestamp]
    for pod in pool.pods("a"):
        assert RECLAIMS_ANNOTATION not in (pod.metadata.annotations or {}), pod.metadata.name
    for name in ("first", "second"):
        policy_api.delete_namespaced_pod_disruption_budget(name, pool.ns("a"))
    wait_until(lambda: pool.bound("b"), timeout=20, what="B bound once the budgets are gone")
    assert set(pool.bound("b").values()) == set(b_nodes)


def _also(
    first: Callable[[Any], None] | None, then: Callable[[Any], None]
) -> Callable[[Any], None]:
    def both(result: Any) -> None:
        if first is not None:
            first(result)
        then(result)

    return both


def test_an_owner_kept_out_by_work_at_the_reclaim_limit_is_told_what_holds_its_node(
    pool: Pool,
) -> None:
    """A's pods were reclaimed maxReclaimsPerJob times already: never victims again. They
    fill B's idle node; B's pod then waits, owed its node, and the metrics name what holds
    it (the cause the FairpoolOwnerBelowEntitlement alert's description gives)."""
    for m in ("a", "b"):
        pool.add_member(m)
    pool.add_nodes("a", count=1, gpus=4)
    b_nodes = pool.add_nodes("b", count=1, gpus=4)
    daemon = pool.daemon(pool.policy(grace=1))
    at_limit = {RECLAIMS_ANNOTATION: "3"}
    for i in range(8):
        pool.pod("a", f"a{i}", annotations=at_limit)
    wait_until(lambda: len(pool.bound("a")) == 8, what="A fills the pool, B's node too")
    on_b = sorted(n for n, node in pool.bound("a").items() if node in b_nodes)
    assert len(on_b) == 4
    metrics_port = daemon.metrics.serve(0, "127.0.0.1")

    def blockers() -> dict[str, str]:
        """member -> the cause fairpool_member_owed_blocker reads 1 for."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        return {
            line.split('member="')[1].split('"')[0]: line.split('cause="')[1].split('"')[0]
            for line in text.splitlines()
            if line.startswith("fairpool_member_owed_blocker{") and line.endswith(" 1.0")
        }

    def sample(name: str) -> float:
        """b's sample of `name`, 0 when there is none."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        prefix = name + '{gpu_model="' + H100 + '",member="b"}'
        return next((float(x.split()[-1]) for x in text.splitlines() if x.startswith(prefix)), 0.0)

    pool.pod("b", "b0", gpus=4)
    wait_until(lambda: blockers() == {"b": "reclaim_limit"}, timeout=20, what="b owed, told why")
    # Not a moment between a reclaim's annotation and its eviction: it stays so.
    time.sleep(3)
    assert blockers() == {"b": "reclaim_limit"}
    assert pool.bound("b") == {}
    assert set(on_b) <= set(pool.bound("a"))
    owed_for = sample("fairpool_member_owed_seconds")
    assert owed_for >= 2.5, owed_for  # the scrapes above read its cycles
    for name in on_b:
        pool.core.delete_namespaced_pod(name, pool.ns("a"), grace_period_seconds=0)
    wait_until(lambda: pool.bound("b"), timeout=20, what="B bound once A's pods are gone")
    wait_until(lambda: blockers() == {}, timeout=10, what="b no longer owed")
    # The episode ended: the time to entitlement histogram has it, as long as it lasted.
    assert sample("fairpool_member_owed_seconds") == 0.0
    assert sample("fairpool_time_to_entitlement_seconds_count") == 1.0
    assert sample("fairpool_time_to_entitlement_seconds_sum") >= owed_for


def test_the_daemon_times_an_owners_wait_between_scrapes(pool: Pool) -> None:
    """With nothing scraping /metrics while B waits for its node, the daemon still reads
    its cycles (`--owed-read-seconds`): the first scrape after the wait finds it timed."""
    for m in ("a", "b"):
        pool.add_member(m)
    pool.add_nodes("a", count=1, gpus=4)
    b_nodes = pool.add_nodes("b", count=1, gpus=4)
    daemon = pool.daemon(pool.policy(grace=1), owed_read_seconds=0.2)
    for i in range(8):
        pool.pod("a", f"a{i}", annotations={RECLAIMS_ANNOTATION: "3"})
    wait_until(lambda: len(pool.bound("a")) == 8, what="A fills the pool, B's node too")
    on_b = sorted(n for n, node in pool.bound("a").items() if node in b_nodes)
    pool.pod("b", "b0", gpus=4)
    time.sleep(4)
    assert pool.bound("b") == {}
    for name in on_b:
        pool.core.delete_namespaced_pod(name, pool.ns("a"), grace_period_seconds=0)
    wait_until(lambda: pool.bound("b"), timeout=20, what="B bound once A's pods are gone")
    time.sleep(1)
    port = daemon.metrics.serve(0, "127.0.0.1")
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    prefix = 'fairpool_time_to_entitlement_seconds_{}{{gpu_model="' + H100 + '",member="b"}}'
    found = {
        kind: float(line.split()[-1])
        for kind in ("count", "sum")
        for line in text.splitlines()
        if line.startswith(prefix.format(kind))
    }
    assert found.get("count") == 1.0, found
    assert found["sum"] >= 4.0, found


# --- taking back from overtaking jobs ---------------------------------------------------


def test_a_gang_takes_back_the_nodes_its_members_later_pods_overtook(pool: Pool) -> None:
    """With `reclaimOvertakenAfterSeconds`, member a's gang of 2 x 4 GPUs, created while
    a's earlier pod held one GPU, is overtaken by a's seven later 1-GPU pods, which fill
    both nodes. Once the earlier pod is gone, the gang takes its member's later pods back
    through the Eviction API (cause `queue`: a is checkpointable, they resume) and binds
    whole. Creation timestamps have a resolution of one second: hence the sleeps."""
    pool.add_member("a")
    a_nodes = pool.add_nodes("a", count=2, gpus=4)
    pool.daemon(
        pool.policy(grace=2, checkpointable=("a",), reclaimOvertakenAfterSeconds=0),
        explain_after_seconds=0.0,
    )
    pool.pod("a", "earlier")
    wait_until(lambda: "earlier" in pool.bound("a"), what="a's earlier pod bound")
    time.sleep(1.1)
    for k in range(2):
        pool.pod("a", f"gang-{k}", gpus=4, gang="big", gang_size=2, grace=2)
    time.sleep(1.1)
    for k in range(7):
        pool.pod("a", f"later-{k}", grace=2)
    wait_until(lambda: len(pool.bound("a")) == 8, what="the later pods overtake the gang")
    assert not {"gang-0", "gang-1"} & set(pool.bound("a"))
    # With the earlier pod still there, taking back the later ones frees one node only.
    time.sleep(2)
    assert not [p for p in pool.pods("a") if p.metadata.deletion_timestamp]

    pool.core.delete_namespaced_pod("earlier", pool.ns("a"), grace_period_seconds=0)

    def terminating() -> list[k8s.V1Pod]:
        return [p for p in pool.pods("a") if p.metadata.deletion_timestamp]

    victims = wait_until(lambda: len(terminating()) == 7 and terminating(), what="7 taken back")
    for p in victims:
        assert p.metadata.name.startswith("later-")
        assert p.metadata.annotations["fairpool.io/preempted-by"] == "a"
        assert p.metadata.annotations["fairpool.io/preemption-cause"] == "queue"
        assert "in the member's queue" in p.metadata.annotations["fairpool.io/preemption-reason"]
    placed = wait_until(
        lambda: {"gang-0", "gang-1"} <= set(pool.bound("a")) and pool.bound("a"),
        timeout=30,
        what="the gang bound whole",
    )
    assert {placed["gang-0"], placed["gang-1"]} == set(a_nodes)
    taken = wait_until(lambda: pool.events("a", "Preempted"), what="Preempted events")
    assert "Preempted by member a for job" in taken[0].message


# --- consolidation ----------------------------------------------------------------------


def test_consolidation_frees_a_whole_node_for_an_owners_pod(pool: Pool) -> None:
    """Member a owns two 8-GPU nodes; c's borrowed 1-GPU pods sit 4 on each, so 8 GPUs are
    free but no node has 8. a's 8-GPU pod waits only for fragmentation: the daemon
    evicts c's pods from one node through the Eviction API (they fit on the other one),
    nominates a's pod there and binds it once they are gone; c's other pods stay."""
    for m in ("a", "c"):
        pool.add_member(m)
    a_nodes = pool.add_nodes("a", count=2, gpus=8)
    pool.daemon(pool.policy(grace=3), explain_after_seconds=0.0)
    for i in range(12):
        pool.pod("c", f"c{i}", grace=3)
    bound = wait_until(lambda: len(pool.bound("c")) == 12 and pool.bound("c"), what="c fills")
    # Bin-packing put 8 on one node and 4 on the other: free 4 pods of the full node.
    full = next(n for n in a_nodes if sum(v == n for v in bound.values()) == 8)
    for name in sorted(k for k, v in bound.items() if v == full)[:4]:
        pool.core.delete_namespaced_pod(name, pool.ns("c"), grace_period_seconds=0)
    wait_until(lambda: len(pool.bound("c")) == 8, what="c down to 4 pods per node")
    before = pool.bound("c")
    assert sorted(sum(v == n for v in before.values()) for n in a_nodes) == [4, 4]

    pool.pod("a", "big", gpus=8)

    def terminating() -> list[k8s.V1Pod]:
        return [p for p in pool.pods("c") if p.metadata.deletion_timestamp]

    victims = wait_until(lambda: len(terminating()) == 4 and terminating(), what="4 moved")
    opened = {p.spec.node_name for p in victims}
    assert len(opened) == 1
    for p in victims:
        assert p.metadata.annotations["fairpool.io/preempted-by"] == "another member"
        assert p.metadata.annotations["fairpool.io/preemption-cause"] == "consolidation"
        assert "consolidation of" in p.metadata.annotations["fairpool.io/preemption-reason"]
        assert p.metadata.deletion_grace_period_seconds == 3
    # The victims' GPUs are held for a's pod while they terminate.
    explained = wait_until(
        lambda: [e for e in pool.events("a", "FailedScheduling") if "consolidation" in e.message],
        what="a's pod explained",
    )
    assert f"waiting for consolidation of {next(iter(opened))}" in (explained[0].message)
    assert "4 pods leaving" in explained[0].message
    placed = wait_until(lambda: pool.bound("a"), timeout=30, what="a's pod bound")
    assert placed == {"big": next(iter(opened))}
    # c's pods on the other node were never touched; the moved ones got their event.
    kept = {k for k, v in before.items() if v not in opened}
    assert kept <= set(pool.bound("c")) and len(kept) == 4
    moved = wait_until(lambda: pool.events("c", "Consolidated"), what="Consolidated events")
    assert {e.involved_object.name for e in moved} == {p.metadata.name for p in victims}
    # Read by c: a and its job are another member's.
    assert "Moved for consolidation, for a job of another member: " in moved[0].message
    assert "member a" not in moved[0].message
    assert not pool.events("c", "Preempted"), "a move is not reported as a reclaim"


def test_a_refused_consolidation_says_whose_work_holds_the_nodes(pool: Pool) -> None:
    """Member o owns two 8-GPU nodes and runs 4 of its own 1-GPU pods on each: 8 GPUs are
    free, no node has 8. Member a's 8-GPU pod is blocked by fragmentation, but o's work
    within its entitlement on its own nodes never moves for another member: nothing is
    evicted, the pod's FailedScheduling event says which nodes that work holds, and
    /metrics counts the 8 idle GPUs as fragmentation."""
    for m in ("o", "a"):
        pool.add_member(m)
    o_nodes = pool.add_nodes("o", count=2, gpus=8)
    daemon = pool.daemon(pool.policy(grace=3), explain_after_seconds=0.0)
    for i in range(12):
        pool.pod("o", f"o{i}")
    bound = wait_until(lambda: len(pool.bound("o")) == 12 and pool.bound("o"), what="o fills")
    full = next(n for n in o_nodes if sum(v == n for v in bound.values()) == 8)
    for name in sorted(k for k, v in bound.items() if v == full)[:4]:
        pool.core.delete_namespaced_pod(name, pool.ns("o"), grace_period_seconds=0)
    wait_until(lambda: len(pool.bound("o")) == 8, what="o down to 4 pods per node")

    pool.pod("a", "big", gpus=8)
    explained = wait_until(
        lambda: [e for e in pool.events("a", "FailedScheduling") if "consolidation" in e.message],
        what="a's pod explained",
    )
    names = sorted(o_nodes)
    assert (
        f"consolidation found no move: {names[0]} and {names[1]} hold their owners' own "
        "work within their entitlement, which moves only for them"
    ) in explained[0].message
    assert "8 idle" in explained[0].message
    assert not [p for p in pool.pods("o") if p.metadata.deletion_timestamp]
    assert pool.bound("a") == {}
    # /metrics names the cause of the 8 idle GPUs, as `fairpool simulate` would.
    port = daemon.metrics.serve(0, "127.0.0.1")

    def idle() -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        prefix = 'fairpool_idle_gpus_while_pending{cause="'
        return {
            line[len(prefix) :].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(prefix) and f'gpu_model="{H100}"' in line
        }

    found = wait_until(lambda: idle().get("fragmentation") == 8.0 and idle(), what="gauge")
    assert {cause: gpus for cause, gpus in found.items() if gpus} == {"fragmentation": 8.0}


def test_an_annotation_patch_whose_answer_is_lost_is_put_back(pool: Pool) -> None:
    """The victim's annotation patch reaches the API server, which applies it, but its
    answer is lost (a timeout): the evictor cannot tell, so it puts the annotations back.
    Left, the next attempt would have counted from the applied one, one reclaim too
    many."""
    pool.add_member("a")
    ns = pool.ns("a")
    created = pool.pod("a", "worker-0")
    victim = pod_info(pool.core.api_client.sanitize_for_serialization(created))

    def lost_answer(applied: Callable[..., Any]) -> Callable[..., Any]:
        def answer_lost(name: str, namespace: str, body: Any, **kwargs: Any) -> Any:
            answer = applied(name, namespace, body, **kwargs)
            if body["metadata"]["annotations"].get(RECLAIMS_ANNOTATION) is None:
                return answer  # putting them back: answered
            # The server applied the victim's annotations, but the answer is lost.
            read_body(answer)
            raise urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out")

        return answer_lost

    results = _evict_once(pool, victim, patch=lost_answer)
    assert [r.outcome for r in results] == ["failed"]
    assert "ReadTimeoutError" in results[0].detail
    assert "could not be put back" not in results[0].detail
    current = pool.core.read_namespaced_pod("worker-0", ns)
    assert RECLAIMS_ANNOTATION not in (current.metadata.annotations or {})
    assert current.metadata.deletion_timestamp is None


def test_an_eviction_whose_reclaim_record_cannot_be_kept_still_goes_through(
    pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """The object that would keep the job's reclaim record is not there (deleted, or
    its kind not installed): the eviction stands, and a warning says the record was not
    kept (an eviction that went through logs nothing else)."""
    pool.add_member("a")
    created = pool.pod("a", "worker-0")
    victim = pod_info(pool.core.api_client.sanitize_for_serialization(created))
    gone = Owner(kind="Job", namespace=pool.ns("a"), name="deleted-job", uid="no-such-uid")
    results = _evict_once(pool, victim, gone)
    assert [r.outcome for r in results] == ["evicted"]
    assert "reclaim record not kept on Job" in results[0].detail and "404" in results[0].detail
    assert "reclaim record of an evicted pod's job not kept" in caplog.text
    # Evicted with no grace period: gone, or going.
    assert all(p.metadata.deletion_timestamp for p in pool.pods("a"))
