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

import hashlib
import json
import os
import sys
from pathlib import Path

from mypyc.build import mypycify
from setuptools import setup

ROOT = Path(__file__).resolve().parent.parent
ENGINE = Path("scheduler/engine")
MANIFEST = ENGINE / "compiled.json"
"""What the compiled modules were compiled from: each source's SHA-256 (file times are no
guide: the build copies an up-to-date module with its old time)."""
GROUP = "scheduler.engine.native"
"""The modules' shared library is `scheduler/engine/native__mypyc*.so`, inside the
package, so the engine imports from any working directory."""


def main(build_dir: str) -> None:
    os.chdir(ROOT)
    # A module removed from the sources must not live on as a compiled one.
    for old in [*ENGINE.glob("*.so"), MANIFEST]:
        old.unlink(missing_ok=True)
    # The package's __init__ stays Python: its compiled self would import the shared
    # library inside the package before the package exists.
    sources = sorted(str(p) for p in ENGINE.glob("*.py") if p.name != "__init__.py")
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
    digests = {Path(p).name: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in sources}
    MANIFEST.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python mk/engine_build.py BUILD_DIR")
    main(sys.argv[1])
