"""Binding throughput on the local control plane: fairpool vs kube-scheduler vs a null binder.

One fresh control plane (etcd, kube-apiserver, kwok) with 1,000 kwok nodes x 8 GPUs owned
by four members. Each scenario creates its pods at once (16 client threads) and measures
pods bound per second from the first creation to the last bind, as seen by a watch:

- fairpool: `fairpool run` (a separate process, 16 bind workers, no leader election);
- kube-scheduler: the one built by the control-plane package, default configuration
  (its client is rate-limited to 50 requests/s), and again with a client QPS of 1,000;
- null binder: a separate process that binds round-robin with no logic, the same 16
  workers and fairpool's own credentials (the same authorization and API priority and
  fairness path), i.e. what this machine's API server allows that scheduler;
- fairpool with 500 gangs of 8 pods.

Pods never finish (no duration annotation), so all of a scenario's pods stay bound until
the scenario's pods are deleted. `--backlog-rounds N` also shows the CPU each binder's
process spent from its start to the last bind, per pod, beside the rate: the rate of one
binder swings by a quarter or more between rounds on a shared machine, and what fairpool
costs beyond binding is in its CPU. The two cores of the machine are shared by everything,
so the creation rate bounds every figure; it is shown too.
"""

from __future__ import annotations

import compileall
import contextlib
import dataclasses
import itertools
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil
import yaml
from kubernetes import client as k8s
from rich.console import Console
from rich.table import Table

from scheduler.cli.tables import print_table
from tests.controlplane import ControlPlane

NODES = 1_000
GPUS_PER_NODE = 8
PODS = 5_000
GANGS = 500
GANG_SIZE = 8
MEMBERS = ("uni-north", "lab-bio", "ai-startup", "physics")
PACKAGES = ("scheduler", "policies", "reports", "proto", "bench", "tests")
"""The project's packages, compiled to bytecode before any binder starts."""
GPU_MODEL = "NVIDIA-H100-80GB-HBM3"
WORKERS = 16
NULL_BINDER = "null-binder"
TIMEOUT = 600.0
NODE_HEARTBEAT_S = 75.0
"""The longest delay of kwok's node heartbeat stage (tests/controlplane/stages)."""


@dataclass(frozen=True)
class Result:
    scenario: str
    mode: str
    """burst: pods created while the scheduler runs; backlog: pods exist first."""
    pods: int
    created_seconds: float
    """First creation to last creation."""
    bound_seconds: float
    """burst: first creation to last bind; backlog: scheduler start to last bind."""
    binding_seconds: float = 0.0
    """First bind to last bind: the pace of binding alone, without start-up."""
    load: float = 0.0
    """1-minute load average when the scenario ended."""
    round: int = 0
    api_binding_seconds: float = 0.0
    """First to last PodScheduled condition time the API server recorded (a second
    measure of `binding_seconds`, in whole seconds)."""
    binder_cpu_seconds: float = 0.0
    """CPU the binder's process used from its start to the last bind (backlog only)."""
    plane_cpu_seconds: float = 0.0
    """CPU the API server, etcd and kwok used over the same span (backlog only)."""

    @property
    def binder_cpu_ms_per_pod(self) -> float:
        return 1000 * self.binder_cpu_seconds / self.pods if self.pods else 0.0

    @property
    def plane_cpu_ms_per_pod(self) -> float:
        return 1000 * self.plane_cpu_seconds / self.pods if self.pods else 0.0

    @property
    def plane_cpus(self) -> float:
        """The control plane's CPU over the span divided by its length (cores busy)."""
        return self.plane_cpu_seconds / self.bound_seconds if self.bound_seconds else 0.0

    @property
    def api_binding_rate(self) -> float:
        return self.pods / (self.api_binding_seconds + 1) if self.api_binding_seconds else 0.0

    @property
    def binding_rate(self) -> float:
        return (self.pods - 1) / self.binding_seconds if self.binding_seconds else 0.0

    @property
    def rate(self) -> float:
        return self.pods / self.bound_seconds if self.bound_seconds else 0.0

    @property
    def create_rate(self) -> float:
        return self.pods / self.created_seconds if self.created_seconds else 0.0


