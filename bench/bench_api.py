"""The gRPC API under load: 50 concurrent clients, half calling GetEntitlements and
half ExplainPending, against a server whose scheduler manages 1,000 nodes and 10,000 pending
pods, while the engine keeps running scheduling cycles in the same process (as in the
daemon). Reports requests/s, p50/p99 latency, and the engine's cycle time idle and
under that load. Then ValidatePolicy on policies of 10,000 members and of the most a
policy may have (`validate_table`, also `python -m bench api_validate`).

Two loads, both with the engine cycling and publishing a new snapshot every cycle:

- back to back: each client sends its next call as soon as the last one is answered,
  so the figure is the server's capacity; by Little's law the mean latency is then
  clients / calls per second, whatever the server does per call;
- paced: each client is due to send one call every CLIENTS / PACED_RATE seconds
  (PACED_RATE calls/s in all, the rate at which the API was once measured at 803 ms
  p99), the latency a caller sees at that traffic. A call is timed from when it was
  due: one sent late because the client's previous call was still waiting counts that
  delay too (callers at that rate do not stop calling while the server is slow), and a
  client that fell behind sends back to back until it is on time again.

Both loads again with the API's address served by a front process (`read_front`, as
`fairpool run` serves it): GetEntitlements and ExplainPending answered there, from what
the server beside the engine sends it at each publication.

Then the paced load once more with the same cycles run by a process of their own, the
API's process only serving: the share of the latency that comes from sharing one
interpreter (its GIL) with the scheduling loop, on the same machine at the same load.
That server sees no new publication meanwhile, so it also skips the per-publication book.

The server runs in a child process so that the clients' Python does not share its GIL.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
import yaml
from rich.console import Console
from rich.table import Table

from policies.inventory import load_inventory
from policies.loader import DEFAULT_POLICY, load_policy, parse_policy
from policies.model import MAX_MEMBERS, Policy
from proto.fairpool.v1 import policy_pb2, policy_pb2_grpc, share_pb2, share_pb2_grpc
from scheduler.api.frozen_view import FrozenClusterView
from scheduler.cli.tables import print_table
from scheduler.engine import schedule
from scheduler.engine.snapshot import Node, PendingJob, PendingPod, PodSpec, RunningPod, Snapshot

NODES = 1_000
PENDING_PODS = 10_000
CLIENTS = 50
LOAD_SECONDS = 15.0
PACED_RATE = 445.0
DAEMON_RUNTIME = os.environ.get("FAIRPOOL_BENCH_DEFAULT_RUNTIME", "") == ""
"""The server process tuned as `fairpool run` tunes itself (scheduler/k8s/runtime.py);
FAIRPOOL_BENCH_DEFAULT_RUNTIME=1 keeps the interpreter's defaults, for comparison."""
IDLE_SECONDS = 10.0
TOKEN = "bench-admin-token-0123456789"
OWNERS = (
    ("uni-north", "NVIDIA-H100-80GB-HBM3", "uni-north"),
    ("ai-startup", "NVIDIA-H100-80GB-HBM3", "ai-startup-bench"),
    ("lab-bio", "NVIDIA-A100-SXM4-80GB", "lab-bio"),
    ("physics", "NVIDIA-A100-SXM4-80GB", "physics"),
)


def pending_job_ids() -> list[str]:
    """Job ids of the pending queue (every 10th job is a gang of 4)."""
    ids, pods, i = [], 0, 0
    while pods < PENDING_PODS:
        ids.append(f"job-{i}")
        pods += 4 if i % 10 == 0 else 1
        i += 1
    return ids


def build_cluster() -> tuple[Policy, Snapshot]:
    """1,000 8-GPU nodes, each running one 8-GPU pod of its owner, and 10,000 pods
    waiting, a tenth of them in gangs."""
    policy = load_policy(DEFAULT_POLICY)
    nodes, running = [], []
    for n in range(NODES):
        owner, model, namespace = OWNERS[n % len(OWNERS)]
        nodes.append(
            Node(f"node-{n}", owner, model, 8, 96_000, 1 << 40, topology_domain=f"rack-{n % 20}")
        )
        running.append(
            RunningPod(
                f"run-{n}",
                f"run-{n}",
                namespace,
                owner,
                f"run-{n}",
                f"node-{n}",
                PodSpec(gpus=8, gpu_model=model),
                started_at=0.0,
            )
        )
    jobs = []
    for i, job_id in enumerate(pending_job_ids()):
        owner, model, namespace = OWNERS[i % len(OWNERS)]
        size = 4 if i % 10 == 0 else 1
        pods = tuple(
            PendingPod(
                f"{job_id}-p{k}", f"{job_id}-{k}", namespace, PodSpec(gpus=2, gpu_model=model)
            )
            for k in range(size)
        )
        jobs.append(PendingJob(job_id, owner, pods, min_member=size, submitted_at=float(i)))
    snapshot = Snapshot(
        now=86_400.0, nodes=tuple(nodes), running=tuple(running), pending=tuple(jobs)
    )
    return policy, snapshot


