"""The engine benchmark times cycles on what the daemon hands the engine."""

from __future__ import annotations

from typing import Any

import pytest

from bench import bench_engine
from scheduler.engine import schedule
from scheduler.engine.decisions import Decisions
from scheduler.engine.snapshot import Snapshot


def test_every_timed_cycle_gets_a_nodes_tuple_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The engine keeps node-only work for an identical nodes tuple; the daemon builds a
    # new one each cycle, so a cycle on the caller's tuple would be timed too fast.
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
    bench_engine._cold(snapshot, policy, 2)
    bench_engine._peak(snapshot, policy)
    assert len(seen) == 5
    assert all(s.nodes is not snapshot.nodes and s.nodes == snapshot.nodes for s in seen)
    assert len({id(s.nodes) for s in seen}) == len(seen)


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
