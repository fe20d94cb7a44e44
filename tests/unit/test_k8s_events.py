"""Kubernetes Events: levels choose what is posted; events wait while binds are in flight."""

from __future__ import annotations

import threading
import time

import pytest

from scheduler.k8s.events import EventRecorder, ObjectRef, fitted
from tests.unit.test_k8s_effects import _unreachable

REF = ObjectRef("Pod", "ns", "p", "u1")


def queued(recorder: EventRecorder) -> int:
    with recorder._lock:
        return recorder._queued


def test_levels_choose_what_is_posted() -> None:
    for level, normal, warning in (("all", 1, 1), ("warnings", 0, 1), ("none", 0, 0)):
        busy = threading.Event()
        busy.set()  # hold every event in its queue so that it can be counted
        recorder = EventRecorder(_unreachable(), level=level, busy=busy.is_set)
        try:
            recorder.record(REF, "Normal", "Scheduled", "bound")
            assert queued(recorder) == normal, level
            sent = recorder.failed_scheduling(REF, "no room", now=0.0)
            assert sent == bool(warning) and queued(recorder) == normal + warning, level
        finally:
            busy.clear()
            recorder.flush(5)
            recorder.close()
        assert recorder.dropped == 0


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="events: expected one of all, warnings, none"):
        EventRecorder(_unreachable(), level="some")  # type: ignore[arg-type]


def test_events_wait_while_binds_are_in_flight() -> None:
    binding = threading.Event()
    binding.set()
    recorder = EventRecorder(_unreachable(), busy=binding.is_set, defer_seconds=30)
    try:
        recorder.record(REF, "Normal", "Scheduled", "bound")
        time.sleep(0.3)
        assert queued(recorder) == 1, "held while binds are in flight"
        binding.clear()
        recorder.flush(5)
        assert queued(recorder) == 0, "posted (here: attempted) once the binds are done"
    finally:
        recorder.close()


def test_events_wait_no_longer_than_defer_seconds() -> None:
    recorder = EventRecorder(_unreachable(), busy=lambda: True, defer_seconds=0.2)
    try:
        started = time.monotonic()
        recorder.record(REF, "Normal", "Scheduled", "bound")
        recorder.flush(5)
        assert queued(recorder) == 0 and 0.15 < time.monotonic() - started < 4
    finally:
        recorder.close()


def test_a_cycle_with_nothing_to_place_waits_for_the_binds_in_flight() -> None:
    from policies.loader import load_policy
    from scheduler.k8s.daemon import QUIET_CYCLES, Daemon, DaemonConfig

    daemon = Daemon(_unreachable(), load_policy(), DaemonConfig(cycle_seconds=1.0))
    try:
        daemon._last_cycle = 100.0
        assert not daemon._worth_a_cycle(100.5), "within cycle_seconds"
        assert daemon._worth_a_cycle(101.5), "the periodic cycle"
        daemon.binder._in_flight.add("u1")
        assert not daemon._worth_a_cycle(101.5), "waits for the binds in flight"
        assert daemon._worth_a_cycle(100.0 + QUIET_CYCLES), "but not for ever"
        daemon._policy_changed = True
        assert daemon._worth_a_cycle(100.1), "a new policy is decided on at once"
        assert daemon.published().version == 0 and daemon.snapshot().nodes == ()
    finally:
        daemon.binder.close()
        daemon.recorder.close()


def test_a_long_message_is_cut_at_a_clause_and_says_where_the_rest_is() -> None:
    clauses = [f"clause {k} " + "x" * 90 for k in range(12)]
    message = "; ".join(clauses)
    assert len(message) > 1024
    got = fitted(message, REF)
    assert len(got) <= 1024
    assert got.endswith("; … (the whole sentence: fairpool explain ns/p)")
    kept = got.removesuffix("; … (the whole sentence: fairpool explain ns/p)")
    assert message.startswith(kept) and kept.split("; ") == clauses[: len(kept.split("; "))]
    # Short messages, and other objects' long ones, stay whole or end in an ellipsis.
    assert fitted("no room", REF) == "no room"
    policy = ObjectRef("Policy", "", "fairpool")
    cut = fitted(message, policy)
    assert len(cut) <= 1024 and cut.endswith(" …")
    # No clause boundary in reach: cut at a word, and a word longer than that is cut.
    assert fitted("word " * 300, REF).startswith("word word")
    assert len(fitted("y" * 3000, REF)) == 1024