# --- the cluster --------------------------------------------------------------------------


def _inventory_text() -> str:
    per = NODES // len(MEMBERS)
    groups = [
        {
            "name": f"bench-{m}",
            "owner": m,
            "count": per,
            "gpusPerNode": GPUS_PER_NODE,
            "gpuModel": GPU_MODEL,
            "cpu": 96,
            "memoryGiB": 1024,
        }
        for m in MEMBERS
    ]
    return yaml.safe_dump(
        {"apiVersion": "fairpool.io/v1", "kind": "ClusterInventory", "spec": {"nodeGroups": groups}}
    )


def _policy_text() -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "fairpool.io/v1",
            "kind": "Policy",
            "metadata": {"name": "bench"},
            "spec": {
                "gpuModels": [{"name": GPU_MODEL, "hourlyCost": "2.40"}],
                "members": [{"name": m, "namespaces": [f"bench-{m}"]} for m in MEMBERS],
            },
        }
    )


def _pod(name: str, scheduler: str, gang: tuple[str, int] | None = None) -> dict[str, Any]:
    labels = {"fairpool.io/bench": "true"}
    annotations: dict[str, str] = {}
    if gang is not None:
        labels["fairpool.io/gang"] = gang[0]
        annotations["fairpool.io/gang-size"] = str(gang[1])
    return {
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "schedulerName": scheduler,
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "train",
                    "image": "example.invalid/train:1",
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "1Gi"},
                        "limits": {"nvidia.com/gpu": "1"},
                    },
                }
            ],
        },
    }


class BindWatch:
    """Records when each bench pod is first seen bound, from a watch in its own thread."""

    def __init__(self, api: k8s.ApiClient) -> None:
        from scheduler.k8s.informer import Informer

        self.bound: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        core = k8s.CoreV1Api(api)
        self._informer = Informer(
            "pods",
            core.list_pod_for_all_namespaces,
            self,
            self._stop,
            label_selector="fairpool.io/bench=true",
            resync_seconds=3600,
        ).start()
        self._informer.synced.wait(30)

    def replace(self, kind: str, objects: list[Mapping[str, Any]]) -> None:
        for obj in objects:
            self.apply(kind, "ADDED", obj)

    def apply(self, kind: str, event_type: str, obj: Mapping[str, Any]) -> None:
        if event_type == "DELETED" or not (obj.get("spec") or {}).get("nodeName"):
            return
        uid = obj["metadata"]["uid"]
        with self._lock:
            self.bound.setdefault(uid, time.monotonic())

    def reset(self) -> None:
        with self._lock:
            self.bound.clear()

    def count(self) -> int:
        with self._lock:
            return len(self.bound)

    def last(self) -> float:
        with self._lock:
            return max(self.bound.values())

    def first(self) -> float:
        with self._lock:
            return min(self.bound.values())

    def close(self) -> None:
        self._stop.set()
        self._informer.join(5)


def _create_all(
    core: k8s.CoreV1Api, bodies: list[tuple[str, dict[str, Any]]]
) -> tuple[float, float]:
    """Create the pods with WORKERS threads; (first start, last end) monotonic."""
    first = time.monotonic()

    def create(item: tuple[str, dict[str, Any]]) -> None:
        namespace, body = item
        for attempt in range(5):
            try:
                core.create_namespaced_pod(namespace, body, _preload_content=False)  # type: ignore[arg-type]
                return
            except Exception:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(create, bodies))
    return first, time.monotonic()


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def _delete_bench_pods(core: k8s.CoreV1Api, watch: BindWatch) -> None:
    for m in MEMBERS:
        # A collection delete of thousands of pods may outlast the API server's request
        # timeout (504) on a busy machine; it goes on server-side, and is asked again.
        for attempt in range(5):
            try:
                core.delete_collection_namespaced_pod(
                    f"bench-{m}", label_selector="fairpool.io/bench=true", grace_period_seconds=0
                )
                break
            except k8s.exceptions.ApiException as exc:
                if exc.status not in (500, 503, 504) or attempt == 4:
                    raise
                time.sleep(5)
    _wait(
        lambda: (
            not core.list_pod_for_all_namespaces(
                label_selector="fairpool.io/bench=true", limit=1
            ).items
        ),
        300,
        "bench pods deleted",
    )
    watch.reset()


