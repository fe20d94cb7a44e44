"""The engine pauses Python's cyclic garbage collector while it decides
(`scheduler.engine.collector`): safe only because a cycle leaves no reference cycle, and
only if every pause gives the collector back as it found it."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from policies.inventory import load_inventory
from policies.loader import load_policy
from policies.model import Policy
from scheduler.cli.simulate import default_trace
from scheduler.engine import schedule
from scheduler.engine.collector import pause, resume
from scheduler.engine.decisions import Decisions
from scheduler.engine.snapshot import Snapshot
from scheduler.sim.cluster import build_nodes
from scheduler.sim.simulator import Simulator

DEFAULTS = Path(__file__).resolve().parents[2] / "policies" / "defaults"
"""The demo's cluster and policy."""


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def _contended_snapshots() -> tuple[Policy, list[Snapshot]]:
    """Every snapshot of two contended days of the demo (reclaim and consolidation in)."""
    inventory = load_inventory(f"{DEFAULTS}/cluster.yaml")
    policy = load_policy(f"{DEFAULTS}/policy.yaml")
    trace, _ = default_trace(inventory, policy, 2.0, 1.3, 5)
    kept: list[Snapshot] = []

    def engine(snapshot: Snapshot, policy: Policy) -> Decisions:
        kept.append(snapshot)
        return schedule(snapshot, policy)

    result = Simulator(build_nodes(inventory), policy, trace, engine).run()
    assert result.victims, "the replay should reclaim"
    return policy, kept


def test_cycles_leave_no_reference_cycle_to_collect(collector_on: None) -> None:
    policy, snapshots = _contended_snapshots()
    gc.collect()
    gc.disable()
    try:
        preempted = 0
        for snapshot in snapshots:
            decisions = schedule(snapshot, policy)
            assert len(decisions.explanations) >= 0  # written too
            preempted += len(decisions.preemptions)
        del decisions
        assert preempted > 0
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_the_collector_runs_again_after_a_cycle(collector_on: None) -> None:
    policy, snapshots = _contended_snapshots()
    decisions = schedule(snapshots[-1], policy)
    assert gc.isenabled()
    dict(decisions.explanations)
    assert gc.isenabled()


def test_a_collector_the_caller_turned_off_stays_off(collector_on: None) -> None:
    gc.disable()
    pause()
    assert not gc.isenabled()
    resume()
    assert not gc.isenabled()


def test_pauses_nest_and_the_last_one_out_resumes(collector_on: None) -> None:
    pause()
    pause()
    assert not gc.isenabled()
    resume()
    assert not gc.isenabled()  # the outer pause still holds
    resume()
    assert gc.isenabled()


def test_pauses_from_threads_overlap(collector_on: None) -> None:
    inside, leave = threading.Event(), threading.Event()

    def long_pause() -> None:
        pause()
        inside.set()
        leave.wait(10)
        resume()

    other = threading.Thread(target=long_pause)
    other.start()
    assert inside.wait(10)
    pause()
    resume()
    assert not gc.isenabled()  # the other thread's pause is not over
    leave.set()
    other.join(10)
    assert gc.isenabled()


def test_a_cycle_that_fails_resumes_the_collector(collector_on: None) -> None:
    policy, snapshots = _contended_snapshots()
    broken = replace(snapshots[-1], pending=(None,))  # type: ignore[arg-type]
    with pytest.raises((AttributeError, TypeError)):  # interpreted, compiled
        schedule(broken, policy)
    assert gc.isenabled()
