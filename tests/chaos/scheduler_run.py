"""Two `fairpool run` replicas under faults on a local control plane of their own.

The cluster: four members in their own namespaces, three owning 8-GPU kwok nodes and
one owning none (it only borrows, so owners reclaim from it), a workload of single pods
and gangs of several shapes arriving at random (`workload.Controller`). The replicas
elect a leader on a short Lease. The faults, one after the other:

- the leader is killed (SIGKILL) `kills` times and started again as a new standby: half
  the kills at a random moment, half the instant the audit log shows the leader's first
  bind of a gang (so in the middle of its binds);
- once a third of the kills are done, kube-apiserver is killed and started again; at two
  thirds, etcd (same data folder, same ports).

Then the workload stops arriving, the cluster settles, and the counts are taken from the
API server's state and from its audit log of Binding, Eviction and delete calls.
"""

from __future__ import annotations

import contextlib
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s

from policies.inventory import parse_inventory
from tests.chaos import audit, checks
from tests.chaos.workload import JOB_LABEL, Controller
from tests.controlplane import ControlPlane, start, stop
from tests.controlplane.nodes import create_nodes, wait_nodes_ready

GPU_MODEL = "NVIDIA-H100-80GB-HBM3"
NODES = {"north": 3, "bio": 3, "physics": 2, "startup": 0}
"""Member -> 8-GPU nodes it owns (64 GPUs; startup owns none and only borrows)."""
BORROWER = "startup"
BORROWER_PODS = 12
"""4-GPU pods the borrower submits at the start (48 of the 64 GPUs)."""
SYSTEM_NAMESPACE = "chaos-system"
LEASE = "fairpool-chaos"
SCHEDULER_USER = "fairpool"
PARTIAL_WINDOW = 10.0
"""Seconds a gang must stay partly bound at the end to count as left so; the binds of
one gang are answered in well under a second here."""


@dataclass(frozen=True)
class ChaosConfig:
    kills: int = 20
    seed: int = 7
    # fairpool run's own defaults: the failover measured is the one users get.
    lease_seconds: float = 10.0
    renew_deadline: float = 7.0
    retry_seconds: float = 2.0
    bind_workers: int = 2
    """Few bind workers, so a gang's binds take long enough to be killed in the middle."""
    jobs_per_second: float = 0.5
    pause: tuple[float, float] = (2.0, 6.0)
    """Seconds between a takeover and the next kill (uniform)."""
    settle_timeout: float = 180.0


@dataclass
class Failover:
    killed: str
    mid_gang: bool
    """Killed right after the audit log showed it binding a gang pod."""
    partial_after_kill: int
    """Gangs partly bound just after the kill (what the next leader has to repair)."""
    lease_seconds: float | None
    """Kill to the new leader's acquireTime."""
    first_bind_seconds: float | None
    """Kill to the first bind after the takeover (None: nothing to bind)."""


@dataclass
class Outage:
    component: str
    down_seconds: float
    """Kill to serving again."""
    binds_resume_seconds: float | None
    """Serving again to the next bind."""


@dataclass
class ChaosResult:
    config: ChaosConfig
    failovers: list[Failover] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    double_binds: dict[str, int] = field(default_factory=dict)
    overcommitted_samples: int = 0
    overcommitted: dict[str, tuple[int, int]] = field(default_factory=dict)
    partly_bound_at_end: dict[str, tuple[int, int]] = field(default_factory=dict)
    waiting_without_reason: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    """Pods the workload created that are gone though fairpool did not remove them."""
    unanswered_evictions: list[str] = field(default_factory=list)
    """Pods gone whose eviction fairpool sent but whose answer a killed kube-apiserver
    never gave (nor wrote to its audit log): removed by fairpool, not lost."""
    pods_created: int = 0
    binds: int = 0
    evictions: int = 0
    gang_bind_finished: int = 0
    gang_bind_undone: int = 0
    recreated: int = 0
    settle_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def lost(self) -> int:
        return len(self.waiting_without_reason) + len(self.vanished)

    def failover_max(self, attribute: str) -> float | None:
        values = [v for f in self.failovers if (v := getattr(f, attribute)) is not None]
        return max(values) if values else None

    def failover_median(self, attribute: str) -> float | None:
        values = [v for f in self.failovers if (v := getattr(f, attribute)) is not None]
        return statistics.median(values) if values else None


def _inventory() -> str:
    groups = [
        {"name": f"chaos-{m}", "owner": m, "count": n, "gpusPerNode": 8, "gpuModel": GPU_MODEL}
        for m, n in NODES.items()
        if n
    ]
    return yaml.safe_dump(
        {"apiVersion": "fairpool.io/v1", "kind": "ClusterInventory", "spec": {"nodeGroups": groups}}
    )