class CyclingView(FrozenClusterView):
    """A SchedulerView whose engine runs cycle after cycle on the same cluster; each cycle
    publishes a new snapshot object, so the API recomputes its cached shares per cycle
    just as it does under the daemon."""

    def __init__(self, policy: Policy, snapshot: Snapshot) -> None:
        super().__init__(policy, snapshot, decide=False)

    def cycle(self) -> float:
        started = time.perf_counter()
        snapshot = self.snapshot()
        decisions = schedule(snapshot, self.policy())
        self.publish(replace(snapshot, now=snapshot.now + 1.0), decisions)
        return time.perf_counter() - started


def _serve(conn: Connection, folder: str, front: bool = False) -> None:
    from scheduler.api.auth import TokenTable
    from scheduler.api.policy_store import FileSource
    from scheduler.api.server import ApiConfig, ApiServer
    from scheduler.k8s import runtime

    if DAEMON_RUNTIME:
        runtime.tune()  # as `fairpool run` does
    policy, snapshot = build_cluster()
    view = CyclingView(policy, snapshot)
    first = view.cycle()
    explained = len(view.last_decisions().explanations)
    if DAEMON_RUNTIME:
        runtime.freeze_startup_objects()
    policy_file = Path(folder) / "policy.yaml"
    policy_file.write_text(DEFAULT_POLICY.read_text())
    tokens_file = Path(folder) / "tokens.csv"
    tokens_file.write_text(f"{TOKEN},admin\n")
    config = ApiConfig(
        # A token file, as `fairpool run --tokens` reads (the front reads its own copy).
        tokens=TokenTable(tokens_file),
        policy_source=FileSource(policy_file),
        ledger_url=f"sqlite:///{folder}/ledger.db",
        address="127.0.0.1:0",
        max_workers=16,
        read_front=front,
    )
    server = ApiServer(view, config).start()
    conn.send((server.port, first, explained))
    while True:
        command, seconds = conn.recv()
        if command == "stop":
            break
        if command == "idle":  # the engine cycles in another process meanwhile
            time.sleep(seconds)
            conn.send([])
            continue
        durations: list[float] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            durations.append(view.cycle())
            # The daemon's loop: after a cycle, a pause as long as it took, so that its
            # other threads (binder, informers, the API) get their share of the GIL.
            time.sleep(durations[-1])
        conn.send(durations)
    server.stop(grace=0.5)


def _engine_elsewhere(conn: Connection, seconds: float) -> None:
    """The same cycles as `_serve`'s, in a process of their own: what the API would see
    if it did not share the scheduler's interpreter (and its GIL)."""
    view = CyclingView(*build_cluster())
    conn.send("ready")
    durations: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        durations.append(view.cycle())
        time.sleep(durations[-1])
    conn.send(durations)


@dataclass
class Load:
    latencies: dict[str, list[float]]
    errors: dict[str, int]
    seconds: float


