"""The usage history and lost-work arithmetic shared by the simulator and the daemon."""

from __future__ import annotations

import math

import pytest

from scheduler.engine.usage import advance_usage_history, lost_gpu_seconds

HOUR = 3600.0


def test_one_half_life_halves_the_past() -> None:
    # 1000 GPU-s, nothing held, one half-life later: 500.
    assert advance_usage_history({"a": 1000.0}, {}, HOUR, HOUR, ["a"]) == {"a": 500.0}


def test_a_constant_allocation_adds_its_decayed_integral() -> None:
    # 4 GPUs for one half-life (1 h) from nothing: the integral of 4 * 0.5 ** ((T - t)/H)
    # dt over [0, H] = 4 * H / ln 2 * (1 - 1/2) = 7200 / ln 2 = 10387.4 GPU-s (a plain
    # sum would say 14400; the early seconds count for less).
    got = advance_usage_history({}, {"a": 4}, HOUR, HOUR, ["a"])
    assert got == {"a": pytest.approx(7200 / math.log(2))}
    assert got["a"] == pytest.approx(10387.4, abs=0.1)


def test_past_and_present_add_up() -> None:
    # 1000 GPU-s decayed over two half-lives: 250; 1 GPU over 2 h with H = 1 h:
    # 3600 / ln 2 * (1 - 1/4) = 3895.3; total 4145.3.
    got = advance_usage_history({"b": 1000.0}, {"b": 1}, 2 * HOUR, HOUR, ["b"])
    assert got["b"] == pytest.approx(250 + 3600 / math.log(2) * 0.75)
    assert got["b"] == pytest.approx(4145.3, abs=0.1)


def test_advancing_in_steps_equals_advancing_at_once() -> None:
    # The decayed integral composes: two 30-minute steps give the 1-hour value.
    once = advance_usage_history({"a": 100.0}, {"a": 2}, HOUR, HOUR, ["a"])
    half = advance_usage_history({"a": 100.0}, {"a": 2}, HOUR / 2, HOUR, ["a"])
    twice = advance_usage_history(half, {"a": 2}, HOUR / 2, HOUR, ["a"])
    assert twice["a"] == pytest.approx(once["a"], rel=1e-12)


def test_short_steps_approach_the_undecayed_sum() -> None:
    # Over 10 s with a 1 h half-life, 8 GPUs add almost exactly 80 GPU-s.
    got = advance_usage_history({}, {"a": 8}, 10.0, HOUR, ["a"])
    assert 79.9 < got["a"] < 80.0


def test_members_outside_the_list_only_decay_and_zero_is_left_out() -> None:
    # "gone" left the policy: its entry decays but its pods add nothing; "idle" never
    # used anything and gets no entry; the input is not modified.
    before = {"gone": 800.0}
    got = advance_usage_history(before, {"gone": 4, "a": 1}, HOUR, HOUR, ["a", "idle"])
    assert got == {"gone": 400.0, "a": pytest.approx(1800 / math.log(2))}
    assert before == {"gone": 800.0}


def test_no_time_passed_changes_nothing() -> None:
    assert advance_usage_history({"a": 5.0}, {"a": 4}, 0.0, HOUR, ["a"]) == {"a": 5.0}
    assert advance_usage_history({"a": 5.0}, {"a": 4}, -3.0, HOUR, ["a"]) == {"a": 5.0}


def test_half_life_must_be_positive() -> None:
    with pytest.raises(ValueError, match="half_life_s"):
        advance_usage_history({}, {}, 1.0, 0.0, [])


def test_a_job_that_restarts_loses_everything_since_its_start() -> None:
    # 4 GPUs started at 100, preempted at 700, gone after a 30 s grace at 730.
    assert lost_gpu_seconds(4, 100.0, 730.0, checkpointable=False) == 4 * 630


def test_a_checkpointable_job_loses_nothing() -> None:
    # It resumes from its progress at the preemption; the grace period saves it.
    assert lost_gpu_seconds(4, 100.0, 730.0, checkpointable=True) == 0.0


def test_a_clock_behind_the_start_loses_nothing_rather_than_negative() -> None:
    assert lost_gpu_seconds(2, 100.0, 90.0, checkpointable=False) == 0.0