class Scheduler(Protocol):
    plane: ControlPlane

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def pid(self) -> int | None: ...


PLANE_PROCESSES = ("kube-apiserver", "etcd", "kwok")


def _cpu_seconds(process: psutil.Process | int | None) -> float:
    """User + system CPU of one process (or pid) so far (0 once it is gone)."""
    if process is None:
        return 0.0
    try:
        if isinstance(process, int):
            process = psutil.Process(process)
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def _plane_cpu_seconds(plane: ControlPlane) -> float:
    # ProcessRecord.process() checks the start time, so a reused pid is never counted.
    records = (plane.state.record(name) for name in PLANE_PROCESSES)
    return sum(_cpu_seconds(r.process()) for r in records if r is not None)


def _burst(
    name: str,
    scheduler: Scheduler,
    core: k8s.CoreV1Api,
    watch: BindWatch,
    bodies: list[tuple[str, dict[str, Any]]],
    console: Console,
) -> Result:
    """The scheduler runs; all pods are created at once: first creation -> last bind."""
    scheduler.start()
    try:
        # A warm-up pod proves the scheduler is up (caches synced) before the clock starts.
        scheduler_name = bodies[0][1]["spec"]["schedulerName"]
        warm = _pod(f"warm-{scheduler_name}", scheduler_name)
        core.create_namespaced_pod(bodies[0][0], warm)  # type: ignore[arg-type]
        _wait(lambda: watch.count() >= 1, 120, f"{name}: warm-up pod bound")
        _delete_bench_pods(core, watch)
        with console.status(f"{name}: creating and binding {len(bodies)} pods"):
            first, last_created = _create_all(core, bodies)
            _wait(lambda: watch.count() >= len(bodies), TIMEOUT, f"{name}: all pods bound")
        result = Result(
            name,
            "burst",
            len(bodies),
            last_created - first,
            watch.last() - first,
            watch.last() - watch.first(),
            os.getloadavg()[0],
        )
    finally:
        scheduler.stop()
    _print(console, result)
    _delete_bench_pods(core, watch)
    return result


def _backlog(
    name: str,
    scheduler: Scheduler,
    core: k8s.CoreV1Api,
    watch: BindWatch,
    bodies: list[tuple[str, dict[str, Any]]],
    console: Console,
) -> Result:
    """All pods exist before the scheduler starts: its start -> last bind (start-up,
    informer sync and binding, without the API server also absorbing the creations).

    Beside the rate, the CPU the binder and the control plane spent over the same span:
    on a shared 2-core machine the rate of one binder swings by a quarter between rounds,
    and the CPU a binder spends per pod is its own cost (it still grows somewhat in a slow
    round: the watches run longer)."""
    with console.status(f"{name}: creating {len(bodies)} pods with no scheduler running"):
        first, last_created = _create_all(core, bodies)
    with console.status(f"{name}: binding the backlog"):
        plane_began = _plane_cpu_seconds(scheduler.plane)
        started = time.monotonic()
        scheduler.start()
        try:
            _wait(lambda: watch.count() >= len(bodies), TIMEOUT, f"{name}: all pods bound")
            binder_cpu = _cpu_seconds(scheduler.pid())
            plane_cpu = _plane_cpu_seconds(scheduler.plane) - plane_began
        finally:
            scheduler.stop()
    result = Result(
        name,
        "backlog",
        len(bodies),
        last_created - first,
        watch.last() - started,
        watch.last() - watch.first(),
        os.getloadavg()[0],
        api_binding_seconds=_scheduled_span(core),
        binder_cpu_seconds=binder_cpu,
        plane_cpu_seconds=plane_cpu,
    )
    _print(console, result)
    _delete_bench_pods(core, watch)
    return result


