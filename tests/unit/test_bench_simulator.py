"""The simulator benchmark's verdicts."""

from __future__ import annotations

import pytest
from rich.console import Console

from bench import bench_simulator


def test_only_the_replay_with_its_standalone_replays_is_judged_against_the_target(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The target (15 s for 30 days at load 1.2) is for the pooled replay with its
    # standalone replays: the pooled replay alone doing it in 14 s has met nothing.
    def measure(
        standalone: bool, load: float, days: float, batch_s: float = 0.0
    ) -> dict[str, float]:
        wall = 20.0 if standalone else 14.0
        return dict.fromkeys(
            ("jobs", "cpu_s", "events", "cycles", "engine_s", "pooled_s", "events_per_s"), 1.0
        ) | {"wall_s": wall, "peak_rss_mib": 500.0, "utilization": 0.9, "preemptions": 0.0}

    monkeypatch.setattr(bench_simulator, "measure", measure)
    monkeypatch.setenv("BENCH_SIMULATOR_LOADS", "1.2")
    monkeypatch.setenv("BENCH_SIMULATOR_DAYS", "30")
    monkeypatch.setenv("BENCH_SIMULATOR_BATCH", "")
    bench_simulator.run(Console(width=400))
    rows = [line for line in capsys.readouterr().out.splitlines() if "│  1.2" in line]
    pooled, standalone = rows
    assert "pooled + 8 standalone" in standalone and "missed (< 15 s)" in standalone
    assert "met" not in pooled and "missed" not in pooled
