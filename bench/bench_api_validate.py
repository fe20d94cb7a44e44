"""ValidatePolicy alone (the last table of bench_api): policies of 10,000 members and
of the most members a policy may have, over gRPC and parsed locally."""

from __future__ import annotations

from rich.console import Console

from bench.bench_api import validate_table


def run(console: Console) -> None:
    validate_table(console)
