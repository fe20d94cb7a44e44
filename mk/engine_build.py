"""Compile the pure engine (scheduler/engine/*.py), and the simulator's modules that run
at every event (`scheduler.engine_build.SIM_MODULES`), to C extension modules with mypyc,
next to their sources, where Python's import system prefers them (`make engine`).

The sources stay the engine: the compiled modules are a build product (never committed),
type-checked by the same mypy, and give the same decisions (tests/unit/
test_engine_build.py replays six contended days both ways). `scheduler/engine_build.py`
decides at import which build runs and falls back to the sources when a compiled module
was compiled from another version of its source.

Usage: python mk/engine_build.py BUILD_DIR   (C sources and objects go under BUILD_DIR)
"""

from __future__ import annotations

import json
import os
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
    compiled_sources,
    digest,
    manifest,
    source_name,
)

GROUPS = {ENGINE_DIR: "scheduler.engine.native", SIM_DIR: "scheduler.sim.native"}
"""One shared library per package, inside it (`scheduler/engine/native__mypyc*.so`), so
that each imports from any working directory. The engine's holds the engine alone (it
imports nothing from the shells); the simulator calls it as it calls any module."""


def main(build_dir: str) -> None:
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
            extension.extra_compile_args.append("-fno-semantic-interposition")
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
            # at once (a cold `make engine`: 58 s on two cores).
            "--parallel",
            str(os.cpu_count() or 1),
        ],
    )
    digests = {source_name(p): digest(p) for p in compiled}
    manifest().write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python mk/engine_build.py BUILD_DIR")
    main(sys.argv[1])