def _scheduled_span(core: k8s.CoreV1Api) -> float:
    """The same pace measured a second way, from the API server's own record: first to
    last `PodScheduled` condition time of the bench pods (whole seconds)."""
    times = []
    token = None
    while True:
        page = core.list_pod_for_all_namespaces(
            label_selector="fairpool.io/bench=true", limit=1000, _continue=token
        )
        for pod in page.items:
            for condition in (pod.status and pod.status.conditions) or []:
                if (
                    condition.type == "PodScheduled"
                    and condition.status == "True"
                    and condition.last_transition_time is not None
                ):
                    times.append(condition.last_transition_time.timestamp())
        token = page.metadata._continue if page.metadata else None
        if not token:
            break
    return max(times) - min(times) if len(times) > 1 else 0.0


def _print(console: Console, r: Result) -> None:
    console.print(
        f"{r.scenario} ({r.mode}): {r.pods} pods bound in {r.bound_seconds:.1f}s "
        f"({r.rate:.0f}/s; first to last bind {r.binding_rate:.0f}/s; "
        f"created at {r.create_rate:.0f}/s; load average {r.load:.1f})"
    )


def _single_pods(scheduler: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"bench-{MEMBERS[i % len(MEMBERS)]}", _pod(f"{scheduler}-{i}", scheduler))
        for i in range(PODS)
    ]


def _gang_pods() -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            f"bench-{MEMBERS[g % len(MEMBERS)]}",
            _pod(f"gang{g}-{k}", "fairpool", (f"gang{g}", GANG_SIZE)),
        )
        for g in range(GANGS)
        for k in range(GANG_SIZE)
    ]


# --- the null binder (a child process) ----------------------------------------------------


def _null_binder(kubeconfig: str, nodes: list[str], stop: Any) -> None:
    """Bind every pending pod of `NULL_BINDER` to the next node, round-robin."""
    from scheduler.k8s.client import api_client, read_body
    from scheduler.k8s.informer import Informer

    api = api_client(kubeconfig, pool_size=WORKERS + 4)
    core = k8s.CoreV1Api(api)
    pool = ThreadPoolExecutor(WORKERS)
    next_node = itertools.cycle(nodes)
    seen: set[str] = set()
    lock = threading.Lock()

    def bind(namespace: str, name: str, uid: str, node: str) -> None:
        body = {
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "target": {"kind": "Node", "name": node},
        }
        with contextlib.suppress(Exception):
            read_body(
                core.create_namespaced_pod_binding(
                    name,
                    namespace,
                    body,  # type: ignore[arg-type]
                    _preload_content=False,
                )
            )

    class Sink:
        def replace(self, kind: str, objects: list[Mapping[str, Any]]) -> None:
            for obj in objects:
                self.apply(kind, "ADDED", obj)

        def apply(self, kind: str, event_type: str, obj: Mapping[str, Any]) -> None:
            meta, spec = obj["metadata"], obj.get("spec") or {}
            if event_type == "DELETED" or spec.get("nodeName"):
                return
            with lock:
                if meta["uid"] in seen:
                    return
                seen.add(meta["uid"])
                node = next(next_node)
            pool.submit(bind, meta["namespace"], meta["name"], meta["uid"], node)

    done = threading.Event()
    informer = Informer(
        "pods",
        core.list_pod_for_all_namespaces,
        Sink(),
        done,
        field_selector=f"spec.schedulerName={NULL_BINDER}",
    ).start()
    stop.wait()
    done.set()
    informer.join(5)
    pool.shutdown(wait=False, cancel_futures=True)


# --- the schedulers -----------------------------------------------------------------------


class FairpoolProcess:
    """`fairpool run` in a process of its own (its GIL is not the bench's)."""

    def __init__(self, plane: ControlPlane, workdir: Path, *extra: str) -> None:
        self.plane = plane
        self.extra = extra
        self.policy = workdir / "policy.yaml"
        self.policy.write_text(_policy_text())
        self.log = workdir / "fairpool.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
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
                    "--no-leader-elect",
                    "--bind-workers",
                    str(WORKERS),
                    "--log-level",
                    os.environ.get("FAIRPOOL_BENCH_LOG_LEVEL", "WARNING"),
                    *self.extra,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None


