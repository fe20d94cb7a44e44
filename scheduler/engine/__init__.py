"""The pure fair-share engine: a snapshot and a policy in, decisions out.

It imports nothing from the shells (Kubernetes adapter, simulator, API, CLI) and does no
I/O, so the same snapshot and policy always give the same decisions; that is what lets
the simulator predict what the daemon does.
"""

import importlib
import pkgutil

from scheduler.engine.cycle import compute_shares, schedule
from scheduler.engine.pickling import register_by_constructor

# Every module of the package, not the compiled modules' shared library (see engine_build).
register_by_constructor(
    importlib.import_module(f"{__name__}.{m.name}")
    for m in pkgutil.iter_modules(__path__)
    if not m.name.endswith("__mypyc")
)

__all__ = ["compute_shares", "schedule"]
