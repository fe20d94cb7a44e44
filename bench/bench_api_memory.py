"""Does the API server's memory grow without bound under large requests?

`fairpool serve-api` runs as a child process; rounds of concurrent ValidatePolicy calls
with policies of 5,000 members (0.4 MB each) are sent to it, and its resident set size
(VmRSS) is read after every round: a leak grows round after round, a high-water mark
(the allocator keeping freed memory for the next large request, one arena per thread)
stops growing after the first rounds. The run is made twice: with glibc's default
arenas, and with MALLOC_ARENA_MAX=2, which bounds how many arenas can each keep a
high-water mark. A second way to the same answer: the Python heap itself (tracemalloc),
in this process, before and after the same parses."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from rich.console import Console
from rich.table import Table

from bench.bench_api import member_heavy_policy
from policies.loader import parse_policy
from proto.fairpool.v1 import policy_pb2, policy_pb2_grpc
from scheduler.cli.tables import print_table

MEMBERS = 5_000
ROUNDS = 8
CLIENTS = 4
TOKENS = {"k8Hd9s-Qm2xV7pLr-admin": "admin", "Zq0-wE4rT6yU8iO2-viewer": "viewer"}


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _serve(folder: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    tokens = folder / "tokens.yaml"
    tokens.write_text(
        "tokens:\n" + "".join(f"  - {{token: '{t}', role: {r}}}\n" for t, r in TOKENS.items())
    )
    port_file = folder / "port"
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scheduler.cli.main",
            "serve-api",
            "--listen",
            "127.0.0.1:0",
            "--tokens",
            str(tokens),
            "--policy",
            str(folder / "policy.yaml"),
            "--ledger-url",
            f"sqlite:///{folder}/ledger.db",
            "--port-file",
            str(port_file),
        ],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not port_file.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("serve-api did not start")
        time.sleep(0.2)
    return child, int(port_file.read_text())


def _rounds(env: dict[str, str], text: str) -> list[float]:
    """RSS (MiB) at start and after each round."""
    with tempfile.TemporaryDirectory(prefix="fairpool-bench-memory-") as tmp:
        child, port = _serve(Path(tmp), env)
        try:
            samples = [_rss_mib(child.pid)]
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = policy_pb2_grpc.PolicyServiceStub(channel)
                tokens = list(TOKENS)

                def validate(i: int) -> int:
                    metadata = (("authorization", f"Bearer {tokens[i % len(tokens)]}"),)
                    reply = stub.ValidatePolicy(
                        policy_pb2.ValidatePolicyRequest(yaml=text), metadata=metadata, timeout=600
                    )
                    return len(reply.members)

                with ThreadPoolExecutor(CLIENTS) as pool:
                    for _ in range(ROUNDS):
                        assert all(n == MEMBERS for n in pool.map(validate, range(CLIENTS)))
                        samples.append(_rss_mib(child.pid))
            return samples
        finally:
            child.terminate()
            child.wait(30)


def _python_heap(text: str) -> tuple[float, float]:
    """Python heap (MiB) held after 2 parses and after 2 + 2 * ROUNDS parses."""
    tracemalloc.start()
    try:
        for _ in range(2):
            parse_policy(text, "bench")
        early = tracemalloc.get_traced_memory()[0]
        for _ in range(2 * ROUNDS):
            parse_policy(text, "bench")
        late = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return early / 2**20, late / 2**20


def run(console: Console) -> None:
    text = member_heavy_policy(MEMBERS)
    load = os.getloadavg()[0]
    runs = {}
    for label, env in (("default arenas", {}), ("MALLOC_ARENA_MAX=2", {"MALLOC_ARENA_MAX": "2"})):
        with console.status(f"{ROUNDS} rounds of {CLIENTS} ValidatePolicy calls ({label})…"):
            runs[label] = _rounds(env, text)
    table = Table(
        title=f"serve-api RSS (MiB) over rounds of {CLIENTS} concurrent ValidatePolicy calls, "
        f"{MEMBERS:,} members, {len(text) / 2**20:.1f} MB each (load average {load:.1f})",
        title_justify="left",
    )
    table.add_column("after round", justify="right")
    for label in runs:
        table.add_column(label, justify="right")
    for i in range(ROUNDS + 1):
        table.add_row("start" if i == 0 else str(i), *(f"{runs[k][i]:.0f}" for k in runs))
    for label, samples in runs.items():
        half = ROUNDS // 2
        console.print(
            f"{label}: +{samples[half] - samples[0]:.0f} MiB in the first {half} rounds, "
            f"+{samples[-1] - samples[half]:.0f} MiB in the last {ROUNDS - half}"
        )
    print_table(console, table)
    early, late = _python_heap(text)
    console.print(
        f"Python heap held after 2 parses: {early:.1f} MiB; after {2 + 2 * ROUNDS}: "
        f"{late:.1f} MiB (a leak would add what one parse keeps, at every parse)"
    )
