"""High availability and restart safety of the daemon on the local control plane:
leader failover between two daemons, kill -9 and restart of `fairpool run`, and a
kube-apiserver restart under a running daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.controlplane import ControlPlane, processes
from tests.controlplane.cluster import save_state
from tests.integration.test_daemon import Pool, pool, wait_until

pytestmark = pytest.mark.integration
__all__ = ["pool"]  # the fixture, imported for this module's tests


def _assert_no_node_overcommitted(core: k8s.CoreV1Api, nodes: list[str]) -> None:
    capacity = {
        n.metadata.name: int(n.status.allocatable["nvidia.com/gpu"])
        for n in core.list_node(label_selector="fairpool.io/test-node").items
        if n.metadata.name in nodes
    }
    used: Counter[str] = Counter()
    for p in core.list_pod_for_all_namespaces().items:
        if p.spec.node_name in capacity and p.status.phase not in ("Succeeded", "Failed"):
            used[p.spec.node_name] += int(
                p.spec.containers[0].resources.limits.get("nvidia.com/gpu", 0)
            )
    over = {n: (used[n], capacity[n]) for n in used if used[n] > capacity[n]}
    assert not over, f"over-committed nodes (used, capacity): {over}"


def _scheduled_events_per_pod(pool: Pool, member: str) -> Counter[str]:
    return Counter(e.involved_object.name for e in pool.events(member, "Scheduled"))


def test_leader_failover_with_two_daemons(pool: Pool) -> None:
    pool.add_member("a")
    nodes = pool.add_nodes("a", count=2, gpus=8)
    policy = pool.policy()
    lease = {
        "leader_elect": True,
        "lease_namespace": pool.ns("a"),
        "lease_name": "fairpool-test",
        "lease_seconds": 4.0,
        "renew_deadline": 3.0,
        "retry_seconds": 0.5,
    }
    first = pool.daemon(policy, identity="first", **lease)
    wait_until(lambda: first.is_leader, timeout=10, what="first leads")
    second = pool.daemon(policy, identity="second", **lease)
    time.sleep(2)
    assert first.is_leader and not second.is_leader

    for i in range(4):
        pool.pod("a", f"before{i}")
    wait_until(lambda: len(pool.bound("a")) == 4, what="binds by the first leader")
    wait_until(lambda: sum(_scheduled_events_per_pod(pool, "a").values()) == 4, timeout=10)
    instances = {e.reporting_instance for e in pool.events("a", "Scheduled")}
    assert instances == {"first"}, "only the leader binds"

    # The leader dies without giving the lease up: the standby waits out the lease.
    died = time.monotonic()
    first.stop(release_lease=False)
    for i in range(4):
        pool.pod("a", f"after{i}")
    wait_until(lambda: second.is_leader, timeout=15, what="second takes over")
    took_over = time.monotonic() - died
    wait_until(lambda: len(pool.bound("a")) == 8, timeout=15, what="binds by the new leader")
    assert 3.0 <= took_over <= 4.0 + 3.0, f"takeover after {took_over:.1f}s"
    lease_obj = k8s.CoordinationV1Api(pool.plane.admin).read_namespaced_lease(
        "fairpool-test", pool.ns("a")
    )
    assert lease_obj.spec.holder_identity == "second"
    assert lease_obj.spec.lease_transitions >= 1
    _assert_no_node_overcommitted(pool.core, nodes)

    # A graceful stop hands over at once.
    third = pool.daemon(policy, identity="third", **lease)
    second.stop()
    wait_until(lambda: third.is_leader, timeout=3, what="third takes the released lease")


def _start_fairpool_run(plane: ControlPlane, policy: Path, log: Path) -> subprocess.Popen[bytes]:
    command = [
        str(Path(sys.executable).with_name("fairpool")),
        "run",
        "--kubeconfig",
        str(plane.kubeconfig("scheduler")),
        "--policy",
        str(policy),
        "--metrics-port",
        "0",
        "--metrics-address",
        "127.0.0.1",
        "--no-leader-elect",
        "--bind-workers",
        "4",
    ]
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def test_kill_9_and_restart_binds_every_pod_exactly_once(pool: Pool, tmp_path: Path) -> None:
    pool.add_member("a")
    nodes = pool.add_nodes("a", count=40, gpus=8)  # room for every pod
    policy = tmp_path / "policy.yaml"
    policy.write_text(pool.policy_text())
    log = tmp_path / "fairpool.log"
    total = 300
    # Pods first, so the daemon has a backlog to be killed in the middle of.
    for i in range(total):
        pool.pod("a", f"p{i:03d}")
    first = _start_fairpool_run(pool.plane, policy, log)
    try:
        wait_until(lambda: len(pool.bound("a")) >= 40, timeout=60, every=0.05, what="some binds")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        at_kill = len(pool.bound("a"))
        assert at_kill < total, "the daemon was killed too late to test anything"
        second = _start_fairpool_run(pool.plane, policy, log)
        try:
            wait_until(
                lambda: len(pool.bound("a")) == total, timeout=120, what="all bound after restart"
            )
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    _assert_no_node_overcommitted(pool.core, nodes)
    per_pod = _scheduled_events_per_pod(pool, "a")
    assert max(per_pod.values()) == 1, [p for p, n in per_pod.items() if n > 1]
    assert len(per_pod) >= total - at_kill  # the second process reported every bind it made


def _restart_apiserver(plane: ControlPlane) -> float:
    record = plane.state.record("kube-apiserver")
    assert record is not None
    plane.stop_process("kube-apiserver")
    down = time.monotonic()
    new = processes.spawn(
        "kube-apiserver",
        record.command,
        Path(record.log),
        die_with_parent=plane.state.die_with_parent,
    )
    plane.state.processes.append(new)
    save_state(plane.state)
    processes.wait_ready(new, plane.ready, 120)
    return time.monotonic() - down


def test_daemon_survives_kube_apiserver_restart(pool: Pool) -> None:
    pool.add_member("a")
    nodes = pool.add_nodes("a", count=2, gpus=8)
    daemon = pool.daemon(pool.policy())
    for i in range(4):
        pool.pod("a", f"before{i}")
    wait_until(lambda: len(pool.bound("a")) == 4, what="binds before the restart")
    outage = _restart_apiserver(pool.plane)
    pool.core = k8s.CoreV1Api(pool.plane.api_client("admin"))
    for i in range(4):
        pool.pod("a", f"after{i}")
    wait_until(lambda: len(pool.bound("a")) == 8, timeout=60, what="binds after the restart")
    _assert_no_node_overcommitted(pool.core, nodes)
    assert daemon.cycles > 0 and outage > 0
