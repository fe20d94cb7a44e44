"""Which build of the engine Python loads: compiled or interpreted.

`make engine` compiles `scheduler/engine/*.py` with mypyc (mk/engine_build.py) into
extension modules beside the sources, which Python's import system prefers; the same
sources, type-checked the same way, give the same decisions 1.5 to 1.8 times as fast. The
simulator's modules that run at every event (`SIM_MODULES`) are compiled with it, as a
library of their own, and go with it: one build, one choice. This module runs before the
engine is first imported (from `scheduler/__init__.py`) and keeps the interpreted sources
when

- `FAIRPOOL_ENGINE=interpreted` asks for them (the equivalence test, a profiler that
  must see Python frames), or
- a compiled module is missing or was compiled from another version of its source: an
  edited engine must never run its previous compiled self. A warning says to run
  `make engine`.

`FAIRPOOL_ENGINE=compiled` refuses to start without an up-to-date compiled engine (the
benchmarks and `make test` set it, so a figure is never silently the slow build's)."""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ENGINE_DIR = Path(__file__).with_name("engine")
PACKAGE = "scheduler.engine"
SIM_DIR = Path(__file__).with_name("sim")
SIM_MODULES = ("cluster", "simulator", "waiting", "after_cycle")
"""The simulator's modules compiled with the engine: the replay loop, its cluster and
its wait meter, which run at every event, and the meter's reading of a daemon's cycle
(`after_cycle`, at a /metrics scrape: it walks every running and pending pod). The rest
of `scheduler.sim` runs once per replay (the study, its tables and files) and stays
interpreted."""
VARIABLE = "FAIRPOOL_ENGINE"
CHOICES = ("auto", "compiled", "interpreted")


class _SourcesOnly(importlib.abc.MetaPathFinder):
    """Finds the engine's modules, and the simulator's compiled ones, among their `.py`
    files only."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == PACKAGE:
            folder = ENGINE_DIR.parent
        elif fullname.startswith(PACKAGE + "."):
            folder = ENGINE_DIR
        elif fullname in {f"scheduler.sim.{m}" for m in SIM_MODULES}:
            folder = SIM_DIR
        else:
            return None
        finder = importlib.machinery.FileFinder(
            str(folder),
            (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES),
        )
        return finder.find_spec(fullname, target)


def manifest() -> Path:
    """What the compiled modules were compiled from: each source's SHA-256, written by the
    build (mk/engine_build.py)."""
    return ENGINE_DIR / "compiled.json"


def compiled_sources() -> list[Path]:
    """The sources the build compiles: the engine's, all but the package's `__init__.py`
    (whose compiled self would import the modules' shared library, inside the package,
    before the package exists), then the simulator's `SIM_MODULES`."""
    engine = [p for p in sorted(ENGINE_DIR.glob("*.py")) if p.name != "__init__.py"]
    return engine + [SIM_DIR / f"{m}.py" for m in SIM_MODULES]


def source_name(source: Path) -> str:
    """A compiled source as the build record and the messages name it: `engine/cycle.py`,
    `sim/waiting.py`."""
    return f"{source.parent.name}/{source.name}"


def digest(source: Path) -> str:
    return hashlib.sha256(source.read_bytes()).hexdigest()


def stale_modules() -> list[str] | None:
    """Engine sources that differ from what was compiled, or have no compiled module
    ([] when all are up to date); None when nothing was compiled. `compiled.json`, written
    by the build, holds each source's SHA-256 (file times are no guide: the build copies
    an up-to-date module with its old time)."""
    try:
        compiled = json.loads(manifest().read_text())
    except FileNotFoundError:
        return None
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return [
        source_name(p)
        for p in compiled_sources()
        if compiled.get(source_name(p)) != digest(p) or not p.with_name(p.stem + suffix).exists()
    ]


def choose() -> str:
    """Set up the import of the engine; the build it will be: 'compiled' or
    'interpreted'."""
    wanted = os.environ.get(VARIABLE, "auto") or "auto"
    if wanted not in CHOICES:
        raise SystemExit(f"{VARIABLE}: expected one of {', '.join(CHOICES)}, got {wanted!r}")
    if PACKAGE in sys.modules:
        return kind()
    if wanted == "interpreted":
        return _interpreted()
    stale = stale_modules()
    if stale == []:
        return "compiled"
    what = (
        "the engine is not compiled"
        if stale is None
        else f"the compiled engine is out of date for {', '.join(stale)}"
    )
    if wanted == "compiled":
        raise SystemExit(f"{VARIABLE}=compiled: {what}; run `make engine`")
    if stale is not None:
        warnings.warn(
            f"{what}: running the interpreted engine (slower, same decisions); run `make engine`",
            RuntimeWarning,
            stacklevel=2,
        )
    return _interpreted()


def _interpreted() -> str:
    if not any(isinstance(f, _SourcesOnly) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourcesOnly())
    return "interpreted"


def kind() -> str:
    """The build of the engine in this process (imports it)."""
    from scheduler.engine import cycle

    loader = getattr(cycle, "__loader__", None)
    return (
        "compiled" if isinstance(loader, importlib.machinery.ExtensionFileLoader) else "interpreted"
    )
