"""Python's cyclic garbage collector paused while a cycle runs.

A cycle makes a few containers per pending job and per node (positions, views, queues,
decisions), and none of them ends in a reference cycle: reference counting frees all of
it (`tests/unit/test_engine_collector.py` collects after every cycle of two contended
demo days and finds nothing). Left running, the collector is set off by those
allocations over and over, and each pass walks the young objects, which in a cold cycle
are the snapshot's own jobs, just built by the caller: a cold cycle at 5,000 nodes and
50,000 pending, Python's default settings, took 340-530 ms with it off and 550-750 ms
with it on, in alternation on one machine. Pausing it changes no decision; a collection
the caller's own allocations call for runs after the cycle instead of during it. The
daemon's API threads and the cycle may overlap, so pauses nest: the collector resumes
when the last one ends, and only if it was running when the first began.
"""

from __future__ import annotations

import gc
import threading


class _Pauses:
    __slots__ = ("depth", "lock", "resume")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.resume = False


_PAUSES = _Pauses()


def pause() -> None:
    """Turn the collector off until the matching `resume`. A function, not a context
    manager: making any object could set off the very collection the pause is for."""
    p = _PAUSES
    with p.lock:
        if p.depth == 0:
            p.resume = gc.isenabled()
            gc.disable()
        p.depth += 1


def resume() -> None:
    p = _PAUSES
    with p.lock:
        p.depth -= 1
        if p.depth == 0 and p.resume:
            gc.enable()
