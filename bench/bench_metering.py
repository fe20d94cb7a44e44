"""Metering benchmark: 1,000 GPUs (125 nodes x 8) scraped every 30 s, in a real Prometheus.

Pods of varying lengths (minutes to days, 1-8 GPUs, 5 % placed by another scheduler so
kube-state-metrics bills them) fill every node with idle gaps. The OpenMetrics text is
generated, loaded with promtool, served by a private Prometheus, then metered hour by
hour into a SQLite ledger and then into a PostgreSQL one on a private server
(BENCH_METERING_LEDGERS=sqlite or =postgresql for one of them). Generation, promtool and
metering are timed separately; peak memory is the RSS of this process and of prometheus
(and the PSS of the postgres processes), sampled every 0.2 s.

The generated span defaults to BENCH_METERING_DAYS=7 days (a full month of text is
~30 GB and hours of promtool on 2 cores); metering time is then scaled linearly to 30
days, since every hour is queried and stored on its own (chunks of 24 hours). Set
BENCH_METERING_DAYS=30 to measure the month itself.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import psutil
from rich.console import Console
from rich.table import Table

from policies.loader import load_policy
from reports.ledger import Ledger
from reports.metering.meter import Meter, MeterConfig
from reports.metering.prom_source import PromSource
from scheduler.cli.tables import print_table
from tests.pgtest import PostgresServer
from tests.promtest import PrometheusServer, create_blocks
from tests.promtest.scenario import format_labels

NODES = 125
GPUS_PER_NODE = 8
INTERVAL = 30
START = datetime(2026, 9, 1, tzinfo=UTC)
TARGET_SECONDS = 120.0
TARGET_BYTES = 2 * 1024**3
MODELS = ("NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB")
MEMBERS = ("uni-north", "lab-bio", "ai-startup-a", "physics")
NAMESPACES = {
    "uni-north": "uni-north",
    "lab-bio": "lab-bio",
    "ai-startup-a": "ai-startup-a",
    "physics": "physics",
}
LANE_SPLITS = ([8], [4, 4], [4, 2, 2], [2, 2, 2, 1, 1], [1] * 8)


@dataclass(frozen=True)
class BenchPod:
    namespace: str
    name: str
    uid: str
    node: str
    owner: str
    model: str
    gpus: int
    start: int  # unix seconds, on the scrape grid
    end: int
    fairpool: bool
    utilization: float


def workload(days: int, seed: int = 7) -> tuple[list[tuple[str, str, str]], list[BenchPod]]:
    """Nodes (name, owner, model) and pods filling each node's GPU lanes."""
    rng = random.Random(seed)
    t0 = int(START.timestamp())
    t1 = t0 + days * 86400
    nodes: list[tuple[str, str, str]] = []
    pods: list[BenchPod] = []
    for n in range(NODES):
        node = f"gpu-{n:03d}"
        owner = MEMBERS[n % len(MEMBERS)]
        model = MODELS[n % 2]
        nodes.append((node, owner, model))
        for lane, gpus in enumerate(rng.choice(LANE_SPLITS)):
            t = t0 + rng.randrange(0, 3600, INTERVAL)
            k = 0
            while t < t1:
                # Log-uniform lengths from 2 minutes to 2 days.
                length = int(120 * (1440 ** rng.random())) // INTERVAL * INTERVAL + INTERVAL
                member = rng.choice(MEMBERS)
                end = min(t + length, t1)
                pods.append(
                    BenchPod(
                        NAMESPACES[member],
                        f"job-{node}-{lane}-{k}",
                        f"uid-{node}-{lane}-{k}",
                        node,
                        owner,
                        model,
                        gpus,
                        t,
                        end,
                        rng.random() >= 0.05,
                        round(rng.uniform(0.1, 1.0), 3),
                    )
                )
                k += 1
                t = end + rng.randrange(0, 1800, INTERVAL)
    return nodes, pods


def _run(out: TextIO, labels: dict[str, str], name: str, value: str, lo: int, hi: int) -> int:
    """Samples of one series at every grid time in [lo, hi); returns how many."""
    head = f"{name}{format_labels(labels)} {value} "
    times = range(lo, hi, INTERVAL)
    if len(times):
        out.write(head + ("\n" + head).join(map(str, times)) + "\n")
    return len(times)


BLOCK = 7200  # promtool cuts 2-hour blocks and re-reads its whole input for each one


KSM = {"job": "kube-state-metrics", "instance": "10.0.0.10:8080"}
POD_FAMILIES = (
    "kube_pod_container_resource_requests",
    "kube_pod_info",
    "kube_pod_status_phase",
    "kube_pod_start_time",
    "kube_pod_completion_time",
)


