"""Idle while waiting by cause and owed keys, on hand-built cluster states.

Two members a and b; a owns two 4-GPU nodes of model G (a-0, a-1), b one 8-GPU node of
model H (b-0)."""

from __future__ import annotations

from dataclasses import replace

from scheduler.sim.waiting import (
    Kept,
    Limits,
    Shape,
    State,
    WaitMeter,
    idle_by_cause,
    nodes_by_model,
    owed_keys,
)
from tests.unit.test_sim_helpers import node

NODE_LIST = (node("a-0", "a", 4, "G"), node("a-1", "a", 4, "G"), node("b-0", "b", 8, "H"))
NODES = nodes_by_model(NODE_LIST)
ENTITLEMENT = {("a", "G"): 8, ("b", "H"): 8, ("a", "H"): 0, ("b", "G"): 0}
NO_LIMITS = Limits(max_gpus={}, lending_limit={}, borrowing=True)


def state(
    free: dict[str, int],
    shapes: dict[Shape, int],
    nominated: dict[str, int] | None = None,
    allocated: dict[tuple[str, str], int] | None = None,
    lent: dict[str, int] | None = None,
) -> State:
    return State(
        free={"a-0": 0, "a-1": 0, "b-0": 0, **free},
        shapes=shapes,
        nominated=nominated or {},
        allocated=allocated or {},
        lent=lent or {},
    )


def causes(s: State, limits: Limits = NO_LIMITS) -> dict[str, int]:
    return {k: v for k, v in idle_by_cause(s, NODES, ENTITLEMENT, limits).items() if v}


def test_fragmentation_enough_in_total_no_node_fits() -> None:
    # 2 + 2 free G GPUs, a 4-GPU pod waits; it keeps a within its entitlement of 8.
    assert causes(state({"a-0": 2, "a-1": 2}, {("a", "G", 1, 4): 1})) == {
        "fragmentation": 4,
        "fragmentation_claimable": 4,
    }


def test_fragmentation_claimable_only_for_a_job_that_could_claim() -> None:
    # The same 2 + 2 free G GPUs and b's 4-GPU pod: b owns no G and holds 2 of them.
    free = {"a-0": 2, "a-1": 2}
    s = state(free, {("b", "G", 1, 4): 1}, allocated={("b", "G"): 2})
    assert causes(s) == {"fragmentation": 4}  # at its fair share of 2: nothing is moved
    assert causes(replace(s, fair={("b", "G"): 2.0})) == {"fragmentation": 4}
    below = causes(replace(s, fair={("b", "G"): 3.0}))
    assert below == {"fragmentation": 4, "fragmentation_claimable": 4}
    # a, already holding 6 of its 8, is beyond its entitlement with the pod.
    s = state(free, {("a", "G", 1, 4): 1}, allocated={("a", "G"): 6})
    assert causes(replace(s, fair={("a", "G"): 6.0})) == {"fragmentation": 4}


def test_too_few_free() -> None:
    # 3 free G GPUs, an 8-GPU gang of 2 x 4 waits.
    assert causes(state({"a-0": 3}, {("a", "G", 2, 4): 1})) == {"too_few_free": 3}


def test_other_model_when_no_waiting_job_can_use_it() -> None:
    # H GPUs free while only a G job waits; the G job fits nowhere (too few).
    s = state({"b-0": 8, "a-0": 1}, {("a", "G", 1, 4): 1})
    assert causes(s) == {"other_model": 8, "too_few_free": 1}


def test_any_model_job_counts_for_every_model() -> None:
    s = state({"b-0": 8}, {("a", None, 1, 4): 1})
    assert causes(s) == {"placeable": 8}


def test_held_by_a_nomination_only_up_to_what_it_asks() -> None:
    # a-0 has 4 free, 2 nominated to a pending 2-GPU pod (not yet bound: the rest of a
    # cycle); the other 2 free GPUs are placeable for it.
    s = state({"a-0": 4}, {("a", "G", 1, 2): 1}, nominated={"a-0": 2})
    assert causes(s) == {"held": 2, "placeable": 2}


def test_limits_max_gpus() -> None:
    limits = Limits(max_gpus={"a": 6}, lending_limit={}, borrowing=True)
    s = state({"a-0": 4}, {("a", "G", 1, 4): 1}, allocated={("a", "G"): 4})
    assert causes(s, limits) == {"limits": 4}
    assert causes(s) == {"placeable": 4}


def test_limits_lending_limit_of_the_owner() -> None:
    # b waits for 4 G GPUs on a's nodes; a lends at most 4 and already lends 2.
    limits = Limits(max_gpus={}, lending_limit={"a": 4}, borrowing=True)
    s = state({"a-0": 4}, {("b", "G", 1, 4): 1}, lent={"a": 2})
    assert causes(s, limits) == {"limits": 4}


def test_limits_borrowing_off() -> None:
    limits = Limits(max_gpus={}, lending_limit={}, borrowing=False)
    s = state({"a-0": 4}, {("b", "G", 1, 4): 1})
    assert causes(s, limits) == {"limits": 4}