async def _client(
    target: str, job_ids: list[str], until: float, seed: int, load: Load, period: float
) -> None:
    """Calls until `until`; with a `period`, one call due per period, each timed from
    when it was due (module docstring), else back to back, each timed from its send."""
    rng = random.Random(seed)
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    async with grpc.aio.insecure_channel(target) as channel:
        # Connected before the clock starts: a caller that polls keeps its channel, and
        # fifty connections opened at once would otherwise sit in the latency tail.
        await channel.channel_ready()
        stub = share_pb2_grpc.ShareServiceStub(channel)
        # One method per client, half the clients each, as a dashboard polls the shares
        # and a user asks why a job waits: a client alternating them timed, from when it
        # was due, each GetEntitlements behind its own slower ExplainPending before it.
        entitlements = seed % 2 == 0
        if period:
            await asyncio.sleep(rng.uniform(0, period))
        next_at = time.monotonic()
        while time.monotonic() < until:
            due = next_at
            if period:
                next_at += period
            if entitlements:
                name = "GetEntitlements"
                call = stub.GetEntitlements(
                    share_pb2.GetEntitlementsRequest(), metadata=metadata, timeout=30
                )
            else:
                name = "ExplainPending"
                request = share_pb2.ExplainPendingRequest(name=rng.choice(job_ids))
                call = stub.ExplainPending(request, metadata=metadata, timeout=30)
            started = due if period else time.monotonic()
            try:
                await call
            except grpc.aio.AioRpcError:
                load.errors[name] += 1
            else:
                load.latencies[name].append(time.monotonic() - started)
            if period:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def _load(target: str, seconds: float, rate: float = 0.0) -> Load:
    """CLIENTS clients for `seconds`, back to back (rate 0) or `rate` calls/s in all."""
    job_ids = pending_job_ids()
    load = Load(
        {"GetEntitlements": [], "ExplainPending": []},
        {"GetEntitlements": 0, "ExplainPending": 0},
        seconds,
    )
    period = CLIENTS / rate if rate else 0.0
    until = time.monotonic() + seconds
    await asyncio.gather(
        *(_client(target, job_ids, until, i, load, period) for i in range(CLIENTS))
    )
    return load


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "—"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.1f}"


def run(console: Console) -> None:
    context = mp.get_context("spawn")
    loads: list[tuple[str, Load]] = []
    cycles: list[tuple[str, list[float]]] = []
    first_cycle, explained = 0.0, 0
    for front in (False, True):
        with tempfile.TemporaryDirectory(prefix="fairpool-bench-api-") as folder:
            ours, theirs = context.Pipe()
            # A daemonic process may not start children, and the front is one.
            child = context.Process(target=_serve, args=(theirs, folder, front), daemon=not front)
            with console.status(
                f"building {NODES:,} nodes and {PENDING_PODS:,} pending pods, first engine cycle…"
            ):
                child.start()
                port, first_cycle, explained = ours.recv()
            target = f"127.0.0.1:{port}"
            if not front:
                with console.status(f"engine alone for {IDLE_SECONDS:.0f} s…"):
                    ours.send(("cycles", IDLE_SECONDS))
                    cycles.append(("idle API", ours.recv()))
            where = "front process" if front else "in process"
            for label, rate in (
                (f"{where}, back to back", 0.0),
                (f"{where}, paced, {PACED_RATE:.0f}/s", PACED_RATE),
            ):
                with console.status(
                    f"{CLIENTS} clients ({label}) for {LOAD_SECONDS:.0f} s while the engine runs…"
                ):
                    ours.send(("cycles", LOAD_SECONDS))
                    loads.append((label, asyncio.run(_load(target, LOAD_SECONDS, rate))))
                    cycles.append((f"{CLIENTS} clients, {label}", ours.recv()))
            if not front:
                _engine_in_another_process(console, context, ours, target, loads, cycles)
            ours.send(("stop", 0))
            child.join(30)
    _tables(console, loads, cycles, first_cycle, explained)


def _engine_in_another_process(
    console: Console,
    context: Any,
    ours: Connection,
    target: str,
    loads: list[tuple[str, Load]],
    cycles: list[tuple[str, list[float]]],
) -> None:
    label = f"paced, {PACED_RATE:.0f}/s, engine in another process"
    with console.status(f"{CLIENTS} clients ({label}) for {LOAD_SECONDS:.0f} s…"):
        engine_ours, engine_theirs = context.Pipe()
        engine = context.Process(
            target=_engine_elsewhere, args=(engine_theirs, LOAD_SECONDS), daemon=True
        )
        engine.start()
        engine_ours.recv()
        ours.send(("idle", LOAD_SECONDS))
        loads.append((label, asyncio.run(_load(target, LOAD_SECONDS, PACED_RATE))))
        ours.recv()
        cycles.append((f"{CLIENTS} clients, {label}", engine_ours.recv()))
        engine.join(30)


