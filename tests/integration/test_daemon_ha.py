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
from typing import Any

import pytest
from kubernetes import client as k8s

from scheduler.k8s.binder import Binder
from scheduler.k8s.cache import ClusterCache
from scheduler.k8s.daemon import Daemon
from scheduler.k8s.events import EventRecorder
from scheduler.k8s.leader import LeaderElector
from scheduler.k8s.objects import PodInfo, pod_info
from tests.controlplane import ControlPlane, processes
from tests.controlplane.build import binary_path
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
    lease = fast_lease(pool)
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


def test_a_leader_whose_renewal_hangs_steps_down_within_the_deadline(pool: Pool) -> None:
    """The kube-apiserver stops answering (SIGSTOP: its connections stay open, as with a
    half-open connection or a request queued for long). The leader's renewal hangs; it
    must stop acting as the leader once its last renewal is renew_deadline old, before a
    standby elsewhere could take the Lease (lease_seconds), not when an answer comes."""
    pool.add_member("a")
    pool.add_nodes("a", count=1, gpus=8)
    lease = fast_lease(pool)
    leader = pool.daemon(pool.policy(), identity="only", **lease)
    wait_until(lambda: leader.is_leader, timeout=10, what="it leads")
    record = pool.plane.state.record("kube-apiserver")
    assert record is not None and record.pid
    os.kill(record.pid, signal.SIGSTOP)
    try:
        frozen = time.monotonic()
        wait_until(lambda: not leader.is_leader, timeout=8, every=0.05, what="it steps down")
        stepped_down = time.monotonic() - frozen
    finally:
        os.kill(record.pid, signal.SIGCONT)
    assert stepped_down <= lease["renew_deadline"] + lease["retry_seconds"] + 0.5
    assert stepped_down < lease["lease_seconds"]
    wait_until(lambda: leader.is_leader, timeout=20, what="it leads again once answered")


def fast_lease(pool: Pool) -> dict[str, Any]:
    """Daemon settings for leader election on a short Lease, so a takeover takes seconds."""
    return {
        "leader_elect": True,
        "lease_namespace": pool.ns("a"),
        "lease_name": "fairpool-test",
        "lease_seconds": 4.0,
        "renew_deadline": 3.0,
        "retry_seconds": 0.5,
    }


def start_fairpool_run(
    plane: ControlPlane, policy: Path, log: Path, *flags: str
) -> subprocess.Popen[bytes]:
    """`fairpool run` as its own process (so it can be SIGKILLed), on loopback metrics."""
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
        *flags,
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
    first = start_fairpool_run(pool.plane, policy, log, "--no-leader-elect", "--bind-workers", "4")
    try:
        wait_until(lambda: len(pool.bound("a")) >= 40, timeout=60, every=0.05, what="some binds")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        at_kill = _bound_once_settled(pool, "a")
        assert at_kill < total, "the daemon was killed too late to test anything"
        second = start_fairpool_run(
            pool.plane, policy, log, "--no-leader-elect", "--bind-workers", "4"
        )
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


def _bound_once_settled(pool: Pool, member: str) -> int:
    """Bound pods once no bind is still landing: a Binding the killed process sent just
    before SIGKILL can reach the API server after its death, and the bind is then the
    dead process's (it reported nothing), not the next one's."""
    count = len(pool.bound(member))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = len(pool.bound(member))
        if now == count:
            return count
        count = now
    raise AssertionError("binds kept landing 10 s after the daemon was killed")


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


# --- nominations survive a restart and a leader change ----------------------------------


def _nominated_node(pool: Pool, member: str, name: str) -> str:
    return pool.core.read_namespaced_pod(name, pool.ns(member)).status.nominated_node_name or ""


