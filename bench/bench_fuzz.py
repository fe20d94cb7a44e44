"""A long fuzzing run of the gRPC API (`python -m bench fuzz`): the generators of
tests/fuzzing.py (valid and mutated policies, trace CSVs, requests for every method from
every role) against a real server on loopback for FAIRPOOL_FUZZ_SECONDS (default 120).
Prints the requests per method and the statuses seen, and every problem found (an
UNKNOWN or INTERNAL answer, an INVALID_ARGUMENT naming nothing)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from scheduler.cli.tables import print_table
from tests import fuzzing
from tests.unit.test_api_support import ROLES, metadata, running_server

DEFAULT_SECONDS = 120.0


def run(console: Console, seconds: float | None = None) -> fuzzing.Tally:
    seconds = seconds or float(os.environ.get("FAIRPOOL_FUZZ_SECONDS", DEFAULT_SECONDS))
    roles = {str(role): metadata(role) for role in ROLES}
    tally = fuzzing.Tally()
    load = os.getloadavg()[0]
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="fairpool-fuzz-") as folder,
        running_server(Path(folder)) as api,
        console.status(f"fuzzing the API for {seconds:.0f} s…"),
    ):
        fuzzing.fuzz_for(seconds, api.channel, roles, tally)
        incidents = api.server.guard.incidents
    elapsed = time.monotonic() - started
    table = Table(
        title=f"API fuzzing: {sum(tally.calls.values()):,} requests in {elapsed:.0f} s "
        f"(load average {load:.1f} at the start), {len(tally.problems)} problem(s), "
        f"{incidents} incident(s)",
        title_justify="left",
    )
    table.add_column("method")
    table.add_column("requests", justify="right")
    table.add_column("statuses seen")
    for method in sorted(tally.calls):
        seen = sorted((s, n) for (m, s), n in tally.statuses.items() if m == method)
        table.add_row(method, f"{tally.calls[method]:,}", ", ".join(f"{s} {n:,}" for s, n in seen))
    everything: dict[str, int] = {}
    for (_, status), count in tally.statuses.items():
        everything[status] = everything.get(status, 0) + count
    table.add_row(
        "all",
        f"{sum(tally.calls.values()):,}",
        ", ".join(f"{s} {n:,}" for s, n in sorted(everything.items())),
        style="bold",
    )
    print_table(console, table)
    for found in tally.problems[:20]:
        console.print(f"[red]problem:[/] {found}")
    return tally
