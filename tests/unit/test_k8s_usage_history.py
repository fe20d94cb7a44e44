"""The daemon's usage history: its ConfigMap format and how it is advanced, read and
written (the ConfigMap itself is exercised on the real control plane in
tests/integration/test_daemon_usage.py)."""

from __future__ import annotations

import json
import math

import pytest

from policies.errors import InputError
from policies.loader import parse_policy
from policies.model import Policy
from scheduler.engine.decisions import Bind, Decisions
from scheduler.engine.snapshot import PendingJob, PendingPod, PodSpec, RunningPod, Snapshot
from scheduler.k8s.usage_history import (
    HISTORY_KEY,
    StoredHistory,
    StoreUnavailable,
    UsageKeeper,
    allocated_by_member,
    bound_by_member,
    decode,
    encode,
)

T0 = 1_790_000_000.0
HOUR = 3600.0


def policy(half_life: float | None = 1.0) -> Policy:
    sharing = f"\n    usageHalfLifeHours: {half_life}" if half_life is not None else ""
    return parse_policy(
        f"""
apiVersion: fairpool.io/v1
kind: Policy
metadata: {{name: t}}
spec:
  gpuModels: [{{name: H100, hourlyCost: "2.40"}}]
  members:
    - {{name: a, namespaces: [a]}}
    - {{name: b, namespaces: [b]}}
  sharing:
    reclaimGracePeriodSeconds: 30{sharing}
"""
    )


class MemoryStore:
    """Stands in for the ConfigMap: what was saved is what is loaded."""

    where = "memory"

    def __init__(self, stored: StoredHistory | None = None, down: bool = False) -> None:
        self.stored = stored
        self.down = down
        self.loads = 0

    def load(self) -> StoredHistory | None:
        self.loads += 1
        if self.down:
            raise StoreUnavailable("down")
        return self.stored

    def save(self, stored: StoredHistory) -> bool:
        self.stored = stored
        return True


