"""Soak: the daemon with its API on the local control plane for N minutes, under mixed
clients, while pods keep finishing and being replaced.

`fairpool run --tokens ...` (a process of its own) schedules 10,000 pods (a tenth of the
jobs gangs of 4) on 1,000 kwok nodes of 8 GPUs: more than the cluster holds, so
thousands always wait. Each pod runs for 60 to 240 s (kwok completes it); the bench then
deletes it and creates another in its place, so the scheduler keeps binding. After a
warm-up, CLIENTS gRPC clients in another process call the API at PACED_RATE calls/s in
all (GetEntitlements, ExplainPending on pods that wait, ListPending, ListPolicyVersions,
ValidatePolicy with generated drafts) while WATCHERS WatchPolicy streams stay open.

Checked: no call answered UNKNOWN (an unhandled exception in the server), the daemon
still running at the end and stopping cleanly. Reported: the daemon's RSS sampled every
SAMPLE_SECONDS as a table per minute and its slope after the warm-up (MB per minute),
binds per second, and the GetEntitlements latency per minute with the clients on (each
call timed from when it was due, as `bench_api`'s paced load times it).

`python -m bench soak` runs a short soak (`make bench`); `python -m bench.bench_soak
--minutes 30` the full one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
import yaml
from kubernetes import client as k8s
from rich.console import Console
from rich.table import Table

from proto.fairpool.v1 import policy_pb2, policy_pb2_grpc, share_pb2, share_pb2_grpc
from scheduler.cli.tables import print_table
from tests.controlplane import ControlPlane

GPU_MODEL = "NVIDIA-H100-80GB-HBM3"
MEMBERS = ("uni-north", "lab-bio", "ai-startup", "physics")
TOKEN = "soak-admin-0123456789"  # at least 16 characters, as the API requires
LABEL = "fairpool.io/soak"
CLIENTS = 50
WATCHERS = 4
PACED_RATE = 250.0
SAMPLE_SECONDS = 10.0
TARGET_P99_MS = 50.0


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 2.0
    """Minutes with the clients on (after the warm-up)."""
    warmup_minutes: float = 1.0
    """Minutes of scheduling alone first: the backlog bound, RSS grown to its level."""
    nodes: int = 1_000
    pods: int = 10_000
    gpus_per_node: int = 8
    clients: int = CLIENTS
    watchers: int = WATCHERS
    rate: float = PACED_RATE
    min_seconds: float = 60.0
    max_seconds: float = 240.0
    """A pod runs this long (uniformly drawn) before kwok completes it."""
    scheduler_name: str = "fairpool"
    prefix: str = "soak"
    node_labels: Mapping[str, str] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] = field(default_factory=dict)


# --- the workload -------------------------------------------------------------------------


def policy_text(config: SoakConfig, **member_fields: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "fairpool.io/v1",
            "kind": "Policy",
            "metadata": {"name": config.prefix},
            "spec": {
                "gpuModels": [{"name": GPU_MODEL, "hourlyCost": "2.40"}],
                "members": [
                    {"name": m, "namespaces": [f"{config.prefix}-{m}"], **member_fields}
                    for m in MEMBERS
                ],
                "sharing": {"reclaimGracePeriodSeconds": 0},
            },
        }
    )


def inventory_text(config: SoakConfig) -> str:
    per = max(1, config.nodes // len(MEMBERS))
    groups = [
        {
            "name": f"{config.prefix}-{m}",
            "owner": m,
            "count": per,
            "gpusPerNode": config.gpus_per_node,
            "gpuModel": GPU_MODEL,
            "cpu": 96,
            "memoryGiB": 1024,
        }
        for m in MEMBERS
    ]
    return yaml.safe_dump(
        {"apiVersion": "fairpool.io/v1", "kind": "ClusterInventory", "spec": {"nodeGroups": groups}}
    )


@dataclass(frozen=True)
class Job:
    """One slot of the workload: a single pod or a gang of 4, replaced when it ends."""

    slot: int
    member: str
    size: int
    gpus: int


def jobs(config: SoakConfig) -> list[Job]:
    out: list[Job] = []
    pods = 0
    for slot in itertools.count():
        if pods >= config.pods:
            break
        size = 4 if slot % 10 == 0 else 1
        out.append(Job(slot, MEMBERS[slot % len(MEMBERS)], size, 2 if slot % 3 == 0 else 1))
        pods += size
    return out


def pod_bodies(
    config: SoakConfig, job: Job, generation: int, rng: random.Random
) -> list[dict[str, Any]]:
    seconds = round(rng.uniform(config.min_seconds, config.max_seconds), 1)
    name = f"job{job.slot}-g{generation}"
    bodies = []
    for k in range(job.size):
        labels = {
            LABEL: config.prefix,
            "fairpool.io/soak-slot": str(job.slot),
            "fairpool.io/soak-generation": str(generation),
        }
        annotations = {"fairpool.io/duration-seconds": str(seconds)}
        if job.size > 1:
            labels["fairpool.io/gang"] = name
            annotations["fairpool.io/gang-size"] = str(job.size)
        bodies.append(
            {
                "metadata": {
                    "name": f"{name}-{k}" if job.size > 1 else name,
                    "labels": labels,
                    "annotations": annotations,
                },
                "spec": {
                    "schedulerName": config.scheduler_name,
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 0,
                    "containers": [
                        {
                            "name": "train",
                            "image": "example.invalid/train:1",
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "1Gi"},
                                "limits": {"nvidia.com/gpu": str(job.gpus)},
                            },
                        }
                    ],
                },
            }
        )
    return bodies


class Workload:
    """Creates every job, then replaces each job whose pods all finished; counts binds.

    Its watch (an informer of its own) sees binds and completions."""

    def __init__(self, config: SoakConfig, api: k8s.ApiClient, seed: int = 7) -> None:
        from scheduler.k8s.informer import Informer

        self.config = config
        self.core = k8s.CoreV1Api(api)
        self.rng = random.Random(seed)
        self.jobs = {j.slot: j for j in jobs(config)}
        self.generation: dict[int, int] = dict.fromkeys(self.jobs, 0)
        self.done: dict[int, set[str]] = defaultdict(set)
        self.binds = 0
        self.replaced = 0
        self.failed_calls = 0
        self._bound: set[str] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="soak-workload")
        self._stop = threading.Event()
        self._informer = Informer(
            "pods",
            self.core.list_pod_for_all_namespaces,
            self,
            self._stop,
            label_selector=f"{LABEL}={config.prefix}",
            resync_seconds=3600,
        )

    def namespace(self, member: str) -> str:
        return f"{self.config.prefix}-{member}"

    def start(self) -> Workload:
        self._informer.start()
        self._informer.synced.wait(60)
        return self

    def create_all(self) -> float:
        started = time.monotonic()
        list(self._pool.map(lambda j: self._create(j, 0), self.jobs.values()))
        return time.monotonic() - started

    def _create(self, job: Job, generation: int) -> None:
        for body in pod_bodies(self.config, job, generation, self.rng):
            for attempt in range(5):
                try:
                    self.core.create_namespaced_pod(
                        self.namespace(job.member),
                        body,  # type: ignore[arg-type]
                        _preload_content=False,
                    )
                    break
                except Exception:
                    if attempt == 4:
                        with self._lock:
                            self.failed_calls += 1
                    time.sleep(0.2 * (attempt + 1))

    def _replace(self, job: Job, generation: int) -> None:
        with contextlib.suppress(Exception):
            self.core.delete_collection_namespaced_pod(
                self.namespace(job.member),
                label_selector=f"fairpool.io/soak-slot={job.slot}",
                grace_period_seconds=0,
            )
        if not self._stop.is_set():
            self._create(job, generation)

    # --- the informer's sink ----------------------------------------------------------

    def replace(self, kind: str, objects: list[Mapping[str, Any]]) -> None:
        for obj in objects:
            self.apply(kind, "ADDED", obj)

    def apply(self, kind: str, event_type: str, obj: Mapping[str, Any]) -> None:
        if event_type == "DELETED":
            return
        meta = obj.get("metadata") or {}
        uid = meta.get("uid", "")
        labels = meta.get("labels") or {}
        slot = int(labels.get("fairpool.io/soak-slot", "-1"))
        job = self.jobs.get(slot)
        if job is None:
            return
        with self._lock:
            if (obj.get("spec") or {}).get("nodeName") and uid not in self._bound:
                self._bound.add(uid)
                self.binds += 1
            if (obj.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                return
            if labels.get("fairpool.io/soak-generation") != str(self.generation[slot]):
                return  # a pod of an earlier generation, already replaced
            self.done[slot].add(meta.get("name", ""))
            if len(self.done[slot]) < job.size:
                return
            self.done.pop(slot)
            self.generation[slot] += 1
            generation = self.generation[slot]
            self.replaced += 1
        self._pool.submit(self._replace, job, generation)

    def bound_count(self) -> int:
        with self._lock:
            return self.binds

    def close(self) -> None:
        self._stop.set()
        self._informer.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)


# --- the daemon ---------------------------------------------------------------------------


class DaemonProcess:
    """`fairpool run` with its API, in a process of its own."""

    def __init__(self, plane: ControlPlane, folder: Path, config: SoakConfig) -> None:
        self.folder = folder
        (folder / "policy.yaml").write_text(policy_text(config))
        (folder / "tokens.csv").write_text(f"{TOKEN},admin\n")
        self.log = folder / "fairpool.log"
        self.command = [
            str(Path(sys.executable).with_name("fairpool")),
            "run",
            "--kubeconfig",
            str(plane.kubeconfig("scheduler")),
            "--policy",
            str(folder / "policy.yaml"),
            "--scheduler-name",
            config.scheduler_name,
            "--no-leader-elect",
            "--usage-history-configmap",
            "",
            "--metrics-port",
            "0",
            "--metrics-address",
            "127.0.0.1",
            "--tokens",
            str(folder / "tokens.csv"),
            "--api-listen",
            "127.0.0.1:0",
            "--ledger-url",
            f"sqlite:///{folder}/ledger.db",
            "--log-level",
            os.environ.get("FAIRPOOL_BENCH_LOG_LEVEL", "WARNING"),
        ]
        self.process: subprocess.Popen[str] | None = None
        self.api_port = 0

    def start(self, timeout: float = 180.0) -> DaemonProcess:
        with self.log.open("a") as err:
            self.process = subprocess.Popen(
                self.command, stdout=subprocess.PIPE, stderr=err, text=True
            )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while not self.api_port:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"fairpool run ended before serving its API; see {self.log}")
            if line.startswith("api-port "):
                self.api_port = int(line.split()[1])
            if time.monotonic() > deadline:
                raise TimeoutError("fairpool run did not serve its API")
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_mb(self) -> float:
        assert self.process is not None
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def stop(self) -> int | None:
        """SIGTERM; the exit code (None if it had to be killed)."""
        if self.process is None:
            return None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


# --- the clients (a process of their own) -------------------------------------------------


def draft_policies(config: SoakConfig, rng: random.Random) -> Iterator[str]:
    """Drafts for ValidatePolicy: valid variations of the policy and broken ones."""
    while True:
        choice = rng.randrange(5)
        if choice == 0:
            yield policy_text(config, weight=round(rng.uniform(0.1, 5.0), 2))
        elif choice == 1:
            yield policy_text(config, purchased={GPU_MODEL: rng.randrange(0, 64)})
        elif choice == 2:
            yield policy_text(config, weight=-rng.randrange(1, 5))  # invalid: negative
        elif choice == 3:
            text = policy_text(config)
            cut = rng.randrange(1, len(text))
            yield text[:cut]  # truncated YAML
        else:
            yield rng.choice(["", "{", "spec: []", "\x00\x01", "apiVersion: fairpool.io/v1"])


@dataclass
class ClientLog:
    """Per minute since the clients started: latencies and status codes per call."""

    latencies: dict[tuple[int, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    codes: Counter[tuple[str, str]] = field(default_factory=Counter)
    watch_events: int = 0

    def add(self, minute: int, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.codes[(method, code.name)] += 1
        if code is grpc.StatusCode.OK:
            self.latencies[(minute, method)].append(seconds)


async def _caller(
    target: str, config: SoakConfig, seed: int, started: float, until: float, log: ClientLog
) -> None:
    rng = random.Random(seed)
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    drafts = draft_policies(config, rng)
    period = config.clients / config.rate
    waiting: list[str] = []
    async with grpc.aio.insecure_channel(target) as channel:
        shares = share_pb2_grpc.ShareServiceStub(channel)
        policies = policy_pb2_grpc.PolicyServiceStub(channel)
        await asyncio.sleep(rng.uniform(0, period))
        next_at = time.monotonic()
        while time.monotonic() < until:
            # Timed from when the call was due: one sent late behind a slow one counts
            # the delay, as callers at this rate would see it (bench_api's paced load).
            due = next_at
            next_at += period
            draw = rng.random()
            call: Any
            if draw < 0.45:
                method, call = (
                    "GetEntitlements",
                    shares.GetEntitlements(
                        share_pb2.GetEntitlementsRequest(), metadata=metadata, timeout=30
                    ),
                )
            elif draw < 0.70 and waiting:
                name = rng.choice(waiting)
                method, call = (
                    "ExplainPending",
                    shares.ExplainPending(
                        share_pb2.ExplainPendingRequest(name=name), metadata=metadata, timeout=30
                    ),
                )
            elif draw < 0.80:
                method, call = (
                    "ListPending",
                    shares.ListPending(
                        share_pb2.ListPendingRequest(limit=50), metadata=metadata, timeout=30
                    ),
                )
            elif draw < 0.90:
                method, call = (
                    "ListPolicyVersions",
                    policies.ListPolicyVersions(
                        policy_pb2.ListPolicyVersionsRequest(page_size=20),
                        metadata=metadata,
                        timeout=30,
                    ),
                )
            else:
                method, call = (
                    "ValidatePolicy",
                    policies.ValidatePolicy(
                        policy_pb2.ValidatePolicyRequest(yaml=next(drafts)),
                        metadata=metadata,
                        timeout=30,
                    ),
                )
            code = grpc.StatusCode.OK
            try:
                reply = await call
                if method == "ListPending":
                    waiting = [j.pod_names[0] for j in reply.jobs if j.pod_names] or waiting
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
            log.add(int((due - started) // 60), method, code, time.monotonic() - due)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def _watcher(target: str, until: float, log: ClientLog) -> None:
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    async with grpc.aio.insecure_channel(target) as channel:
        policies = policy_pb2_grpc.PolicyServiceStub(channel)
        while time.monotonic() < until:
            remaining = until - time.monotonic()
            stream = policies.WatchPolicy(
                policy_pb2.WatchPolicyRequest(), metadata=metadata, timeout=min(60, remaining)
            )
            try:
                async for _ in stream:
                    log.watch_events += 1
                log.codes[("WatchPolicy", "OK")] += 1
            except grpc.aio.AioRpcError as exc:
                log.codes[("WatchPolicy", exc.code().name)] += 1
                if exc.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
                    await asyncio.sleep(1.0)


def _clients(conn: Connection, target: str, config: SoakConfig, seconds: float) -> None:
    async def main() -> ClientLog:
        log = ClientLog()
        started = time.monotonic()
        until = started + seconds
        await asyncio.gather(
            *(_caller(target, config, i, started, until, log) for i in range(config.clients)),
            *(_watcher(target, until, log) for _ in range(config.watchers)),
        )
        return log

    log = asyncio.run(main())
    conn.send((dict(log.latencies), dict(log.codes), log.watch_events))


# --- the run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    seconds: float
    """Since the daemon started."""
    rss_mb: float
    binds: int
    """Binds seen so far."""
    load: float
    clients: bool


@dataclass
class SoakResult:
    config: SoakConfig
    samples: list[Sample]
    latencies: dict[tuple[int, str], list[float]]
    codes: dict[tuple[str, str], int]
    watch_events: int
    alive_at_end: bool
    exit_code: int | None
    created_seconds: float
    clients_from: float
    """Seconds since the daemon started when the clients started."""
    replaced: int
    failed_workload_calls: int

    @property
    def unknown(self) -> int:
        return sum(n for (_, code), n in self.codes.items() if code == "UNKNOWN")

    @property
    def crashed(self) -> bool:
        return not self.alive_at_end or self.exit_code != 0


def soak(
    plane: ControlPlane, config: SoakConfig, folder: Path, console: Console | None = None
) -> SoakResult:
    """The soak on a running control plane: its own namespaces and nodes (labelled with
    `config.namespace_labels` / `node_labels` for whoever cleans up)."""
    from policies.inventory import parse_inventory
    from tests.controlplane.nodes import create_nodes, wait_nodes_ready

    console = console or Console(quiet=True)
    configuration = plane.api_client("admin").configuration
    configuration.connection_pool_maxsize = 16
    admin = k8s.ApiClient(configuration)
    core = k8s.CoreV1Api(admin)
    for m in MEMBERS:
        core.create_namespace(
            {"metadata": {"name": f"{config.prefix}-{m}", "labels": dict(config.namespace_labels)}}  # type: ignore[arg-type]
        )
    with console.status(f"creating {config.nodes} kwok nodes"):
        created = create_nodes(
            core, parse_inventory(inventory_text(config)), labels=dict(config.node_labels)
        )
        wait_nodes_ready(core, created.created, timeout=300)
    workload = Workload(config, admin).start()
    daemon = DaemonProcess(plane, folder, config)
    samples: list[Sample] = []
    try:
        with console.status(f"creating {config.pods:,} pods"):
            created_seconds = workload.create_all()
        console.print(f"{config.pods:,} pods created in {created_seconds:.0f} s")
        daemon.start()
        t0 = time.monotonic()

        def sample(clients: bool) -> None:
            samples.append(
                Sample(
                    time.monotonic() - t0,
                    daemon.rss_mb(),
                    workload.bound_count(),
                    os.getloadavg()[0],
                    clients,
                )
            )

        def sample_until(end: float, clients: bool) -> None:
            while time.monotonic() < end and daemon.alive():
                sample(clients)
                time.sleep(max(0.0, min(SAMPLE_SECONDS, end - time.monotonic())))

        with console.status(f"warm-up: scheduling alone for {config.warmup_minutes:g} min"):
            sample_until(t0 + config.warmup_minutes * 60, clients=False)
        clients_from = time.monotonic() - t0
        seconds = config.minutes * 60
        context = mp.get_context("spawn")
        ours, theirs = context.Pipe()
        child = context.Process(
            target=_clients,
            args=(theirs, f"127.0.0.1:{daemon.api_port}", config, seconds),
            daemon=True,
        )
        child.start()
        with console.status(f"{config.clients} clients for {config.minutes:g} min"):
            sample_until(time.monotonic() + seconds, clients=True)
        sample(clients=True)
        latencies, codes, watch_events = (
            ours.recv() if ours.poll(120) else ({}, {("clients", "NO_REPORT"): 1}, 0)
        )
        child.join(10)
        alive = daemon.alive()
    finally:
        workload.close()
        exit_code = daemon.stop()
    return SoakResult(
        config,
        samples,
        latencies,
        codes,
        watch_events,
        alive,
        exit_code,
        created_seconds,
        clients_from,
        workload.replaced,
        workload.failed_calls,
    )


# --- the report ---------------------------------------------------------------------------


def _quantile_ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def slope_mb_per_minute(samples: list[Sample], after: float) -> float:
    """Least-squares slope of RSS over time, samples at or after `after` seconds."""
    points = [(s.seconds / 60, s.rss_mb) for s in samples if s.seconds >= after]
    if len(points) < 2:
        return 0.0
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def report(console: Console, r: SoakResult) -> None:
    c = r.config
    table = Table(
        title=f"Soak: {c.nodes:,} kwok nodes, {c.pods:,} pods, {c.clients} clients at "
        f"{c.rate:.0f} calls/s + {c.watchers} watchers for {c.minutes:g} min after "
        f"{c.warmup_minutes:g} min of warm-up; {os.cpu_count()} cores shared",
        title_justify="left",
    )
    for column in (
        "minute",
        "clients",
        "RSS MB",
        "binds / s",
        "GetEntitlements calls / s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "load average",
    ):
        table.add_column(column, justify="right")
    by_minute: dict[int, list[Sample]] = defaultdict(list)
    for s in r.samples:
        by_minute[int(s.seconds // 60)].append(s)
    previous: Sample | None = None
    for minute in sorted(by_minute):
        group = by_minute[minute]
        last = group[-1]
        start = previous or group[0]
        span = last.seconds - start.seconds
        binds = (last.binds - start.binds) / span if span > 0 else 0.0
        client_minute = int((last.seconds - r.clients_from) // 60) if last.clients else -1
        got = r.latencies.get((client_minute, "GetEntitlements"), [])
        table.add_row(
            str(minute),
            "on" if last.clients else "off",
            f"{max(s.rss_mb for s in group):.0f}",
            f"{binds:.0f}",
            f"{len(got) / 60:.0f}" if got else "-",
            f"{_quantile_ms(got, 0.5):.1f}" if got else "-",
            f"{_quantile_ms(got, 0.95):.1f}" if got else "-",
            f"{_quantile_ms(got, 0.99):.1f}" if got else "-",
            f"{last.load:.1f}",
        )
        previous = last
    print_table(console, table)
    codes = Table(title="gRPC status codes per call", title_justify="left")
    for column in ("call", "code", "calls", "p50 ms", "p95 ms", "p99 ms"):
        codes.add_column(column, justify="left" if column in ("call", "code") else "right")
    every: dict[str, list[float]] = defaultdict(list)
    for (_, method), values in r.latencies.items():
        every[method] += values
    for (method, code), n in sorted(r.codes.items()):
        values = every.get(method, []) if code == "OK" else []
        codes.add_row(
            method,
            code,
            f"{n:,}",
            f"{_quantile_ms(values, 0.5):.1f}" if values else "",
            f"{_quantile_ms(values, 0.95):.1f}" if values else "",
            f"{_quantile_ms(values, 0.99):.1f}" if values else "",
        )
    console.print(codes)
    warm = r.clients_from
    slope = slope_mb_per_minute(r.samples, warm)
    got = every.get("GetEntitlements", [])
    with_clients = [s for s in r.samples if s.clients]
    without = [s for s in r.samples if not s.clients and s.seconds >= 30]

    def rate(group: list[Sample]) -> float:
        if len(group) < 2 or group[-1].seconds <= group[0].seconds:
            return 0.0
        return (group[-1].binds - group[0].binds) / (group[-1].seconds - group[0].seconds)

    console.print(
        f"pods created in {r.created_seconds:.0f} s; jobs replaced {r.replaced:,}; "
        f"workload calls that failed {r.failed_workload_calls}; watch events {r.watch_events}"
    )
    # A one-off step (a cache filled, an arena kept) moves the whole-run slope; growth
    # that goes on shows in the second half too.
    half = (warm + r.samples[-1].seconds) / 2 if r.samples else warm
    late = slope_mb_per_minute(r.samples, half)
    late_rss = [s.rss_mb for s in r.samples if s.seconds >= half]
    console.print(
        f"RSS slope after the warm-up: {slope:+.2f} MB/min "
        f"({slope * 60:+.0f} MB/h) from {with_clients[0].rss_mb if with_clients else 0:.0f} MB; "
        f"over the second half: {late:+.2f} MB/min, "
        f"{min(late_rss, default=0):.0f}-{max(late_rss, default=0):.0f} MB"
    )
    console.print(
        f"binds/s: {rate(without):.1f} without clients (after 30 s), "
        f"{rate(with_clients):.1f} with them"
    )
    console.print(
        f"GetEntitlements p50 {_quantile_ms(got, 0.5):.1f} ms, p95 "
        f"{_quantile_ms(got, 0.95):.1f} ms, p99 "
        f"{_quantile_ms(got, 0.99):.1f} ms over {len(got):,} calls (target p99 ≤ "
        f"{TARGET_P99_MS:.0f} ms); UNKNOWN answers: {r.unknown}; daemon alive at the end: "
        f"{r.alive_at_end}; exit code on SIGTERM: {r.exit_code}"
    )


def run_soak(console: Console, config: SoakConfig) -> SoakResult:
    """On a control plane of its own."""
    from tests.controlplane import start, stop

    folder = Path(tempfile.mkdtemp(prefix="fairpool-bench-soak-"))
    plane = start(folder / "cluster", die_with_parent=True, console=console)
    try:
        result = soak(plane, config, folder, console)
    finally:
        stop(folder / "cluster")
    report(console, result)
    console.print(f"daemon log: {folder / 'fairpool.log'}")
    return result


def run(console: Console) -> None:
    run_soak(console, SoakConfig())


def main(argv: list[str]) -> int:
    import argparse

    defaults = SoakConfig()
    parser = argparse.ArgumentParser(prog="python -m bench.bench_soak")
    parser.add_argument("--minutes", type=float, default=defaults.minutes)
    parser.add_argument("--warmup-minutes", type=float, default=defaults.warmup_minutes)
    parser.add_argument("--nodes", type=int, default=defaults.nodes)
    parser.add_argument("--pods", type=int, default=defaults.pods)
    parser.add_argument("--clients", type=int, default=defaults.clients)
    parser.add_argument("--rate", type=float, default=defaults.rate, help="calls/s in all")
    args = parser.parse_args(argv)
    config = replace(
        defaults,
        minutes=args.minutes,
        warmup_minutes=args.warmup_minutes,
        nodes=args.nodes,
        pods=args.pods,
        clients=args.clients,
        rate=args.rate,
    )
    result = run_soak(Console(), config)
    return 1 if result.unknown or result.crashed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