def _tables(
    console: Console,
    loads: list[tuple[str, Load]],
    cycles: list[tuple[str, list[float]]],
    first_cycle: float,
    explained: int,
) -> None:
    table = Table(
        title=f"gRPC API: {CLIENTS} clients, {NODES:,} nodes, {PENDING_PODS:,} pending pods "
        f"({explained:,} jobs explained), load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores",
        title_justify="left",
    )
    for column in ("load", "what", "calls", "per second", "p50 ms", "p95 ms", "p99 ms", "errors"):
        table.add_column(column, justify="left" if column in ("load", "what") else "right")
    for label, load in loads:
        every: list[float] = []
        for name, values in load.latencies.items():
            every += values
            table.add_row(
                label,
                name,
                f"{len(values):,}",
                f"{len(values) / load.seconds:,.0f}",
                _ms(values, 0.5),
                _ms(values, 0.95),
                _ms(values, 0.99),
                str(load.errors[name]),
            )
        table.add_row(
            label,
            "both",
            f"{len(every):,}",
            f"{len(every) / load.seconds:,.0f}",
            _ms(every, 0.5),
            _ms(every, 0.95),
            _ms(every, 0.99),
            str(sum(load.errors.values())),
            style="bold",
        )
    print_table(console, table)
    engine = Table(title="engine in the same process", title_justify="left")
    for column in ("phase", "cycles", "mean cycle s", "cycles per minute"):
        engine.add_column(column, justify="left" if column == "phase" else "right")
    engine.add_row("first cycle", "1", f"{first_cycle:.2f}", "")
    for phase, durations in cycles:
        mean = statistics.fmean(durations)
        engine.add_row(phase, str(len(durations)), f"{mean:.2f}", f"{60 / mean:.1f}")
    console.print(engine)
    validate_table(console)


VALIDATE_MEMBERS = (10_000, MAX_MEMBERS)
VALIDATE_REPEATS = 3


def member_heavy_policy(members: int) -> str:
    """The demo policy with its members followed by `members` more, each with a
    namespace and a weight (member names of realistic length)."""
    data = yaml.safe_load(DEFAULT_POLICY.read_text())
    extra = members - len(data["spec"]["members"])
    data["spec"]["members"] += [
        {"name": f"member-{i:05d}", "namespaces": [f"member-{i:05d}-*"], "weight": 1.5}
        for i in range(extra)
    ]
    return yaml.safe_dump(data, sort_keys=False)


def validate_table(console: Console) -> None:
    """ValidatePolicy over gRPC on a real server (in this process) for policies of 10,000
    members and of the most members a policy may have; the local parse beside it is the
    same work without the network, a second way to the same figure."""
    from scheduler.api.auth import TokenTable, parse_tokens
    from scheduler.api.frozen_view import FrozenClusterView
    from scheduler.api.policy_store import FileSource
    from scheduler.api.server import ApiConfig, ApiServer

    table = Table(
        title=f"ValidatePolicy (median of {VALIDATE_REPEATS}; load average "
        f"{os.getloadavg()[0]:.1f})",
        title_justify="left",
    )
    columns = (
        "members",
        "document KiB",
        "gRPC s",
        "local parse s",
        "local parse CPU s",
        "returned",
    )
    for column in columns:
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory(prefix="fairpool-bench-validate-") as folder:
        policy_file = Path(folder) / "policy.yaml"
        policy_file.write_text(DEFAULT_POLICY.read_text())
        config = ApiConfig(
            tokens=TokenTable(entries=dict(parse_tokens(f"{TOKEN},admin\n", "bench"))),
            policy_source=FileSource(policy_file),
            ledger_url=f"sqlite:///{folder}/ledger.db",
            address="127.0.0.1:0",
        )
        policy = load_policy(DEFAULT_POLICY)
        view = FrozenClusterView.from_inventory(policy, load_inventory())
        server = ApiServer(view, config).start()
        metadata = (("authorization", f"Bearer {TOKEN}"),)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = policy_pb2_grpc.PolicyServiceStub(channel)
                for members in VALIDATE_MEMBERS:
                    text = member_heavy_policy(members)
                    remote, local, cpu, returned = [], [], [], 0
                    for _ in range(VALIDATE_REPEATS):
                        started = time.perf_counter()
                        reply = stub.ValidatePolicy(
                            policy_pb2.ValidatePolicyRequest(yaml=text),
                            metadata=metadata,
                            timeout=600,
                        )
                        remote.append(time.perf_counter() - started)
                        returned = len(reply.members)
                        started, used = time.perf_counter(), time.process_time()
                        parse_policy(text, "bench")
                        local.append(time.perf_counter() - started)
                        cpu.append(time.process_time() - used)
                    table.add_row(
                        f"{members:,}",
                        f"{len(text.encode()) / 1024:,.0f}",
                        f"{statistics.median(remote):.2f}",
                        f"{statistics.median(local):.2f}",
                        f"{statistics.median(cpu):.2f}",
                        f"{returned:,}",
                    )
        finally:
            server.stop(grace=0.5)
    print_table(console, table)
