"""The engine benchmark times cycles on what the daemon hands the engine."""

from __future__ import annotations

from typing import Any

import pytest

from bench import bench_engine
from scheduler.engine import schedule
from scheduler.engine.decisions import Decisions
from scheduler.engine.snapshot import Snapshot


def test_cold_cycles_get_new_nodes_and_steady_ones_the_tuple_of_the_cycle_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The engine keeps node-only work for an identical nodes tuple. A cold cycle (a node
    # changed) gets a new tuple; the steady cycle the one the cycle before had, as the
    # daemon's view keeps one while no node changes; never the caller's, timed warm
    # from work done before the timing.
    seen: list[Snapshot] = []

    def recording(snapshot: Snapshot, policy: Any) -> Decisions:
        seen.append(snapshot)
        return schedule(snapshot, policy)

    monkeypatch.setattr(bench_engine, "schedule", recording)
    policy = bench_engine._policy()
    snapshot = Snapshot(
        now=100_000.0,
        nodes=bench_engine._nodes(4),
        running=(),
        pending=tuple(bench_engine._jobs(3, 1, 1, "single")),
    )
    bench_engine._time(snapshot, policy, 2)
    steady = seen[:]
    assert len(steady) == 3  # an untimed cycle before, then the two timed
    assert len({id(s.nodes) for s in steady}) == 1 and steady[0].nodes is not snapshot.nodes
    seen.clear()
    bench_engine._cold(snapshot, policy, 2)
    bench_engine._peak(snapshot, policy)
    assert len(seen) == 3
    assert all(s.nodes is not snapshot.nodes and s.nodes == snapshot.nodes for s in seen)
    assert len({id(s.nodes) for s in [*seen, steady[0]]}) == 4


def test_the_reference_engine_gets_the_nodes_tuple_the_engine_is_timed_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The reference engine keeps node-only work for an identical tuple too: on the
    # replay's snapshots (one tuple, as the simulator hands them) it must reuse it as the
    # engine's passes do, or the before column pays for work the after column does not.
    import tests.reference_engine

    seen: list[Snapshot] = []
    monkeypatch.setattr(tests.reference_engine, "schedule", lambda s, p: seen.append(s))
    snapshot = Snapshot(now=0.0, nodes=bench_engine._nodes(2), running=(), pending=())
    bench_engine._before(snapshot, bench_engine._policy())
    assert seen == [snapshot] and seen[0].nodes is snapshot.nodes
