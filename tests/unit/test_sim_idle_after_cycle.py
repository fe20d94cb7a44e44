"""Idle while waiting after one cycle (`scheduler.sim.idle_after_cycle`): what the daemon
exports as `fairpool_idle_gpus_while_pending`, worked out from a snapshot and the
engine's decisions, must be what the simulator's wait meter counts for the same state."""

from __future__ import annotations

import random

import pytest

from bench import bench_fairness
from policies.model import Policy
from scheduler.engine import schedule
from scheduler.engine.decisions import Decisions, Nomination
from scheduler.engine.snapshot import Snapshot
from scheduler.sim.cluster import build_nodes
from scheduler.sim.idle_after_cycle import idle_after_cycle
from scheduler.sim.simulator import SimulationResult, Simulator
from scheduler.sim.waiting import IDLE_CAUSES
from scheduler.traces.model import Trace
from tests.examples import examples
from tests.unit.engine_strategies import A100, H100, job, node, policy, running, snapshot
from tests.unit.test_sim_properties import make_case, scaled

POL = policy(["lab-a", "lab-b", "lab-o"])


def nonzero(idle: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {m: {c: g for c, g in causes.items() if g} for m, causes in idle.items()}


def decided(snap: Snapshot, pol: Policy = POL) -> dict[str, dict[str, int]]:
    return nonzero(idle_after_cycle(snap, schedule(snap, pol), pol))


def test_an_8_gpu_pod_blocked_by_its_owners_scattered_work_is_fragmentation() -> None:
    # lab-o runs 4 one-GPU pods on each of its two 8-GPU nodes, all within its
    # entitlement (never moved for another member): 8 free GPUs, no node with 8.
    run = [running(f"o{n}-{k}", "lab-o", f"o{n}") for n in (1, 2) for k in range(4)]
    snap = snapshot([node("o1", "lab-o"), node("o2", "lab-o")], [job("a-1", "lab-a", gpus=8)], run)
    decisions = schedule(snap, POL)
    assert decisions.binds == () and decisions.preemptions == ()
    assert nonzero(idle_after_cycle(snap, decisions, POL)) == {H100: {"fragmentation": 8}}


def test_the_cycles_binds_are_taken_as_done() -> None:
    # a2 is full: the 2-GPU job is bound on a1 this cycle, and the 2 x 8 gang waits for
    # more than the 6 GPUs left.
    snap = snapshot(
        [node("a1", "lab-a"), node("a2", "lab-a")],
        [job("small", "lab-a", gpus=2), job("gang", "lab-a", pods=2, gpus=8)],
        [running("full", "lab-a", "a2", gpus=8)],
    )
    decisions = schedule(snap, POL)
    assert [b.job_id for b in decisions.binds] == ["small"]
    assert nonzero(idle_after_cycle(snap, decisions, POL)) == {H100: {"too_few_free": 6}}


def test_every_cause_is_zero_when_nothing_waits() -> None:
    snap = snapshot([node("a1", "lab-a"), node("b1", "lab-b", model=A100)], [job("j", "lab-a")])
    idle = idle_after_cycle(snap, schedule(snap, POL), POL)
    assert idle == {H100: dict.fromkeys(IDLE_CAUSES, 0), A100: dict.fromkeys(IDLE_CAUSES, 0)}


def test_cordoned_and_unready_nodes_count_nowhere() -> None:
    nodes = [
        node("a1", "lab-a", gpus=4),
        node("a2", "lab-a", unschedulable=True),
        node("a3", "lab-a", ready=False),
        node("a4", "lab-a"),
    ]
    # 4 + 2 usable GPUs free: too few for the 8-GPU job, which a4 could take empty.
    snap = snapshot(nodes, [job("big", "lab-a", gpus=8)], [running("r", "lab-a", "a4", gpus=6)])
    assert decided(snap) == {H100: {"too_few_free": 6}}


def test_jobs_that_could_use_no_idle_gpu_are_not_waiting_work() -> None:
    nodes = [node("a1", "lab-a")]
    # A pod without GPUs (left waiting here), and one no node could ever take.
    gpu_less = snapshot(nodes, [job("cpu", "lab-a", gpus=0)])
    assert nonzero(idle_after_cycle(gpu_less, Decisions(), POL)) == {H100: {}}
    never = snapshot(nodes, [job("huge", "lab-a", gpus=16)])
    assert decided(never) == {H100: {}}


def test_a_gang_not_yet_whole_counts_at_its_full_size() -> None:
    # 1 of the gang's 2 pods exists: it cannot start, so the 8 free GPUs are too few
    # for it, not placeable.
    gang = job("g", "lab-a", pods=1, gpus=8, min_member=2)
    snap = snapshot([node("a1", "lab-a")], [gang])
    assert decided(snap) == {H100: {"too_few_free": 8}}


def test_a_nomination_holds_while_its_victims_leave_and_not_after() -> None:
    # lab-a's job holds a nomination on a1, whose lab-b pod is still terminating: the 4
    # GPUs free there are held even if this cycle did not renew the nomination.
    nodes = [node("a1", "lab-a")]
    waiting = job("a-1", "lab-a", gpus=8, nominated={"a-1-0": "a1"})
    leaving = running("b-0", "lab-b", "a1", gpus=4, terminating=True)
    snap = snapshot(nodes, [waiting], [leaving])
    not_renewed = Decisions()
    assert nonzero(idle_after_cycle(snap, not_renewed, POL)) == {H100: {"held": 4}}
    renewed = Decisions(nominations=(Nomination("a-1", {"a-1-0": "a1"}),))
    assert nonzero(idle_after_cycle(snap, renewed, POL)) == {H100: {"held": 4}}
    # Gone: the stale nomination no longer holds anything.
    gone = snapshot(nodes, [waiting], [running("b-0", "lab-b", "a1", gpus=4)])
    assert nonzero(idle_after_cycle(gone, not_renewed, POL)) == {H100: {"too_few_free": 4}}


def test_a_lending_limit_is_limits() -> None:
    # lab-a's own 2-GPU node is full; lab-o lends nothing.
    pol = policy({"lab-a": {}, "lab-o": {"lending_limit": 0}})
    nodes = [node("a1", "lab-a", gpus=2), node("o1", "lab-o")]
    snap = snapshot(nodes, [job("a-1", "lab-a", gpus=2)], [running("r", "lab-a", "a1", gpus=2)])
    assert decided(snap, pol) == {H100: {"limits": 8}}
    # lab-o lends up to 4 and lab-b borrows 4 there already: the 4 GPUs left are no
    # more lab-a's to borrow.
    pol = policy({"lab-a": {}, "lab-b": {}, "lab-o": {"lending_limit": 4}})
    run = [running("r", "lab-a", "a1", gpus=2), running("b", "lab-b", "o1", gpus=4)]
    snap = snapshot(nodes, [job("a-1", "lab-a", gpus=2)], run)
    assert decided(snap, pol) == {H100: {"limits": 4}}


def test_jobs_kept_off_wanted_nodes_are_their_own_cause() -> None:
    snap = snapshot([node("o1", "lab-o")], [job("a-1", "lab-a", gpus=2)])
    kept = Decisions(kept_off_wanted=frozenset({"a-1"}))
    assert nonzero(idle_after_cycle(snap, kept, POL)) == {H100: {"kept_off_wanted": 8}}
    # Another job of the same shape, not kept: placeable.
    two = snapshot(
        [node("o1", "lab-o")], [job("a-1", "lab-a", gpus=2), job("a-2", "lab-a", gpus=2)]
    )
    assert nonzero(idle_after_cycle(two, kept, POL)) == {H100: {"placeable": 8}}


def replayed(nodes: object, pol: Policy, trace: Trace) -> tuple[SimulationResult, dict[str, float]]:
    """The replay (a cycle at every instant something changes) and, per cause, the idle
    GPU-seconds `idle_after_cycle` gives when each cycle's reading holds until the next
    cycle (or the replay's end). In that mode the meter's state changes only at a cycle:
    pending work leaves the queue only by a bind, and an instant that changes anything
    while work is pending runs one."""
    readings: list[tuple[float, dict[str, dict[str, int]]]] = []

    def engine(snap: Snapshot, p: Policy) -> Decisions:
        decisions = schedule(snap, p)
        readings.append((snap.now, idle_after_cycle(snap, decisions, p)))
        return decisions

    result = Simulator(nodes, pol, trace, engine).run()  # type: ignore[arg-type]
    totals = dict.fromkeys(IDLE_CAUSES, 0.0)
    for k, (at, idle) in enumerate(readings):
        until = readings[k + 1][0] if k + 1 < len(readings) else result.end_time
        for causes in idle.values():
            for cause, gpus in causes.items():
                totals[cause] += gpus * (until - at)
    return result, totals


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_agrees_with_the_simulators_wait_meter_on_random_contended_cases(scale: float) -> None:
    differ = []
    for seed in range(examples(200)):
        case = scaled(make_case(random.Random(seed)), scale)
        result, totals = replayed(case.nodes, case.policy, case.trace)
        metered = result.idle_while_waiting_gpu_s
        if any(totals[c] != pytest.approx(metered[c], abs=1e-6) for c in IDLE_CAUSES):
            differ.append(f"seed {seed}: {totals} != {dict(metered)}")
    assert not differ, "\n".join(differ)


def test_agrees_with_the_simulators_wait_meter_on_two_days_of_the_philly_shaped_pool() -> None:
    inventory, pol, trace = bench_fairness.philly(2.0, 0)
    result, totals = replayed(build_nodes(inventory), pol, trace)
    metered = result.idle_while_waiting_gpu_s
    # The rule that keeps reclaimed work off wanted nodes and fragmentation both leave
    # GPUs idle there: the check is not on zeros.
    assert metered["kept_off_wanted"] > 0 and metered["fragmentation"] > 0
    assert totals == pytest.approx(dict(metered), abs=1e-3)