class KubeScheduler:
    """The kube-scheduler the control-plane package builds: default configuration (its
    client is limited to 50 requests/s), or with `args` (e.g. a higher client QPS)."""

    def __init__(self, plane: ControlPlane, *args: str) -> None:
        self.plane = plane
        self.args = args

    def start(self) -> None:
        self.plane.start_kube_scheduler(*self.args)

    def pid(self) -> int | None:
        record = self.plane.state.record("kube-scheduler")
        return record.pid if record is not None else None

    def stop(self) -> None:
        self.plane.stop_process("kube-scheduler")


class NullBinderProcess:
    def __init__(self, plane: ControlPlane, nodes: list[str]) -> None:
        self.plane = plane
        self.nodes = nodes
        self.context = mp.get_context("spawn")
        self.stop_event = self.context.Event()
        self.process: Any = None

    def start(self) -> None:
        self.stop_event.clear()
        self.process = self.context.Process(
            target=_null_binder,
            args=(str(self.plane.kubeconfig("scheduler")), self.nodes, self.stop_event),
            daemon=True,
        )
        self.process.start()

    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self) -> None:
        self.stop_event.set()
        if self.process is not None:
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
            self.process = None


# --- the run ------------------------------------------------------------------------------


@dataclass
class Bench:
    """One control plane with its kwok nodes, the bench namespaces and the bind watch."""

    workdir: Path
    plane: ControlPlane
    core: k8s.CoreV1Api
    watch: BindWatch
    nodes: list[str]
    ready_at: float
    """time.monotonic() when every node was Ready."""

    def until_heartbeats(self, console: Console) -> None:
        """Wait until kwok beats the nodes' heartbeats: from then on the API server
        absorbs about 15 node status writes a second (1,000 nodes, a beat each every 60
        to 75 s: tests/controlplane/stages/node-stages.yaml). Without the wait, the first
        contender alone would bind on a cluster with none."""
        left = self.ready_at + NODE_HEARTBEAT_S - time.monotonic()
        if left > 0:
            with console.status(f"waiting {left:.0f}s for the nodes' first heartbeats"):
                time.sleep(left)


def _precompile() -> None:
    """Compile the project's modules to bytecode, as the image does (`compileall` in the
    Containerfile) and pip does for an installed package. From a source checkout on a
    machine that sets PYTHONDONTWRITEBYTECODE, each binder process would compile them
    again at its start, which no deployment pays: about 0.4 s of fairpool's start-up,
    less of the null binder's, which imports less."""
    root = Path(__file__).resolve().parent.parent
    for package in PACKAGES:
        compileall.compile_dir(root / package, quiet=1)


@contextlib.contextmanager
def bench_cluster(console: Console) -> Iterator[Bench]:
    from policies.inventory import parse_inventory
    from tests.controlplane import start, stop
    from tests.controlplane.nodes import create_nodes, wait_nodes_ready

    _precompile()
    workdir = Path(tempfile.mkdtemp(prefix="fairpool-bench-k8s-"))
    plane = start(workdir / "cluster", die_with_parent=True, console=console)
    try:
        configuration = plane.api_client("admin").configuration
        configuration.connection_pool_maxsize = WORKERS + 4
        admin = k8s.ApiClient(configuration)
        core = k8s.CoreV1Api(admin)
        for m in MEMBERS:
            core.create_namespace({"metadata": {"name": f"bench-{m}"}})  # type: ignore[arg-type]
        with console.status(f"creating {NODES} kwok nodes"):
            created = create_nodes(core, parse_inventory(_inventory_text()), concurrency=WORKERS)
            wait_nodes_ready(core, created.created, timeout=300)
        ready_at = time.monotonic()
        console.print(f"{len(created.created)} nodes Ready in {created.seconds:.1f}s")
        watch = BindWatch(admin)
        try:
            yield Bench(workdir, plane, core, watch, created.created, ready_at)
        finally:
            watch.close()
    finally:
        stop(workdir / "cluster")
        # The cluster's data is tens of MB a run; fairpool's log (every round) is kept, to
        # look into a slow round afterwards.
        shutil.rmtree(workdir / "cluster", ignore_errors=True)
        console.print(f"fairpool's log: {workdir / 'fairpool.log'}")


