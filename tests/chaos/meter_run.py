"""The meter under faults: `fairpool meter`, run as the hourly job would run it, against a
real Prometheus loaded (promtool) with a known day, while Prometheus is down for two of
the hours (and, with a PostgreSQL ledger, while the database stops during a run).

Every hourly run is `fairpool meter --now <hour end + 10 min>` (a separate process, as
the CronJob runs it). While Prometheus is down the runs exit 1 and the hours they would
read stay pending in the ledger; the first run after it returns meters them. Afterwards
each hour must be in the ledger exactly once, with the GPU-seconds the scenario itself
says (computed from the pods' start and end times, not from Prometheus).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from policies.loader import DEFAULT_POLICY
from reports.ledger import Ledger
from tests.pgtest import PostgresServer
from tests.promtest import PrometheusServer, Scenario, create_blocks

HOUR = timedelta(hours=1)
H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-80GB"
START = datetime(2026, 10, 5, 8, tzinfo=UTC)
HOURS = 8
DOWN = (3, 4)
"""Hours (index from START) whose hourly runs find Prometheus down."""
DB_DOWN = 6
"""Hour (index) whose hourly run sees the ledger's database stop under it."""
DB_DOWN_SECONDS = 5.0


def scenario() -> Scenario:
    """Two nodes, four pods of the demo policy's members across the eight hours."""
    s = Scenario(interval=30)
    end = START + HOURS * HOUR
    a = s.node("gpu-a", "uni-north", H100, 8, START, end)
    b = s.node("gpu-b", "lab-bio", A100, 4, START, end)
    s.pod("lab-bio", "train-1", a, 4, START, end - timedelta(minutes=20))
    s.pod("physics", "infer-1", b, 2, START + timedelta(hours=1, minutes=30), end)
    s.pod(
        "ai-startup-x",
        "ext",
        a,
        2,
        START + timedelta(hours=2, minutes=40, seconds=10),
        START + timedelta(hours=5, minutes=20, seconds=20),
        fairpool=False,
    )
    s.pod("physics", "train-2", b, 2, START + timedelta(hours=3, minutes=5), end)
    return s


@dataclass
class MeterResult:
    runs: list[tuple[str, int]] = field(default_factory=list)
    """(what the run was, exit status)."""
    pending_during_outage: list[datetime] = field(default_factory=list)
    hours_metered: int = 0
    hours_duplicated: int = 0
    hours_lost: int = 0
    usage_rows_duplicated: int = 0
    ledger_gpu_hours: float = 0.0
    scenario_gpu_hours: float = 0.0
    hours_off: list[datetime] = field(default_factory=list)
    """Hours whose GPU-seconds differ from the scenario's."""

    @property
    def gpu_hours_match(self) -> bool:
        return not self.hours_off and abs(self.ledger_gpu_hours - self.scenario_gpu_hours) < 1e-6


def meter_command(prometheus: str, ledger: str, now: datetime) -> list[str]:
    return [
        str(Path(sys.executable).with_name("fairpool")),
        "meter",
        "--prometheus",
        prometheus,
        "--ledger",
        ledger,
        "--policy",
        str(DEFAULT_POLICY),  # the scenario's pods are the demo policy's members'
        "--now",
        now.isoformat(),
    ]


def hourly_run(prometheus: str, ledger: str, hour: datetime, log: Path) -> int:
    """The hourly job ten minutes after `hour` closed."""
    now = hour + HOUR + timedelta(minutes=10)
    with log.open("ab") as out:
        return subprocess.run(
            meter_command(prometheus, ledger, now),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
        ).returncode


def _database_stopped_during_run(
    postgres: PostgresServer, prometheus: str, ledger_url: str, hour: datetime, log: Path
) -> int:
    """The hourly job for `hour`, with PostgreSQL stopped the instant the job has
    connected to the ledger, and started again `DB_DOWN_SECONDS` later."""
    now = hour + HOUR + timedelta(minutes=10)
    with log.open("ab") as out:
        process = subprocess.Popen(
            meter_command(prometheus, ledger_url, now), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if postgres.clients("chaos_ledger"):
                break
            time.sleep(0.02)
        postgres.stop_server()
        time.sleep(DB_DOWN_SECONDS)
        postgres.start_again()
        return process.wait(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def run_meter_chaos(
    workdir: Path,
    postgres: PostgresServer | None = None,
    say: Callable[[str], None] = print,
) -> MeterResult:
    """Meter the scenario hour by hour with Prometheus down for the `DOWN` hours; with
    `postgres` the ledger is a database on it, stopped during the run of hour `DB_DOWN`
    (else an SQLite file)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if postgres is not None:
        ledger_url = postgres.create_database("chaos_ledger")
    else:
        ledger_url = f"sqlite:///{workdir / 'ledger.db'}"
    s = scenario()
    create_blocks(s.write_openmetrics(workdir / "scenario.om"), workdir / "prometheus")
    log = workdir / "meter.log"
    result = MeterResult()
    server = PrometheusServer(workdir / "prometheus").start()
    try:
        for index in range(HOURS):
            hour = START + index * HOUR
            if index == DOWN[0]:
                server.stop()
                say(f"prometheus stopped before the run for {hour:%H}:00")
            if index == DOWN[-1] + 1:
                server.start()
                with Ledger(ledger_url) as ledger:
                    result.pending_during_outage = ledger.pending_hours()
                pending = ", ".join(f"{h:%H}:00" for h in result.pending_during_outage)
                say(f"prometheus back; pending: {pending}")

            if postgres is not None and index == DB_DOWN:
                status = _database_stopped_during_run(postgres, server.url, ledger_url, hour, log)
                result.runs.append((f"{hour:%H}:00, database stopped during the run", status))
                say(f"the run for {hour:%H}:00 ended with status {status}")
            else:
                result.runs.append((f"{hour:%H}:00", hourly_run(server.url, ledger_url, hour, log)))
        # A second run of the last job (a retried CronJob) replaces, never adds.
        result.runs.append(("last again", hourly_run(server.url, ledger_url, hour, log)))
    finally:
        server.stop()
    _count(result, s, ledger_url)
    return result


def _count(result: MeterResult, s: Scenario, ledger_url: str) -> None:
    end = START + HOURS * HOUR
    with Ledger(ledger_url) as ledger:
        status = ledger.hour_status(START, end)
        usage = ledger.usage_frame(START, end)
        pending = ledger.pending_hours()
    hours = [START + i * HOUR for i in range(HOURS)]
    metered = status[status["status"] == "metered"]
    counts = metered["hour"].value_counts()
    result.hours_metered = len(metered)
    result.hours_duplicated = int((counts > 1).sum())
    seen = {pd.Timestamp(h).to_pydatetime() for h in metered["hour"]}
    result.hours_lost = sum(h not in seen for h in hours) + len([h for h in pending if h in hours])
    result.usage_rows_duplicated = int(usage.duplicated(["hour", "pod_uid"]).sum())
    result.ledger_gpu_hours = float(usage["gpu_seconds"].sum()) / 3600
    result.scenario_gpu_hours = s.gpu_seconds(START, end) / 3600
    by_hour = usage.groupby("hour")["gpu_seconds"].sum()
    for hour in hours:
        expected = s.gpu_seconds(hour, hour + HOUR)
        got = float(by_hour.get(pd.Timestamp(hour), 0.0))
        if abs(got - expected) > 1e-6 * max(1.0, expected):
            result.hours_off.append(hour)
