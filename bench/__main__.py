"""Run every benchmark module (`bench/bench_*.py`, each exposing `run(console)`).

`python -m bench NAME...` runs only those; options after the names go to the one module
named, which then runs its `main(options)` (e.g. `python -m bench soak --minutes 30`)."""

from __future__ import annotations

import importlib
import pkgutil
import sys

from rich.console import Console

import bench
from scheduler.engine_build import kind


def main(argv: list[str]) -> int:
    console = Console()
    # Every figure below is this build's (scheduler/engine_build.py; `make bench` asks for
    # the compiled one).
    console.print(f"engine build: {kind()}")
    first_option = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    wanted, options = set(argv[:first_option]), argv[first_option:]
    names = sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")
    )
    chosen = [n for n in names if not wanted or n in wanted or n.removeprefix("bench_") in wanted]
    if options:
        if len(chosen) != 1:
            console.print("options need exactly one benchmark named before them")
            return 2
        module = importlib.import_module(f"bench.{chosen[0]}")
        if not hasattr(module, "main"):
            console.print(f"{chosen[0]} takes no options")
            return 2
        return int(module.main(options))
    for name in chosen:
        module = importlib.import_module(f"bench.{name}")
        console.rule(name)
        module.run(console)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
