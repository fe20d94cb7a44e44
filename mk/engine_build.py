"""Compile the pure engine (scheduler/engine/*.py), and the simulator's modules that run
at every event (`scheduler.engine_build.SIM_MODULES`), to C extension modules with mypyc,
next to their sources, where Python's import system prefers them (`make engine`).

The sources stay the engine: the compiled modules are a build product (never committed),
type-checked by the same mypy, and give the same decisions (tests/unit/
test_engine_build.py replays six contended days both ways). `scheduler/engine_build.py`
decides at import which build runs and falls back to the sources when a compiled module
was compiled from another version of its source.

The C compiler optimises from a profile (profile-guided optimisation): the modules are
first built to count what runs, the built-in demo's simulated month is replayed with
them (`train`), and they are built again laid out and inlined for what ran most. The
counts change where the compiler spends its effort, never what the code does.

Usage: python mk/engine_build.py BUILD_DIR   (C sources, objects and the profile go under
BUILD_DIR)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from mypyc.build import mypycify
from setuptools import setup

ROOT = Path(__file__).resolve().parent.parent
# The checkout this script is in, not whichever one the venv installed: the build deletes
# and writes modules in the engine folder `scheduler.engine_build` names.
sys.path.insert(0, str(ROOT))

from scheduler.engine_build import (  # noqa: E402
    ENGINE_DIR,
    SIM_DIR,
    VARIABLE,
    compiled_sources,
    digest,
    manifest,
    source_name,
)

GROUPS = {ENGINE_DIR: "scheduler.engine.native", SIM_DIR: "scheduler.sim.native"}
"""One shared library per package, inside it (`scheduler/engine/native__mypyc*.so`), so
that each imports from any working directory. The engine's holds the engine alone (it
imports nothing from the shells); the simulator calls it as it calls any module."""


TRAINING_DAYS = 30.0
"""The built-in demo's month (about 5 s counted, 3 s once optimised)."""


def main(build_dir: str) -> None:
    """Counting build, training replay, optimised build; each step a process of its own
    (a build leaves state behind in mypyc and setuptools, and the replay must import the
    modules just built)."""
    build = Path(build_dir).resolve()
    profile = build / "profile"
    shutil.rmtree(profile, ignore_errors=True)
    script = str(Path(__file__).resolve())
    generate = [f"-fprofile-generate={profile}", "-fprofile-update=single"]
    _step([script, "--compile", str(build), *generate], "interpreted")
    _step([script, "--train"], "compiled")
    # Functions the replay never reached are compiled small, as code that rarely runs
    # (`train` reaches what the daemon runs beyond the simulator: the explanations).
    # `-fprofile-correction` only smooths counts a thread race could skew.
    use = [f"-fprofile-use={profile}", "-fprofile-correction", "-Wno-missing-profile"]
    _step([script, "--compile", str(build), *use], "interpreted")


def _step(args: list[str], engine: str) -> None:
    subprocess.run([sys.executable, *args], check=True, env={**os.environ, VARIABLE: engine})


def train() -> None:
    """The built-in demo's pooled month, as `make demo` replays it (its inputs, load,
    seed and a cycle at every instant), with the modules just built. Every 20th cycle's
    explanations are written too, as the daemon writes them for its API and events (the
    simulator never reads them)."""
    from policies.inventory import load_inventory
    from policies.loader import load_policy
    from policies.model import Policy
    from scheduler.cli.simulate import DEFAULT_LOAD, default_trace
    from scheduler.engine import schedule
    from scheduler.engine.decisions import Decisions
    from scheduler.engine.snapshot import Snapshot
    from scheduler.sim.cluster import build_nodes
    from scheduler.sim.simulator import Simulator

    cycles = 0

    def explaining(snapshot: Snapshot, policy: Policy) -> Decisions:
        nonlocal cycles
        decisions = schedule(snapshot, policy)
        cycles += 1
        if cycles % 20 == 0:
            dict(decisions.explanations)
        return decisions

    policy, inventory = load_policy(None), load_inventory(None)
    trace, _ = default_trace(inventory, policy, TRAINING_DAYS, DEFAULT_LOAD, seed=42)
    Simulator(build_nodes(inventory), policy, trace, explaining).run()


def compile_modules(build_dir: str, flags: list[str]) -> None:
    os.chdir(ROOT)
    # A module removed from the sources must not live on as a compiled one.
    for old in [*ENGINE_DIR.glob("*.so"), *SIM_DIR.glob("*.so"), manifest()]:
        old.unlink(missing_ok=True)
    compiled = compiled_sources()
    build = Path(build_dir).resolve()
    ext_modules = []
    for folder, group in GROUPS.items():
        sources = [str(p.relative_to(ROOT)) for p in compiled if p.parent == folder]
        target = build / "c" / folder.name
        # One C file per library: the compiler then sees every function of the group at
        # once and, told that no other library will replace them (not interposed), calls
        # and inlines them directly across modules, where one file per module called each
        # other module's functions through the library's symbol table. Neither alone made
        # a replay faster; together the engine's part took about 3 % less (docs/
        # architecture.md, "The compiled engine").
        extensions = mypycify(sources, target_dir=str(target), group_name=group, multi_file=False)
        # mypyc writes the group's headers under its dotted name's folders, with the same
        # names in every group: each group's extensions see only their own.
        headers = str(target / Path(*group.split(".")[:-1]))
        for extension in extensions:
            extension.include_dirs.append(headers)
            extension.extra_compile_args += ["-fno-semantic-interposition", *flags]
            extension.extra_link_args += flags
        ext_modules += extensions
    setup(
        name="fairpool-engine",
        ext_modules=ext_modules,
        script_args=[
            "--quiet",
            "build_ext",
            "--inplace",
            "--build-temp",
            str(build / "obj"),
            "--build-lib",
            str(build / "lib"),
            # Every run compiles anew: the Makefile runs this only when a source or this
            # script changed, and a library that looks up to date may have been built
            # with other flags.
            "--force",
            # The extensions compile side by side, the engine's library and the simulator's
            # at once (each of the two builds about 60 s on two cores).
            "--parallel",
            str(os.cpu_count() or 1),
        ],
    )
    digests = {source_name(p): digest(p) for p in compiled}
    manifest().write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--compile":
        compile_modules(sys.argv[2], sys.argv[3:])
    elif sys.argv[1:] == ["--train"]:
        train()
    elif len(sys.argv) == 2:
        main(sys.argv[1])
    else:
        raise SystemExit("usage: python mk/engine_build.py BUILD_DIR")
