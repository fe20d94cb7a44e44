"""Run every benchmark module (`bench/bench_*.py`, each exposing `run(console)`)."""

from __future__ import annotations

import importlib
import pkgutil
import sys

from rich.console import Console

import bench


def main(argv: list[str]) -> int:
    console = Console()
    wanted = set(argv)
    names = sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")
    )
    for name in names:
        if wanted and name not in wanted and name.removeprefix("bench_") not in wanted:
            continue
        module = importlib.import_module(f"bench.{name}")
        console.rule(name)
        module.run(console)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