@dataclass
class _Window:
    """An OpenMetrics file being written with the samples in [w0, w1) only."""

    out: TextIO
    w0: int
    w1: int
    samples: int = 0

    def family(self, name: str) -> None:
        self.out.write(f"# TYPE {name} gauge\n")

    def series(self, labels: dict[str, str], name: str, value: str, lo: int, hi: int) -> None:
        self.samples += _run(self.out, labels, name, value, max(lo, self.w0), min(hi, self.w1))


def write_window(
    path: Path, nodes: list[tuple[str, str, str]], pods: list[BenchPod], w0: int, w1: int
) -> int:
    """The samples with times in [w0, w1) as OpenMetrics; returns how many."""
    live = [p for p in pods if p.start < w1 and p.end + 120 > w0]
    with path.open("w", encoding="utf-8") as out:
        window = _Window(out, w0, w1)
        _node_series(window, nodes)
        _fairpool_series(window, live)
        for family in POD_FAMILIES:
            window.family(family)
            for p in live:
                _kube_state_pod_series(window, family, p)
        _dcgm_series(window, live)
        out.write("# EOF\n")
    return window.samples


def _node_series(window: _Window, nodes: list[tuple[str, str, str]]) -> None:
    """kube-state-metrics' node labels and allocatable GPUs, all the window long."""
    window.family("kube_node_labels")
    for node, owner, model in nodes:
        labels = {
            **KSM,
            "node": node,
            "label_fairpool_io_owner": owner,
            "label_nvidia_com_gpu_product": model,
        }
        window.series(labels, "kube_node_labels", "1", window.w0, window.w1)
    window.family("kube_node_status_allocatable")
    for node, _, _ in nodes:
        labels = {**KSM, "node": node, "resource": "nvidia_com_gpu", "unit": "integer"}
        window.series(
            labels, "kube_node_status_allocatable", str(GPUS_PER_NODE), window.w0, window.w1
        )


def _fairpool_series(window: _Window, live: list[BenchPod]) -> None:
    """fairpool's allocation gauge for the pods it placed, while they run."""
    window.family("fairpool_pod_gpu_allocation")
    for p in live:
        if p.fairpool:
            labels = {
                "namespace": p.namespace,
                "pod": p.name,
                "uid": p.uid,
                "member": p.namespace,
                "owner": p.owner,
                "gpu_model": p.model,
                "node": p.node,
            }
            window.series(labels, "fairpool_pod_gpu_allocation", str(p.gpus), p.start, p.end)


def _kube_state_pod_series(window: _Window, family: str, p: BenchPod) -> None:
    """One pod's series of a kube-state-metrics family, kept 2 minutes past its end."""
    ident = {**KSM, "namespace": p.namespace, "pod": p.name, "uid": p.uid}
    gone = p.end + 120
    if family == "kube_pod_container_resource_requests":
        labels = {
            **ident,
            "container": "main",
            "node": p.node,
            "resource": "nvidia_com_gpu",
            "unit": "integer",
        }
        window.series(labels, family, str(p.gpus), p.start, gone)
    elif family == "kube_pod_info":
        window.series({**ident, "node": p.node}, family, "1", p.start, gone)
    elif family == "kube_pod_status_phase":
        labels = {**ident, "phase": "Running"}
        window.series(labels, family, "1", p.start, p.end)
        window.series(labels, family, "0", p.end, gone)
    elif family == "kube_pod_start_time":
        window.series(ident, family, str(p.start), p.start, gone)
    else:
        window.series(ident, family, str(p.end), p.end, gone)


def _dcgm_series(window: _Window, live: list[BenchPod]) -> None:
    """The DCGM exporter's engine activity of every GPU of every running pod."""
    window.family("DCGM_FI_PROF_GR_ENGINE_ACTIVE")
    for p in live:
        for gpu in range(p.gpus):
            labels = {
                "gpu": str(gpu),
                "Hostname": p.node,
                "modelName": p.model,
                "namespace": p.namespace,
                "pod": p.name,
            }
            window.series(
                labels, "DCGM_FI_PROF_GR_ENGINE_ACTIVE", str(p.utilization), p.start, p.end
            )


@dataclass
class Loaded:
    samples: int
    pods: int
    truth_gpu_seconds: float
    bytes_written: int
    generation_s: float
    promtool_s: float


def load(folder: Path, days: int) -> Loaded:
    """Generate the workload window by window (2-hour blocks) and load each with promtool:
    one input per block keeps promtool linear instead of re-reading a month per block."""
    nodes, pods = workload(days)
    t0 = int(START.timestamp())
    t1 = t0 + days * 86400
    # Pods still reported by kube-state-metrics after the end are cut at the range end.
    loaded = Loaded(0, len(pods), 0.0, 0, 0.0, 0.0)
    loaded.truth_gpu_seconds = float(sum((p.end - p.start) * p.gpus for p in pods))
    path = folder / "window.om"
    for w0 in range(t0 - t0 % BLOCK, t1, BLOCK):
        started = time.monotonic()
        loaded.samples += write_window(path, nodes, pods, max(w0, t0), min(w0 + BLOCK, t1))
        loaded.bytes_written += path.stat().st_size
        loaded.generation_s += time.monotonic() - started
        loaded.promtool_s += create_blocks(path, folder / "data")
    path.unlink()
    return loaded