def run(console: Console) -> None:
    results: list[Result] = []
    with bench_cluster(console) as b:
        core, watch = b.core, b.watch
        fairpool = FairpoolProcess(b.plane, b.workdir)
        kube = KubeScheduler(b.plane)
        fast_kube = KubeScheduler(b.plane, "--kube-api-qps=1000", "--kube-api-burst=1000")
        null = NullBinderProcess(b.plane, b.nodes)
        gangs = f"fairpool, {GANGS} gangs of {GANG_SIZE}"
        for measure in (_burst, _backlog):
            results.append(
                measure("fairpool", fairpool, core, watch, _single_pods("fairpool"), console)
            )
            results.append(measure(gangs, fairpool, core, watch, _gang_pods(), console))
            results.append(
                measure(
                    "kube-scheduler", kube, core, watch, _single_pods("default-scheduler"), console
                )
            )
            results.append(
                measure(
                    "kube-scheduler, client QPS 1000",
                    fast_kube,
                    core,
                    watch,
                    _single_pods("default-scheduler"),
                    console,
                )
            )
            results.append(
                measure("null binder", null, core, watch, _single_pods(NULL_BINDER), console)
            )
    _table(console, results)


def backlog_rounds(console: Console, rounds: int, warnings_only: bool = False) -> list[Result]:
    """The backlog (all pods created first) bound by the null binder and by fairpool (and
    with `warnings_only`, fairpool posting no Scheduled events), in turn, `rounds` times
    on the same cluster, each round starting with the next contender: each fairpool
    figure is compared with the null binder's of its own round."""
    results: list[Result] = []
    with bench_cluster(console) as b:
        contenders: list[tuple[str, Scheduler, str]] = [
            ("null binder", NullBinderProcess(b.plane, b.nodes), NULL_BINDER),
            ("fairpool", FairpoolProcess(b.plane, b.workdir), "fairpool"),
        ]
        if warnings_only:
            contenders.append(
                (
                    "fairpool, --events warnings",
                    FairpoolProcess(b.plane, b.workdir, "--events", "warnings"),
                    "fairpool",
                )
            )
        b.until_heartbeats(console)
        for n in range(1, rounds + 1):
            turn = (n - 1) % len(contenders)
            for name, scheduler, scheduler_name in contenders[turn:] + contenders[:turn]:
                result = _backlog(
                    name, scheduler, b.core, b.watch, _single_pods(scheduler_name), console
                )
                results.append(dataclasses.replace(result, round=n))
    _rounds_table(console, results)
    return results


