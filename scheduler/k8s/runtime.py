"""Interpreter settings for the daemon's process: its scheduling loop is pure Python and
shares one interpreter with the binder, the informers and the gRPC API.

- GIL switch interval: a thread waiting for the GIL (an API call, a bind's answer) gets
  it after at most this long of someone else's bytecode. The default 5 ms, paid at each
  of the several hand-offs of one gRPC call while a cycle runs, is what an API caller
  would wait; 1 ms costs the cycle little.
- Garbage collector: a cycle allocates and frees hundreds of thousands of objects, and
  with the default thresholds a full collection (walking every object of a cluster
  cache: about 0.1 s for 10,000 pods) comes every other cycle and stops every thread.
  The objects listed at start-up live as long as the process, so they are frozen out of
  the collector's walks once the informers have synced, and young collections run less
  often. Reference counting still frees everything that is not in a cycle at once.
"""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass

SWITCH_INTERVAL_SECONDS = 0.001
GC_THRESHOLDS = (50_000, 20, 20)


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    switch_interval: float
    gc_thresholds: tuple[int, int, int]


def tune() -> RuntimeSettings:
    """Apply the daemon's settings; returns the previous ones (for `restore`)."""
    previous = RuntimeSettings(sys.getswitchinterval(), gc.get_threshold())
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    gc.set_threshold(*GC_THRESHOLDS)
    return previous


def restore(settings: RuntimeSettings) -> None:
    sys.setswitchinterval(settings.switch_interval)
    gc.set_threshold(*settings.gc_thresholds)


def freeze_startup_objects() -> int:
    """Collect once, then keep every object alive now out of later collections; returns
    how many were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