def ledger_backends() -> list[str]:
    """The ledgers to meter into, BENCH_METERING_LEDGERS (default: both, one after the
    other, from the same Prometheus)."""
    names = os.environ.get("BENCH_METERING_LEDGERS", "sqlite,postgresql").split(",")
    unknown = set(names) - {"sqlite", "postgresql"}
    if unknown:
        raise SystemExit(f"BENCH_METERING_LEDGERS: unknown {sorted(unknown)}")
    return names


def ledger_url(
    backend: str, folder: Path, servers: contextlib.ExitStack
) -> tuple[str, PostgresServer | None]:
    """A fresh ledger: a SQLite file, or a database on a private PostgreSQL server (fsync
    on, as a real ledger would run)."""
    if backend == "sqlite":
        return f"sqlite:///{folder / 'ledger.db'}", None
    server = servers.enter_context(PostgresServer(durable=True))
    return server.create_database("bench_ledger"), server


class PeakRSS:
    """Samples the RSS of this process and of Prometheus (and the memory of a PostgreSQL
    server) until stopped."""

    def __init__(self, other: PrometheusServer, database: PostgresServer | None = None) -> None:
        self.other = other
        self.database_server = database
        self.own = 0
        self.prometheus = 0
        self.database = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            self.own = max(self.own, me.memory_info().rss)
            self.prometheus = max(self.prometheus, self.other.rss_bytes())
            if self.database_server is not None:
                self.database = max(self.database, self.database_server.memory_bytes())
            time.sleep(0.2)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run(console: Console) -> None:
    days = int(os.environ.get("BENCH_METERING_DAYS", "7"))
    folder = Path(tempfile.mkdtemp(prefix="bench-metering-"))
    try:
        data = load(folder, days)
        samples, pods, truth = data.samples, data.pods, data.truth_gpu_seconds
        generated, promtool, size = data.generation_s, data.promtool_s, data.bytes_written
        console.print(
            f"generated {samples:,} samples of {pods:,} pods in {generated:.1f} s, "
            f"promtool {promtool:.1f} s"
        )
        with contextlib.ExitStack() as servers:
            prom = servers.enter_context(PrometheusServer(folder / "data"))
            for backend in ledger_backends():
                url, database = ledger_url(backend, folder, servers)
                with PeakRSS(prom, database) as peak:
                    ledger = Ledger(url)
                    meter = Meter(
                        PromSource(prom.url, timeout=600),
                        ledger,
                        load_policy(None),
                        MeterConfig(interval=INTERVAL),
                    )
                    started = time.monotonic()
                    summary = meter.meter_range(START, START + timedelta(days=days))
                    metering = time.monotonic() - started
                end = START + timedelta(days=days)
                metered = float(ledger.usage_frame(START, end)["gpu_seconds"].sum())
                ledger.close()
                month = metering * 30 / days

                table = Table(
                    title=f"metering: {NODES * GPUS_PER_NODE} GPUs, 30 s scrapes, {days} days, "
                    f"{backend} ledger"
                )
                table.add_column("measure")
                table.add_column("value", justify="right")
                table.add_column("target", justify="right")
                table.add_row("samples generated", f"{samples:,}", "")
                table.add_row("OpenMetrics size", f"{size / 1024**3:.2f} GiB", "")
                table.add_row("pods", f"{pods:,}", "")
                table.add_row("generation (Python)", f"{generated:.1f} s", "")
                table.add_row("promtool create-blocks-from", f"{promtool:.1f} s", "")
                table.add_row(f"metering {days * 24} hours (measured)", f"{metering:.1f} s", "")
                table.add_row(
                    "metering 30 days (scaled x30/days)" if days != 30 else "metering 30 days",
                    f"{month:.1f} s",
                    f"< {TARGET_SECONDS:.0f} s",
                    style="green" if month < TARGET_SECONDS else "red",
                )
                table.add_row(
                    "hours metered / pending", f"{summary.hours_ok} / {summary.hours_pending}", ""
                )
                table.add_row(
                    "GPU-hours metered / true",
                    f"{metered / 3600:,.1f} / {truth / 3600:,.1f}",
                    "equal",
                )
                table.add_row(
                    "peak RSS, this process",
                    f"{peak.own / 1024**2:,.0f} MiB",
                    f"< {TARGET_BYTES / 1024**3:.0f} GiB",
                    style="green" if peak.own < TARGET_BYTES else "red",
                )
                table.add_row("peak RSS, prometheus", f"{peak.prometheus / 1024**2:,.0f} MiB", "")
                if database is not None:
                    table.add_row(
                        "peak memory, postgres (PSS)", f"{peak.database / 1024**2:,.0f} MiB", ""
                    )
                print_table(console, table)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