def test_encode_then_decode_gives_the_history_back() -> None:
    stored = StoredHistory(T0 + 0.25, {"b": 12.5, "a": 1e6})
    data = encode(stored)
    assert json.loads(data[HISTORY_KEY])["validAt"] == "2026-09-21T14:13:20.250000Z"
    back = decode(data, "cm")
    assert back.valid_at == pytest.approx(T0 + 0.25, abs=1e-6)
    assert back.gpu_seconds == {"a": 1e6, "b": 12.5}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "no key"),
        ({"other": "x"}, "no key"),
        ({HISTORY_KEY: "{not json"}, "not JSON"),
        ({HISTORY_KEY: "[1, 2]"}, "must be an object"),
        ({HISTORY_KEY: '{"gpuSeconds": {}}'}, "validAt must be a time"),
        ({HISTORY_KEY: '{"validAt": "yesterday", "gpuSeconds": {}}'}, "validAt 'yesterday'"),
        ({HISTORY_KEY: '{"validAt": "2026-09-21T13:33:20.000000Z"}'}, "gpuSeconds must map"),
        (
            {HISTORY_KEY: '{"validAt": "2026-09-21T13:33:20.000000Z", "gpuSeconds": {"a": -1}}'},
            "gpuSeconds.a: -1",
        ),
        (
            {HISTORY_KEY: '{"validAt": "2026-09-21T13:33:20.000000Z", "gpuSeconds": {"a": "9"}}'},
            "gpuSeconds.a: '9'",
        ),
        (
            {HISTORY_KEY: '{"validAt": "2026-09-21T13:33:20.000000Z", "gpuSeconds": {"a": NaN}}'},
            "gpuSeconds.a: nan",
        ),
        (
            # Beyond any float: an OverflowError at every cycle, and no pod scheduled.
            {
                HISTORY_KEY: '{"validAt": "2026-09-21T13:33:20.000000Z", "gpuSeconds": {"a": 1'
                + "0" * 400
                + "}}"
            },
            "gpuSeconds.a: 1000",
        ),
    ],
)
def test_foreign_content_is_a_clear_error(data: dict[str, str] | None, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        decode(data, "ConfigMap ns/cm")
    assert str(info.value).startswith("ConfigMap ns/cm: ")


def test_the_stored_history_is_decayed_from_its_instant_to_now() -> None:
    # Stored 2 h ago with H = 1 h: 4000 -> 1000, and nothing added for the gap.
    store = MemoryStore(StoredHistory(T0 - 2 * HOUR, {"a": 4000.0}))
    keeper = UsageKeeper(store)  # type: ignore[arg-type]
    assert keeper.advance(policy(), T0) == {"a": pytest.approx(1000.0)}


def test_each_cycle_adds_what_was_held_since_the_previous_one() -> None:
    keeper = UsageKeeper(MemoryStore())  # type: ignore[arg-type]
    assert keeper.advance(policy(), T0) == {}
    keeper.held({"a": 4, "b": 0})
    got = keeper.advance(policy(), T0 + HOUR)
    assert got == {"a": pytest.approx(4 * HOUR / math.log(2) * 0.5)}
    keeper.held({})
    assert keeper.advance(policy(), T0 + 2 * HOUR)["a"] == pytest.approx(got["a"] / 2)


def test_the_leader_writes_at_most_every_write_seconds_and_when_forced() -> None:
    store = MemoryStore()
    keeper = UsageKeeper(store, write_seconds=30.0)  # type: ignore[arg-type]
    keeper.advance(policy(), T0)
    keeper.held({"a": 2})
    assert keeper.maybe_write(T0)
    keeper.advance(policy(), T0 + 10)
    assert not keeper.maybe_write(T0 + 10)
    assert keeper.maybe_write(T0 + 10, force=True)
    assert store.stored is not None and store.stored.valid_at == T0 + 10
    assert store.stored.gpu_seconds["a"] == pytest.approx(20.0, rel=1e-3)


def test_an_unreadable_store_is_never_overwritten_and_read_again_later() -> None:
    store = MemoryStore(StoredHistory(T0, {"a": 100.0}), down=True)
    keeper = UsageKeeper(store, retry_seconds=5.0)  # type: ignore[arg-type]
    keeper.held({"b": 1})
    assert keeper.advance(policy(), T0) == {}
    assert not keeper.maybe_write(T0, force=True)
    keeper.advance(policy(), T0 + 1)
    assert store.loads == 1  # not before the retry delay
    store.down = False
    assert keeper.advance(policy(), T0 + 5)["a"] == pytest.approx(100 * 0.5 ** (5 / HOUR))


def test_reload_replaces_the_own_history_with_the_stored_one() -> None:
    store = MemoryStore()
    keeper = UsageKeeper(store)  # type: ignore[arg-type]
    keeper.advance(policy(), T0)
    keeper.held({"b": 8})
    keeper.advance(policy(), T0 + 60)
    store.stored = StoredHistory(T0 + 60, {"a": 50.0})
    keeper.reload()
    assert keeper.advance(policy(), T0 + 60) == {"a": 50.0}


def test_without_a_half_life_nothing_is_kept_read_or_written() -> None:
    store = MemoryStore(StoredHistory(T0, {"a": 100.0}))
    keeper = UsageKeeper(store)  # type: ignore[arg-type]
    keeper.held({"a": 4})
    assert keeper.advance(policy(half_life=None), T0 + 100) == {}
    assert store.loads == 0 and not keeper.maybe_write(T0 + 100, force=True)
    # Switched on again: read anew, the old allocation is not integrated over the gap.
    assert keeper.advance(policy(), T0 + HOUR) == {"a": pytest.approx(50.0)}


@pytest.mark.parametrize("kept", ["in memory", "store down when switched on"])
def test_switched_on_again_nothing_is_counted_for_the_time_it_was_off(kept: str) -> None:
    store = MemoryStore(StoredHistory(T0, {})) if kept != "in memory" else None
    keeper = UsageKeeper(store)  # type: ignore[arg-type]
    keeper.advance(policy(), T0)
    keeper.held({"a": 1})
    keeper.advance(policy(half_life=None), T0 + 60)
    keeper.held({"a": 4})  # the daemon records every cycle's allocation, on or off
    if store is not None:
        store.down = True
    # 10 h later: 4 GPUs over those 10 h were counted (20,755 GPU-seconds).
    assert keeper.advance(policy(), T0 + 10 * HOUR) == {}
    keeper.held({"a": 4})
    got = keeper.advance(policy(), T0 + 10 * HOUR + 60)
    assert got == {"a": pytest.approx(4 * 60, rel=0.01)}


def test_allocation_counts_terminating_pods_and_this_cycles_binds() -> None:
    running = (
        RunningPod("u1", "p1", "a", "a", "u1", "n1", PodSpec(gpus=4)),
        RunningPod("u2", "p2", "b", "b", "u2", "n1", PodSpec(gpus=2), terminating=True),
        RunningPod("u3", "p3", "x", None, "u3", "n2", PodSpec(gpus=8)),
    )
    pending = (PendingJob("j", "b", (PendingPod("u4", "p4", "b", PodSpec(gpus=3)),)),)
    snapshot = Snapshot(T0, (), running, pending)
    decisions = Decisions(binds=(Bind("u4", "n2", "j", "b", None, True),))
    bound = bound_by_member(snapshot, decisions)
    assert bound == {"b": 3}
    assert allocated_by_member(snapshot, bound) == {"a": 4, "b": 5}


def test_in_memory_only_a_leadership_change_keeps_the_own_history() -> None:
    keeper = UsageKeeper(None)
    keeper.advance(policy(), T0)
    keeper.held({"a": 1})
    keeper.reload()
    got = keeper.advance(policy(), T0 + HOUR)
    assert got == {"a": pytest.approx(1800 / math.log(2))}
    assert not keeper.maybe_write(T0 + HOUR, force=True)


def test_the_half_life_is_stored_with_the_history_and_read_back() -> None:
    data = encode(StoredHistory(T0, {"a": 5.0}, 7 * 24 * HOUR))
    assert json.loads(data[HISTORY_KEY])["halfLifeSeconds"] == 7 * 24 * HOUR
    assert decode(data, "cm").half_life_s == 7 * 24 * HOUR
    # Written before it was kept: not known.
    assert decode(encode(StoredHistory(T0, {"a": 5.0})), "cm").half_life_s is None


@pytest.mark.parametrize("value", ["0", "-5", '"1h"', "true", "NaN", "1" + "0" * 400])
def test_a_stored_half_life_that_is_no_duration_is_a_clear_error(value: str) -> None:
    text = '{"validAt": "2026-09-21T13:33:20.000000Z", "halfLifeSeconds": %s, "gpuSeconds": {}}'
    with pytest.raises(InputError, match=r"cm: halfLifeSeconds: .* is not a number of seconds"):
        decode({HISTORY_KEY: text % value}, "cm")


def test_a_new_half_life_rescales_the_history_to_the_same_recent_mean() -> None:
    # 8 GPUs held for two days under a 1 h half-life: 8 x 1 h / ln 2 GPU-seconds, a
    # recent mean of 8 GPUs. Under 168 h the same number meant 0.05 GPUs, and weeks of
    # new use were needed to outweigh it; rescaled, it still means 8 GPUs.
    keeper = UsageKeeper(MemoryStore())  # type: ignore[arg-type]
    keeper.advance(policy(1.0), T0)
    keeper.held({"a": 8})
    before = keeper.advance(policy(1.0), T0 + 48 * HOUR)["a"]
    assert before * math.log(2) / HOUR == pytest.approx(8.0)
    after = keeper.advance(policy(168.0), T0 + 48 * HOUR)["a"]
    assert after * math.log(2) / (168 * HOUR) == pytest.approx(8.0)
    assert keeper.maybe_write(T0 + 48 * HOUR, force=True)
    assert keeper.store.stored.half_life_s == 168 * HOUR  # type: ignore[union-attr]


def test_a_history_stored_under_another_half_life_is_rescaled_when_read() -> None:
    store = MemoryStore(StoredHistory(T0, {"a": 4000.0}, 2 * HOUR))
    keeper = UsageKeeper(store)  # type: ignore[arg-type]
    assert keeper.advance(policy(1.0), T0) == {"a": pytest.approx(2000.0)}
    # Stored without its half-life (before it was kept): taken to be the policy's.
    keeper = UsageKeeper(MemoryStore(StoredHistory(T0, {"a": 4000.0})))  # type: ignore[arg-type]
    assert keeper.advance(policy(1.0), T0) == {"a": pytest.approx(4000.0)}