def _kubectl_nominated_node(pool: Pool, member: str, name: str) -> str:
    command = [
        str(binary_path("kubectl", Path(pool.plane.state.cache))),
        f"--kubeconfig={pool.plane.kubeconfig('admin')}",
        "get",
        "pod",
        name,
        "--namespace",
        pool.ns(member),
        "--output",
        "jsonpath={.status.nominatedNodeName}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _two_members(pool: Pool) -> str:
    """Members a and b with one 4-GPU node each; returns B's node."""
    for member in ("a", "b"):
        pool.add_member(member)
    pool.add_nodes("a", count=1, gpus=4)
    (b_node,) = pool.add_nodes("b", count=1, gpus=4)
    return b_node


def _reclaim_with_slow_victims(pool: Pool, first: Daemon, b_node: str) -> tuple[str, set[str]]:
    """A borrows 3 of B's 4 GPUs; B asks for 4: A's 3 pods there are preempted with a
    20 s grace period and B's pod is nominated to B's node (its free GPU and the 3 being
    freed), which its status shows. Returns B's pod uid and the victims' names."""
    for i in range(7):
        pool.pod("a", f"a{i}", grace=20)
    wait_until(lambda: len(pool.bound("a")) == 7, what="A borrows")
    victims = {n for n, node in pool.bound("a").items() if node == b_node}
    assert len(victims) == 3
    uid = pool.pod("b", "b0", gpus=4).metadata.uid
    wait_until(
        lambda: _nominated_node(pool, "b", "b0") == b_node,
        what="status.nominatedNodeName written",
    )
    assert first.nominations.decided
    wait_until(
        lambda: (
            {p.metadata.name for p in pool.pods("a") if p.metadata.deletion_timestamp} == victims
        ),
        what="the victims terminating",
    )
    return uid, victims


def _assert_new_leader_holds_then_binds(
    pool: Pool, leader: Daemon, b_node: str, uid: str, victims: set[str]
) -> None:
    """The new leader knows nothing but the cluster: it reads the nomination back and
    holds it as it is (it decides no nomination of its own), keeps the free GPU on B's
    node from A's new pod, and binds B's pod there once the victims are gone."""
    assert not leader.nominations.decided
    still = {p.metadata.name for p in pool.pods("a") if p.metadata.deletion_timestamp}
    assert still == victims, "the victims still terminate during the takeover"
    pool.pod("a", "late")  # would fit in the free GPU on B's node but for the hold

    def held() -> bool:
        jobs = {j.job_id: j for j in leader.snapshot().pending}
        job = jobs.get(uid)
        explanation = leader.last_decisions().explanations.get(uid, "")
        return job is not None and job.nominated_nodes == {uid: b_node} and "held" in explanation

    wait_until(held, timeout=10, what="the new leader holds the nominated GPUs")
    assert _kubectl_nominated_node(pool, "b", "b0") == b_node
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert "late" not in pool.bound("a"), "A's new pod must not take the held GPU"
        assert not leader.nominations.decided, "held as read back, not reclaimed anew"
        assert _nominated_node(pool, "b", "b0") == b_node
        time.sleep(0.2)
    bound = wait_until(lambda: pool.bound("b"), timeout=40, what="B bound after the victims")
    assert bound == {"b0": b_node}
    assert pool.bound("a").get("late") != b_node
    assert not leader.nominations.decided


def test_nomination_survives_a_daemon_restart(pool: Pool) -> None:
    b_node = _two_members(pool)
    policy = pool.policy(grace=20)
    first = pool.daemon(policy)
    uid, victims = _reclaim_with_slow_victims(pool, first, b_node)
    first.stop()
    second = pool.daemon(policy)
    _assert_new_leader_holds_then_binds(pool, second, b_node, uid, victims)


def test_nomination_survives_a_leader_change(pool: Pool) -> None:
    b_node = _two_members(pool)
    policy = pool.policy(grace=20)
    lease = fast_lease(pool)
    first = pool.daemon(policy, identity="first", **lease)
    wait_until(lambda: first.is_leader, timeout=10, what="first leads")
    standby = pool.daemon(policy, identity="standby", **lease)
    uid, victims = _reclaim_with_slow_victims(pool, first, b_node)
    assert not standby.is_leader and not standby.nominations.decided
    first.stop()
    wait_until(lambda: standby.is_leader, timeout=5, what="the standby takes over")
    _assert_new_leader_holds_then_binds(pool, standby, b_node, uid, victims)


def test_a_standby_explains_a_waiting_pod_as_the_leader_does(pool: Pool) -> None:
    """Any replica answers the API (the chart's Service): a standby's ExplainPending
    gives the engine's sentence of the pod, not "no scheduling decision yet" as if the
    pod had just arrived."""
    pool.add_member("a")
    pool.add_nodes("a", count=1, gpus=4)
    policy = pool.policy()
    lease = fast_lease(pool)
    first = pool.daemon(policy, identity="first", **lease)
    wait_until(lambda: first.is_leader, timeout=10, what="first leads")
    second = pool.daemon(policy, identity="second", **lease)
    pool.pod("a", "fills", gpus=3)
    wait_until(lambda: "fills" in pool.bound("a"), what="fills bound")
    pool.pod("a", "too-big", gpus=2)
    uid = next(p.metadata.uid for p in pool.pods("a") if p.metadata.name == "too-big")
    said = wait_until(
        lambda: first.last_decisions().explanations.get(uid), what="the leader's sentence"
    )
    assert "taken" in said or "idle" in said, said
    assert not second.is_leader
    # Its cache may see the bind of "fills" a moment later than the leader's.
    wait_until(
        lambda: second.published().decisions.explanations.get(uid) == said,
        timeout=10,
        what="the standby's sentence",
    )
    assert not second.is_leader


def test_a_standby_with_a_shorter_lease_waits_out_the_holders(
    control_plane: ControlPlane, namespace: str
) -> None:
    """Replicas given different --lease-seconds (a rolling change of the flag): the
    standby judged the holder's Lease expired by its own, shorter, duration and took it
    over while the holder, renewing well within its own deadline, still led: two
    leaders binding at once. As client-go does, it honours the holder's
    leaseDurationSeconds."""
    holder = LeaderElector(
        control_plane.scheduler,
        namespace,
        "fairpool-test",
        "slow",
        lease_seconds=8.0,
        renew_deadline=6.0,
        retry_seconds=3.0,
    ).start()
    standby = LeaderElector(
        control_plane.scheduler,
        namespace,
        "fairpool-test",
        "quick",
        lease_seconds=2.0,
        renew_deadline=1.5,
        retry_seconds=0.25,
    )
    try:
        wait_until(holder.is_leading, timeout=10, what="the holder leads")
        standby.start()
        both = standby_led = 0.0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            both += 0.05 * (holder.is_leading() and standby.is_leading())
            standby_led += 0.05 * standby.is_leading()
            time.sleep(0.05)
        assert (both, standby_led) == (0, 0), f"two leaders for {both:.1f}s"
        assert holder.is_leading() and standby.holder == "slow"
        # The holder dies without giving the Lease up: the standby takes over once the
        # holder's 8 s have passed since its last renewal (at most 3 s before it died),
        # not its own 2 s.
        holder.stop(release=False)
        died = time.monotonic()
        wait_until(standby.is_leading, timeout=20, every=0.05, what="the standby takes over")
        took_over = time.monotonic() - died
        assert 8.0 - 3.0 - 0.5 <= took_over <= 8.0 + 1.5, f"takeover after {took_over:.1f}s"
    finally:
        standby.stop()
        holder.stop()


def test_a_replica_that_lost_the_lease_while_marking_a_gangs_pod_leaves_it_as_it_was(
    control_plane: ControlPlane, namespace: str
) -> None:
    """An undo whose lease is lost between the DisruptionTarget mark and the deletion:
    the pod is not deleted, so the mark goes too (a Job whose gang the next leader
    finishes would ignore a real failure of that pod), and no GangBindUndone event
    goes out from the deposed leader (it did, saying the deletion failed)."""
    core = k8s.CoreV1Api(control_plane.admin)
    core.create_namespaced_pod(
        namespace,
        {  # type: ignore[arg-type]
            "metadata": {"name": "worker-0", "labels": {"fairpool.io/gang": "g"}},
            "spec": {
                "schedulerName": "fairpool",
                "containers": [{"name": "train", "image": "example.invalid/train:1"}],
            },
        },
    )
    raw = core.read_namespaced_pod("worker-0", namespace)
    pod = pod_info(control_plane.admin.sanitize_for_serialization(raw))

    def disruption() -> list[str]:
        current = core.read_namespaced_pod("worker-0", namespace)
        return [c.status for c in current.status.conditions or () if c.type == "DisruptionTarget"]

    leading = [True]
    marked: list[list[str]] = []
    recorder = EventRecorder(control_plane.scheduler)
    binder = Binder(control_plane.scheduler, ClusterCache(), recorder, may_bind=lambda: leading[0])
    mark = binder._mark_disrupted

    def mark_then_lose(target: PodInfo, message: str) -> None:
        mark(target, message)  # the patch outlasted --renew-deadline
        marked.append(disruption())
        leading[0] = False

    binder._mark_disrupted = mark_then_lose  # type: ignore[method-assign]
    try:
        binder._delete_with_event(pod, "gang g could not be bound whole")
        recorder.flush()
    finally:
        binder.close()
        recorder.close()
    assert marked == [["True"]], "the mark was written"
    assert core.read_namespaced_pod("worker-0", namespace).metadata.deletion_timestamp is None
    events = core.list_namespaced_event(namespace).items
    assert [e.message for e in events if e.reason == "GangBindUndone"] == []
    assert disruption() == []