def _rounds_table(console: Console, results: list[Result]) -> None:
    table = Table(
        title=f"Backlog of {PODS:,} pods created first, {NODES} kwok nodes x {GPUS_PER_NODE} "
        f"GPUs, {WORKERS} bind workers each: every round on the same cluster, "
        f"{os.cpu_count()} cores shared",
        title_justify="left",
    )
    for column in (
        "round",
        "binder",
        "start to last bind s",
        "pods bound / s",
        "vs null binder",
        "first to last bind / s",
        "vs null binder ",
        "by PodScheduled / s",
        "binder CPU ms / pod",
        "vs null binder  ",
        "API server + etcd + kwok CPU ms / pod",
        "their cores busy",
        "load average",
    ):
        table.add_column(column, justify="left" if column in ("round", "binder") else "right")
    for r in results:
        null = next(x for x in results if x.round == r.round and x.scenario == "null binder")
        table.add_row(
            str(r.round),
            r.scenario,
            f"{r.bound_seconds:.1f}",
            f"{r.rate:.0f}",
            f"{r.rate / null.rate:.0%}" if null.rate else "-",
            f"{r.binding_rate:.0f}",
            f"{r.binding_rate / null.binding_rate:.0%}" if null.binding_rate else "-",
            f"{r.api_binding_rate:.0f}",
            f"{r.binder_cpu_ms_per_pod:.2f}",
            f"{r.binder_cpu_seconds / null.binder_cpu_seconds:.0%}"
            if null.binder_cpu_seconds
            else "-",
            f"{r.plane_cpu_ms_per_pod:.2f}",
            f"{r.plane_cpus:.2f}",
            f"{r.load:.1f}",
        )
    print_table(console, table)
    for name in sorted({r.scenario for r in results} - {"null binder"}):
        pairs = [
            (r, n)
            for r in results
            for n in results
            if r.scenario == name and n.scenario == "null binder" and n.round == r.round
        ]
        ratios = [r.rate / n.rate for r, n in pairs if n.rate]
        if ratios:
            console.print(
                f"{name}: {min(ratios):.0%} to {max(ratios):.0%} of the null binder's rate "
                f"(start to last bind), mean {sum(ratios) / len(ratios):.0%} over "
                f"{len(ratios)} rounds"
            )
        cpu = [
            r.binder_cpu_seconds / n.binder_cpu_seconds for r, n in pairs if n.binder_cpu_seconds
        ]
        if cpu:
            console.print(
                f"{name}: its process used {min(cpu):.0%} to {max(cpu):.0%} of the null "
                f"binder's CPU for the same pods, mean {sum(cpu) / len(cpu):.0%}"
            )
    console.print(
        "pods bound / s: from the binder's start (process start, informer sync, first "
        "cycle) to the last bind; first to last bind: the pace of binding alone, as the "
        "bench's watch saw it; by PodScheduled: the same pace from the API server's "
        "condition times (whole seconds); CPU: user + system seconds of the binder's "
        "process from its start to the last bind, and of the control plane's three "
        "processes over the same span, per pod; their cores busy: that CPU divided by the "
        "span. When it is about the same whichever binder runs, the control plane has all "
        "the CPU it can get: the rate then follows the CPU the binder spends per pod, and "
        "the control plane's CPU per pod only follows the span"
    )


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.bench_k8s")
    parser.add_argument(
        "--backlog-rounds",
        type=int,
        default=0,
        help="only the backlog, null binder against fairpool, this many rounds",
    )
    parser.add_argument(
        "--with-warnings-only",
        action="store_true",
        help="in the rounds, also fairpool with --events warnings",
    )
    args = parser.parse_args(argv)
    console = Console()
    if args.backlog_rounds > 0:
        backlog_rounds(console, args.backlog_rounds, args.with_warnings_only)
    else:
        run(console)
    return 0


def _table(console: Console, results: list[Result]) -> None:
    table = Table(
        title=f"Binding throughput: {NODES} kwok nodes x {GPUS_PER_NODE} GPUs, "
        f"{os.cpu_count()} cores shared by the API server, etcd, kwok and the binders"
    )
    table.add_column("scenario")
    table.add_column("mode")
    table.add_column("pods", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("pods bound / s", justify="right")
    table.add_column("vs kube-scheduler", justify="right")
    table.add_column("vs null binder", justify="right")
    table.add_column("pods created / s", justify="right")
    for r in results:
        same_mode = {x.scenario: x for x in results if x.mode == r.mode}
        kube, null = same_mode.get("kube-scheduler"), same_mode.get("null binder")
        table.add_row(
            r.scenario,
            r.mode,
            f"{r.pods:,}",
            f"{r.bound_seconds:.1f}",
            f"{r.rate:.0f}",
            f"{r.rate / kube.rate:.0%}" if kube and kube.rate else "-",
            f"{r.rate / null.rate:.0%}" if null and null.rate else "-",
            f"{r.create_rate:.0f}",
        )
    print_table(console, table)
    console.print(
        "burst: first creation -> last bind, pods created while the scheduler runs; "
        "backlog: scheduler start -> last bind, all pods created first"
    )
    console.print(json.dumps({f"{r.scenario} ({r.mode})": round(r.rate, 1) for r in results}))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