def _policy() -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "fairpool.io/v1",
            "kind": "Policy",
            "metadata": {"name": "chaos"},
            "spec": {
                "gpuModels": [{"name": GPU_MODEL, "hourlyCost": "2.40"}],
                "members": [{"name": m, "namespaces": [f"chaos-{m}"], "weight": 1} for m in NODES],
                "sharing": {"reclaimGracePeriodSeconds": 2},
            },
        }
    )


_UNANSWERED = re.compile(r"eviction of (\S+) failed: ProtocolError: \('Connection aborted")


class Replicas:
    """`fairpool run` processes by leader-election identity."""

    def __init__(self, plane: ControlPlane, policy: Path, logs: Path, config: ChaosConfig):
        self.plane = plane
        self.policy = policy
        self.logs = logs
        self.config = config
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._started = 0

    def start_one(self) -> str:
        identity = f"replica-{self._started}"
        self._started += 1
        c = self.config
        command = [
            str(Path(sys.executable).with_name("fairpool")),
            "run",
            "--kubeconfig",
            str(self.plane.kubeconfig("scheduler")),
            "--policy",
            str(self.policy),
            "--metrics-port",
            "0",
            "--metrics-address",
            "127.0.0.1",
            "--identity",
            identity,
            "--lease-namespace",
            SYSTEM_NAMESPACE,
            "--lease-name",
            LEASE,
            "--lease-seconds",
            str(c.lease_seconds),
            "--renew-deadline",
            str(c.renew_deadline),
            "--retry-seconds",
            str(c.retry_seconds),
            "--bind-workers",
            str(c.bind_workers),
        ]
        with (self.logs / f"{identity}.log").open("ab") as out:
            self.processes[identity] = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT
            )
        return identity

    def unanswered_evictions(self) -> set[str]:
        """Pods ("namespace/name") whose eviction a replica sent and whose connection the
        API server dropped before answering, from the replicas' logs."""
        found: set[str] = set()
        for log in self.logs.glob("replica-*.log"):
            found.update(_UNANSWERED.findall(log.read_text(errors="replace")))
        return found

    def ready(self, identity: str) -> bool:
        """The replica has its cache and campaigns for the Lease (its log says so)."""
        text = (self.logs / f"{identity}.log").read_text(errors="replace")
        return f"fairpool scheduler {identity} running" in text

    def kill(self, identity: str) -> float:
        process = self.processes.pop(identity)
        process.send_signal(signal.SIGKILL)
        killed = time.time()
        process.wait(timeout=30)
        return killed

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes.clear()


