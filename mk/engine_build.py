"""Compile the pure engine (scheduler/engine/*.py) to C extension modules with mypyc,
next to its sources, where Python's import system prefers them (`make engine`).

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

from scheduler.engine_build import ENGINE_DIR, compiled_sources, digest, manifest  # noqa: E402

GROUP = "scheduler.engine.native"
"""The modules' shared library is `scheduler/engine/native__mypyc*.so`, inside the
package, so the engine imports from any working directory."""


def main(build_dir: str) -> None:
    os.chdir(ROOT)
    # A module removed from the sources must not live on as a compiled one.
    for old in [*ENGINE_DIR.glob("*.so"), manifest()]:
        old.unlink(missing_ok=True)
    compiled = compiled_sources()
    sources = [str(p.relative_to(ROOT)) for p in compiled]
    build = Path(build_dir).resolve()
    setup(
        name="fairpool-engine",
        ext_modules=mypycify(
            sources, target_dir=str(build / "c"), group_name=GROUP, multi_file=True
        ),
        script_args=[
            "--quiet",
            "build_ext",
            "--inplace",
            "--build-temp",
            str(build / "obj"),
            # mypyc writes the group's headers under its dotted name's folders.
            "--include-dirs",
            str(build / "c" / Path(*GROUP.split(".")[:-1])),
        ],
    )
    digests = {p.name: digest(p) for p in compiled}
    manifest().write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python mk/engine_build.py BUILD_DIR")
    main(sys.argv[1])