def test_placeable_wins_over_fragmentation() -> None:
    # One job fits node by node (1 GPU), another is fragmented (4 GPUs over 2 + 2).
    s = state({"a-0": 2, "a-1": 2}, {("a", "G", 1, 4): 1, ("b", "G", 1, 1): 1})
    assert causes(s) == {"placeable": 4}


def test_kept_off_wanted_when_only_kept_jobs_fit() -> None:
    # b's 1 x 4 G job fits a-0's 4 free GPUs, but the last cycle kept it off a's nodes
    # (reclaimed before, a likely to want them back): the rule, not the engine's order,
    # leaves them idle. A job of another shape that fits makes them placeable again, and
    # one that does not fit changes nothing.
    kept = ("b", "G", 1, 4)
    s = replace(state({"a-0": 4}, {kept: 1}), kept_off_wanted=frozenset({kept}))
    assert causes(s) == {"kept_off_wanted": 4}
    assert causes(replace(s, shapes={kept: 1, ("a", "G", 1, 2): 1})) == {"placeable": 4}
    assert causes(replace(s, shapes={kept: 1, ("a", "G", 2, 4): 1})) == {"kept_off_wanted": 4}
    # An any-model job not kept fits too.
    assert causes(replace(s, shapes={kept: 1, ("a", None, 1, 1): 1})) == {"placeable": 4}


def test_kept_off_wanted_under_limits_comes_after_placeable_and_before_limits() -> None:
    # The same with a lending limit, where the meter looks job by job: a kept job that
    # fits and no limit stops wins over a job a limit stops, and loses to a placeable one.
    limits = Limits(max_gpus={}, lending_limit={"a": 8}, borrowing=True)
    kept = ("b", "G", 1, 4)
    s = replace(state({"a-0": 4}, {kept: 1}), kept_off_wanted=frozenset({kept}))
    assert causes(s, limits) == {"kept_off_wanted": 4}
    capped = Limits(max_gpus={"c": 0}, lending_limit={"a": 8}, borrowing=True)
    both = replace(s, shapes={("c", "G", 1, 4): 1, kept: 1})
    assert causes(both, capped) == {"kept_off_wanted": 4}
    assert causes(replace(both, kept_off_wanted=frozenset()), capped) == {"placeable": 4}
    # Kept but beyond what a may still lend: the limit is the cause.
    assert causes(replace(s, lent={"a": 6}), limits) == {"limits": 4}
    placeable = replace(s, shapes={kept: 1, ("a", "G", 1, 4): 1})
    assert causes(placeable, limits) == {"placeable": 4}


def test_owed_keys() -> None:
    fits = {("G", 1, 4): True, ("G", 2, 4): True, ("G", 2, 2): False, ("H", 1, 4): True}
    # a holds 4 of its 8 G: a 4-GPU job is owed, an 8-GPU gang is not (4 + 8 > 8).
    s = state({}, {("a", "G", 1, 4): 1}, allocated={("a", "G"): 4})
    assert owed_keys(s, ENTITLEMENT, ("G", "H"), fits) == {("a", "G")}
    s = state({}, {("a", "G", 2, 4): 1}, allocated={("a", "G"): 4})
    assert owed_keys(s, ENTITLEMENT, ("G", "H"), fits) == set()
    # A job that no empty node set could hold is never owed; any-model: per model.
    s = state({}, {("a", "G", 2, 2): 1, ("b", None, 1, 4): 1})
    assert owed_keys(s, ENTITLEMENT, ("G", "H"), fits) == {("b", "H")}


def test_owed_keys_leave_out_jobs_the_members_own_work_keeps_out() -> None:
    fits = {("G", 1, 4): True}
    owed = {("a", "G")}
    # a holds 2 of its 8 G, one 1-GPU pod on each of its 4-GPU nodes: no node has 4 free
    # and nothing but its own work stands in the way, so its 4-GPU job is not owed...
    s = state({"a-0": 3, "a-1": 3}, {("a", "G", 1, 4): 1}, allocated={("a", "G"): 2})
    assert owed_keys(s, ENTITLEMENT, ("G", "H"), fits) == owed  # the empty nodes fit it
    own_work = replace(s, kept=lambda: Kept(everyone={"a-0": 1, "a-1": 1}, own={}))
    assert owed_keys(own_work, ENTITLEMENT, ("G", "H"), fits, NODES) == set()
    # ...while b's borrowed pods in the same places keep a from what it is owed.
    s = state({"a-0": 3, "a-1": 3}, {("a", "G", 1, 4): 1}, allocated={("b", "G"): 2})
    borrowed = replace(s, kept=lambda: Kept(everyone={}, own={"b": {"a-0": 1, "a-1": 1}}))
    assert owed_keys(borrowed, ENTITLEMENT, ("G", "H"), fits, NODES) == owed
    # a's own pods that are not within its entitlement on its own nodes count as its own
    # work too: wherever they run, no one else keeps a from that job.
    s = state({"a-0": 3, "a-1": 3}, {("a", "G", 1, 4): 1}, allocated={("a", "G"): 2})
    elsewhere = replace(s, kept=lambda: Kept(everyone={}, own={"a": {"a-0": 1, "a-1": 1}}))
    assert owed_keys(elsewhere, ENTITLEMENT, ("G", "H"), fits, NODES) == set()