def _wait(check: Callable[[], Any], timeout: float, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # the API server may be restarting
            if (value := check()) is not None:
                return value
        time.sleep(every)
    return None


class ChaosRun:
    def __init__(self, config: ChaosConfig, workdir: Path, say: Callable[[str], None]) -> None:
        self.config = config
        self.workdir = workdir
        self.say = say
        self.random = random.Random(config.seed)
        self.result = ChaosResult(config)
        self.audit = audit.AuditLog(workdir / "audit" / "audit.log")
        self.namespaces = {m: f"chaos-{m}" for m in NODES}
        self._stop_sampling = threading.Event()

    # --- the cluster ------------------------------------------------------------------

    def run(self) -> ChaosResult:
        started = time.monotonic()
        directory = self.workdir / "controlplane"
        plane = start(
            directory,
            die_with_parent=True,
            apiserver_args=audit.apiserver_args(self.workdir / "audit"),
        )
        self.plane = plane
        replicas: Replicas | None = None
        controller: Controller | None = None
        sampler = threading.Thread(target=self._sample, name="chaos-sampler", daemon=True)
        try:
            self.core = k8s.CoreV1Api(plane.admin)
            self.leases = k8s.CoordinationV1Api(plane.admin)
            self._cluster()
            policy = self.workdir / "policy.yaml"
            policy.write_text(_policy())
            replicas = Replicas(plane, policy, self.workdir, self.config)
            replicas.start_one()
            replicas.start_one()
            controller = Controller(
                plane.admin, self.namespaces, self.config.seed, self.config.jobs_per_second
            )
            # The member owning no node fills most of the pool first: every owner's
            # later job reclaims from it.
            for _ in range(BORROWER_PODS):
                controller.submit(BORROWER, 1, 4)
            controller.start()
            self.controller = controller
            sampler.start()
            if _wait(self._holder, 120) is None:
                raise RuntimeError("no replica became leader in 120 s")
            self._faults(replicas)
            controller.submitting.clear()
            self._settle()
            # Nothing is created while the end is counted: a pod the controller put back
            # after the count's list (its first one reclaimed a moment before) would be
            # counted as created and not there, that is as lost.
            controller.stop()
            self._count(controller, replicas)
        finally:
            self._stop_sampling.set()
            if controller is not None:
                controller.stop()
            if replicas is not None:
                replicas.stop_all()
            if sampler.is_alive():
                sampler.join(timeout=30)
            stop(directory)
        self.result.seconds = time.monotonic() - started
        return self.result

    def _cluster(self) -> None:
        for namespace in [SYSTEM_NAMESPACE, *self.namespaces.values()]:
            self.core.create_namespace({"metadata": {"name": namespace}})  # type: ignore[arg-type]
        created = create_nodes(self.core, parse_inventory(_inventory()))
        wait_nodes_ready(self.core, created.created, timeout=60)
        self.capacity = {name: 8 for name in created.created}

    def _holder(self) -> tuple[str, float] | None:
        lease = self.leases.read_namespaced_lease(LEASE, SYSTEM_NAMESPACE, _request_timeout=5)
        spec = lease.spec
        if spec is None or not spec.holder_identity or spec.acquire_time is None:
            return None
        return spec.holder_identity, spec.acquire_time.timestamp()

    def _pods(self) -> list[Any]:
        """The workload's pods, in one list: one consistent state of the cluster (lists
        of one namespace after the other would mix states seconds apart)."""
        return list(
            self.core.list_pod_for_all_namespaces(
                label_selector=JOB_LABEL, _request_timeout=10
            ).items
        )

    def _sample(self) -> None:
        """Every 2 s: does a node hold more GPUs than it has?"""
        while not self._stop_sampling.wait(2.0):
            with contextlib.suppress(Exception):
                pods = self._pods()
                over = checks.overcommitted(self.capacity, pods)
                if over:
                    self.result.overcommitted_samples += 1
                    self.result.overcommitted.update(over)
                    self._note_overcommit(over, pods)

    def _note_overcommit(self, over: dict[str, tuple[int, int]], pods: list[Any]) -> None:
        """The pods on each over-committed node, into the run's folder (for the report)."""
        with (self.workdir / "overcommitted.txt").open("a") as out:
            for node in over:
                out.write(f"{time.time():.3f} {node} {over[node]}\n")
                for pod in pods:
                    if pod.spec.node_name == node:
                        out.write(
                            f"  {pod.metadata.namespace}/{pod.metadata.name} "
                            f"gpus={checks.gpus_of(pod)} phase={pod.status.phase} "
                            f"deleting={pod.metadata.deletion_timestamp} "
                            f"created={pod.metadata.creation_timestamp}\n"
                        )

    # --- faults -----------------------------------------------------------------------

    def _faults(self, replicas: Replicas) -> None:
        kills = self.config.kills
        apiserver_after = max(1, kills // 3)
        etcd_after = max(2, (2 * kills) // 3)
        time.sleep(self.random.uniform(*self.config.pause) + 5)  # let work pile up
        for number in range(1, kills + 1):
            self._kill_leader(replicas, mid_gang=number % 2 == 0)
            if number == apiserver_after:
                self._restart("kube-apiserver")
            if number == etcd_after:
                self._restart("etcd")
            time.sleep(self.random.uniform(*self.config.pause))

    def _gang_bind_seen(self, after: float) -> bool:
        gang_pods = {
            name for name, slot in self.controller.current_pods().items() if slot.gang_size > 1
        }
        return any(
            c.action == "bind" and c.ok and c.at >= after and c.pod in gang_pods
            for c in self.audit.poll()
        )

    def _kill_leader(self, replicas: Replicas, mid_gang: bool) -> None:
        holder = _wait(self._holder, 60)
        if holder is None or holder[0] not in replicas.processes:
            self.say(f"no live leader to kill (lease: {holder})")
            return
        leader = holder[0]
        # A standby that is still starting could not take over: the failover measured
        # is from a standby with its cache synced, as in a running deployment.
        for identity in list(replicas.processes):
            if _wait(lambda i=identity: True if replicas.ready(i) else None, 180) is None:
                raise RuntimeError(f"{identity} did not start in 180 s")
        if mid_gang:
            self.audit.poll()
            since = time.time()
            deadline = time.monotonic() + 60
            seen = False
            while time.monotonic() < deadline and not seen:
                seen = self._gang_bind_seen(since)
                if not seen:
                    time.sleep(0.005)
            mid_gang = seen
        killed_at = replicas.kill(leader)
        partial = _wait(lambda: len(checks.partly_bound_gangs(self._pods())), 30)
        replicas.start_one()
        taken = _wait(lambda: h if (h := self._holder()) and h[0] not in (leader, "") else None, 90)
        lease_seconds = taken[1] - killed_at if taken else None
        first_bind = None
        if taken is not None:
            bind_at = _wait(lambda: audit.first_bind(self._polled(), taken[1]), 30, every=0.2)
            first_bind = bind_at - killed_at if bind_at is not None else None
        failover = Failover(leader, mid_gang, partial or 0, lease_seconds, first_bind)
        self.result.failovers.append(failover)
        self.say(
            f"kill {len(self.result.failovers)}: {leader}"
            f"{' mid gang bind' if mid_gang else ''}, {failover.partial_after_kill} gangs "
            f"partly bound; lease taken after {_fmt(lease_seconds)} s, first bind after "
            f"{_fmt(first_bind)} s"
        )

    def _polled(self) -> list[audit.Call]:
        self.audit.poll()
        return self.audit.calls

    def _restart(self, component: str) -> None:
        record = self.plane.kill_process(component)
        down = time.time()
        time.sleep(2.0)
        self.plane.start_again(record)
        ready = time.time()
        resumed = _wait(lambda: audit.first_bind(self._polled(), ready), 60, every=0.2)
        outage = Outage(component, ready - down, resumed - ready if resumed is not None else None)
        self.result.outages.append(outage)
        self.say(
            f"{component} killed and started again: serving after {outage.down_seconds:.1f} s,"
            f" next bind {_fmt(outage.binds_resume_seconds)} s later"
        )

    # --- the end ----------------------------------------------------------------------

    def _explained(self) -> set[str]:
        uids: set[str] = set()
        for namespace in self.namespaces.values():
            for event in self.core.list_namespaced_event(namespace, _request_timeout=10).items:
                if event.reason == "FailedScheduling" and event.involved_object.uid:
                    uids.add(event.involved_object.uid)
        return uids

    def _settle(self) -> None:
        """Until no gang is partly bound and every waiting pod has fairpool's reason,
        three times in a row."""
        started = time.monotonic()
        calm = 0
        while time.monotonic() - started < self.config.settle_timeout and calm < 3:
            time.sleep(2.0)
            try:
                pods = self._pods()
                quiet = not checks.partly_bound_gangs(pods) and not (
                    checks.waiting_without_reason(pods, self._explained(), time.time(), 15.0)
                )
            except Exception:
                quiet = False
            calm = calm + 1 if quiet else 0
        self.result.settle_seconds = time.monotonic() - started

    def _left_partly_bound(self, pods: list[Any]) -> dict[str, tuple[int, int]]:
        """Gangs partly bound in `pods` and still so in every list for `PARTIAL_WINDOW`
        seconds: the queue is not empty once settled, so a pod finishing a moment before
        the count lets the leader bind a waiting gang while the count lists the pods."""
        samples = [checks.partly_bound_gangs(pods)]
        deadline = time.monotonic() + PARTIAL_WINDOW
        while samples[-1] and time.monotonic() < deadline:
            time.sleep(1.0)
            samples.append(checks.partly_bound_gangs(self._pods()))
        return checks.lasting(samples)

    def _count(self, controller: Controller, replicas: Replicas) -> None:
        r = self.result
        pods = self._pods()
        calls = self._polled()
        r.double_binds = audit.double_binds(calls)
        over = checks.overcommitted(self.capacity, pods)
        if over:
            r.overcommitted_samples += 1
            r.overcommitted.update(over)
        r.partly_bound_at_end = self._left_partly_bound(pods)
        r.waiting_without_reason = checks.waiting_without_reason(
            pods, self._explained(), time.time(), 15.0
        )
        existing = {f"{p.metadata.namespace}/{p.metadata.name}" for p in pods}
        removed = audit.removed_by(calls, SCHEDULER_USER)
        gone = controller.created_pods() - existing - removed
        unanswered = replicas.unanswered_evictions()
        r.unanswered_evictions = sorted(gone & unanswered)
        r.vanished = sorted(gone - unanswered)
        r.pods_created = len(controller.created_pods())
        r.recreated = controller.recreated
        r.binds = sum(c.action == "bind" and c.ok for c in calls)
        r.evictions = sum(c.action == "evict" and c.ok for c in calls)
        for namespace in self.namespaces.values():
            for event in self.core.list_namespaced_event(namespace).items:
                if event.reason == "GangBindFinished":
                    r.gang_bind_finished += event.count or 1
                elif event.reason == "GangBindUndone":
                    r.gang_bind_undone += event.count or 1


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def run_chaos(
    config: ChaosConfig, workdir: Path, say: Callable[[str], None] = print
) -> ChaosResult:
    """The whole run; every process it started is stopped when it returns or fails."""
    return ChaosRun(config, workdir, say).run()
