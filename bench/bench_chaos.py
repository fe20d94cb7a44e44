"""Chaos: two `fairpool run` replicas and the meter under faults, on real parts.

On a private local control plane (etcd, kube-apiserver with an audit log, kwok nodes):
four members (one owning no node, so it borrows and is reclaimed from), single pods and
gangs of several shapes arriving at random; the leader is killed 20 times (half of the
kills the instant it binds a gang pod), kube-apiserver and etcd are each killed and
started again. Then `fairpool meter`, run as the hourly job, against a promtool-loaded
Prometheus that is down for two hours, with its PostgreSQL ledger stopped during a run.
The table says what was counted (tests/chaos); the whole run takes about ten minutes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from rich.console import Console

from scheduler.cli.tables import print_table
from tests.chaos.meter_run import run_meter_chaos
from tests.chaos.report import chaos_table
from tests.chaos.scheduler_run import ChaosConfig, run_chaos
from tests.pgtest import PostgresServer

KILLS = 20


def run(console: Console) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fairpool-chaos-"))
    keep = False
    try:
        console.print(f"load average before: {_load()}")
        scheduler = run_chaos(ChaosConfig(kills=KILLS), workdir / "scheduler", console.print)
        with PostgresServer() as postgres:
            meter = run_meter_chaos(workdir / "meter", postgres, console.print)
        print_table(console, chaos_table(scheduler, meter))
        keep = bool(
            scheduler.double_binds
            or scheduler.overcommitted_samples
            or scheduler.partly_bound_at_end
            or scheduler.lost
        )
        if keep:
            console.print(f"logs, audit log and state kept in {workdir}")
            console.print(
                f"double binds: {scheduler.double_binds}; partly bound: "
                f"{scheduler.partly_bound_at_end}; waiting without a reason: "
                f"{scheduler.waiting_without_reason}; gone: {scheduler.vanished}"
            )
        console.print(f"load average after: {_load()}")
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())