def test_an_episode_past_the_allowance_takes_the_cause_in_force_when_the_allowance_ends() -> None:
    # a's 4-GPU job is owed from t=0 to t=300; the allowance is 100 s. What holds a's nodes
    # is asked at every observation until the allowance ends: t=0 borrowed, t=50 at the
    # reclaim limit, not at t=200 (past it). The state from t=50 held at t=100, so its
    # cause is the episode's. The second episode (t=400) lasts 80 s: no cause.
    seen = iter(["borrowed", "reclaim_limit", "others_entitlement", "unasked"])
    meter = WaitMeter(
        NODE_LIST,
        ENTITLEMENT,
        NO_LIMITS,
        allowance_s=100.0,
        blocker=lambda member, model: next(seen),
    )
    owed = state({}, {("a", "G", 1, 4): 1})
    nothing = state({}, {})
    for now, s in ((0.0, owed), (50.0, owed), (200.0, owed), (300.0, nothing)):
        meter.observe(now, s)
    meter.observe(400.0, owed)
    meter.finish(480.0)
    assert meter.entitlement_episodes == [("a", "G", 0.0, 300.0), ("a", "G", 400.0, 480.0)]
    assert meter.owed_past_allowance == [("a", "G", 0.0, 300.0, "reclaim_limit")]
    assert next(seen) == "unasked"


def test_an_observation_said_to_be_the_same_keeps_the_last_figures() -> None:
    # The caller says the state at t=100 gives the figures of t=0's (same `same_as`): the
    # meter keeps t=0's rates (4 fragmented GPUs) and owed episode, whatever it is
    # handed; at t=200 another value makes it read the state again (nothing pending).
    fragmented = state({"a-0": 2, "a-1": 2}, {("a", "G", 1, 4): 1})
    meter = WaitMeter(NODE_LIST, ENTITLEMENT, NO_LIMITS)
    meter.observe(0.0, fragmented, same_as=("running", 1))
    meter.observe(100.0, state({}, {}), same_as=("running", 1))
    meter.observe(200.0, state({}, {}), same_as=("running", 2))
    meter.finish(300.0)
    assert meter.idle_gpu_s["fragmentation"] == 4 * 200.0
    assert meter.capacity_gpu_s_while_pending == 16 * 200.0
    assert meter.entitlement_episodes == [("a", "G", 0.0, 200.0)]
    # Unsaid (None), every observation is read.
    meter = WaitMeter(NODE_LIST, ENTITLEMENT, NO_LIMITS)
    meter.observe(0.0, fragmented)
    meter.observe(100.0, state({}, {}))
    meter.finish(300.0)
    assert meter.idle_gpu_s["fragmentation"] == 4 * 100.0


def test_the_meter_applies_a_lending_limit_with_its_shape_index() -> None:
    # As `test_limits_lending_limit_of_the_owner`, through the meter with a shapes version
    # (as the simulator observes): the index of shapes must not stand in for the limit.
    limits = Limits(max_gpus={}, lending_limit={"a": 4}, borrowing=True)
    meter = WaitMeter(NODE_LIST, ENTITLEMENT, limits)
    s = replace(state({"a-0": 4}, {("b", "G", 1, 4): 1}, lent={"a": 2}), shapes_version=1)
    meter.observe(0.0, s)
    meter.finish(10.0)
    assert meter.idle_gpu_s["limits"] == 4 * 10.0
    assert meter.idle_gpu_s["placeable"] == 0.0


def test_the_shape_index_is_rebuilt_when_the_shapes_version_changes() -> None:
    # t=0: a's 1 x 4 job fits a-0's 4 free GPUs (placeable). t=10: the same version, so
    # the same index (a state with other shapes but the same version would be a caller's
    # error; here the shapes are the same and a-0 is full: too few free elsewhere).
    # t=20: a new version with a 1-GPU job: placeable again on a-1's 1 free GPU.
    meter = WaitMeter(NODE_LIST, ENTITLEMENT, NO_LIMITS)
    big: dict[Shape, int] = {("a", "G", 1, 4): 1}
    meter.observe(0.0, replace(state({"a-0": 4}, big), shapes_version=1))
    meter.observe(10.0, replace(state({"a-1": 1}, big), shapes_version=1))
    small: dict[Shape, int] = {("a", "G", 1, 4): 1, ("a", "G", 1, 1): 1}
    meter.observe(20.0, replace(state({"a-1": 1}, small), shapes_version=2))
    meter.finish(30.0)
    assert meter.idle_gpu_s["placeable"] == 4 * 10.0 + 1 * 10.0
    assert meter.idle_gpu_s["too_few_free"] == 1 * 10.0
