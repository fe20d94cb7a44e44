"""Trace speed: synthesizing, writing and reading canonical CSVs of growing size, and
importing a Helios-format log. Target: 100k rows read in well under a few seconds."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.table import Table

from scheduler.cli.tables import print_table
from scheduler.traces import read_trace, synthesize, write_trace
from scheduler.traces.importers import import_helios

T = TypeVar("T")
MEMBERS = [f"member-{i}" for i in range(1, 9)]


def _timed(action: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    value = action()
    return value, time.perf_counter() - start


def _helios_log(path: Path, rows: int) -> None:
    lines = [
        "job_id,user,vc,gpu_num,cpu_num,node_num,state,submit_time,start_time,end_time,"
        "duration,queue"
    ]
    for i in range(rows):
        gpus, nodes = ((1, 1), (8, 1), (16, 2), (0, 1))[i % 4]
        minute = i % 60
        lines.append(
            f"{i},u{i % 97},vc{i % 5},{gpus},4,{nodes},COMPLETED,"
            f"2020-07-01 09:{minute:02d}:00,2020-07-01 09:{minute:02d}:30,,{60 + i % 3600},30"
        )
    path.write_text("\n".join(lines) + "\n")


def run(console: Console) -> None:
    table = Table(title="traces")
    for name in ("case", "jobs", "synthesize s", "write s", "read s", "read rows/s"):
        table.add_column(name, justify="left" if name == "case" else "right")
    with tempfile.TemporaryDirectory() as scratch:
        cases = [
            ("64 GPUs x 30 d", 64, 30.0),
            ("500 GPUs x 30 d", 500, 30.0),
            ("3,000 GPUs x 30 d", 3000, 30.0),
        ]
        for label, gpus, days in cases:
            trace, synth_s = _timed(partial(synthesize, MEMBERS, gpus, days, 1.0, 1))
            path = Path(scratch) / f"{gpus}.csv"
            _, write_s = _timed(partial(write_trace, trace, path))
            read, read_s = _timed(partial(read_trace, path))
            jobs = len(read.jobs)
            table.add_row(
                label,
                f"{jobs:,}",
                f"{synth_s:.2f}",
                f"{write_s:.2f}",
                f"{read_s:.2f}",
                f"{jobs / read_s:,.0f}",
            )
        helios = Path(scratch) / "cluster_log.csv"
        _helios_log(helios, 100_000)
        report, import_s = _timed(lambda: import_helios(helios))
        jobs = report.imported
        table.add_row(
            "Helios 100k rows",
            f"{jobs:,}",
            "",
            "",
            f"{import_s:.2f}",
            f"{100_000 / import_s:,.0f}",
        )
    print_table(console, table)
