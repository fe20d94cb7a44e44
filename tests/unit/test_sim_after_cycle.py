"""The wait meter's reading of one cycle (`scheduler.sim.after_cycle`): what the daemon
exports as `fairpool_idle_gpus_while_pending` and `fairpool_member_owed`, worked out
from a snapshot and the engine's decisions, must be what the simulator's wait meter
counts for the same state."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import pytest

from bench import bench_fairness
from policies.model import Policy
from scheduler.engine import schedule
from scheduler.engine.decisions import Bind, Decisions, Nomination, Preemption
from scheduler.engine.snapshot import RunningPod, Snapshot
from scheduler.k8s.exporter import OwedEpisodes
from scheduler.sim.after_cycle import Reading, read_cycle
from scheduler.sim.cluster import build_nodes
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
    return nonzero(read_cycle(snap, schedule(snap, pol), pol).idle)


def test_an_8_gpu_pod_blocked_by_its_owners_scattered_work_is_fragmentation() -> None:
    # lab-o runs 4 one-GPU pods on each of its two 8-GPU nodes, all within its
    # entitlement (never moved for another member): 8 free GPUs, no node with 8.
    run = [running(f"o{n}-{k}", "lab-o", f"o{n}") for n in (1, 2) for k in range(4)]
    snap = snapshot([node("o1", "lab-o"), node("o2", "lab-o")], [job("a-1", "lab-a", gpus=8)], run)
    decisions = schedule(snap, POL)
    assert decisions.binds == () and decisions.preemptions == ()
    assert nonzero(read_cycle(snap, decisions, POL).idle) == {H100: {"fragmentation": 8}}


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
    assert nonzero(read_cycle(snap, decisions, POL).idle) == {H100: {"too_few_free": 6}}


def test_every_cause_is_zero_when_nothing_waits() -> None:
    snap = snapshot([node("a1", "lab-a"), node("b1", "lab-b", model=A100)], [job("j", "lab-a")])
    idle = read_cycle(snap, schedule(snap, POL), POL).idle
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
    assert nonzero(read_cycle(gpu_less, Decisions(), POL).idle) == {H100: {}}
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
    assert nonzero(read_cycle(snap, not_renewed, POL).idle) == {H100: {"held": 4}}
    renewed = Decisions(nominations=(Nomination("a-1", {"a-1-0": "a1"}),))
    assert nonzero(read_cycle(snap, renewed, POL).idle) == {H100: {"held": 4}}
    # Gone: the stale nomination no longer holds anything.
    gone = snapshot(nodes, [waiting], [running("b-0", "lab-b", "a1", gpus=4)])
    assert nonzero(read_cycle(gone, not_renewed, POL).idle) == {H100: {"too_few_free": 4}}


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
    assert nonzero(read_cycle(snap, kept, POL).idle) == {H100: {"kept_off_wanted": 8}}
    # Another job of the same shape, not kept: placeable.
    two = snapshot(
        [node("o1", "lab-o")], [job("a-1", "lab-a", gpus=2), job("a-2", "lab-a", gpus=2)]
    )
    assert nonzero(read_cycle(two, kept, POL).idle) == {H100: {"placeable": 8}}


def test_an_owner_is_owed_what_only_pods_on_their_way_out_hold() -> None:
    # A pod of no member fills lab-a's node: nothing takes it back, so lab-a's 8-GPU job
    # is not owed; once it terminates (or the cycle preempts it) lab-a is owed the node.
    nodes = [node("a1", "lab-a")]
    waiting = [job("a-1", "lab-a", gpus=8)]
    other = running("x", None, "a1", gpus=8)
    stays = snapshot(nodes, waiting, [other])
    decisions = schedule(stays, POL)
    assert decisions.binds == () and decisions.preemptions == ()
    assert read_cycle(stays, decisions, POL).owed == frozenset()
    owed = frozenset({("lab-a", H100)})
    leaves = snapshot(nodes, waiting, [replace(other, terminating=True)])
    assert read_cycle(leaves, schedule(leaves, POL), POL).owed == owed
    preempts = Preemption("x", "x", None, "lab-a", "a-1", "", 30, "entitlement")
    preempted = Decisions(preemptions=(preempts,), shares=decisions.shares)
    assert read_cycle(stays, preempted, POL).owed == owed


def test_the_cycles_binds_fill_an_entitlement_after_the_pods_already_running() -> None:
    # lab-c bought 12 of lab-a's 16 GPUs: lab-a's entitlement is 4. a1 holds a pod of
    # no member and lab-a's r (within the 4, so never taken back); the cycle binds
    # lab-a's x on a2, after r in the fill order: beyond the entitlement, so lab-c could
    # take a2 back whole for its 8-GPU job, and is owed.
    pol = policy({"lab-a": {}, "lab-c": {"purchased": {H100: 12}}})
    run = [running("z", None, "a1", gpus=4), running("r", "lab-a", "a1", gpus=4, started_at=1.0)]
    snap = snapshot(
        [node("a1", "lab-a"), node("a2", "lab-a")],
        [job("x", "lab-a", gpus=4), job("c", "lab-c", gpus=8)],
        run,
    )
    shares = schedule(snap, pol).shares
    assert {(s.member, s.entitlement) for s in shares if s.gpu_model == H100} == {
        ("lab-a", 4),
        ("lab-c", 12),
    }
    bind = Bind("x-0", "a2", "x", "lab-a", "lab-a", False)
    reading = read_cycle(snap, Decisions(binds=(bind,), shares=shares), pol)
    assert reading.owed == frozenset({("lab-c", H100)})


@dataclass
class Replayed:
    """A replay with a cycle at every instant something changes, and what `read_cycle`
    gives when each cycle's reading holds until the next cycle (or the replay's end).
    In that mode the meter's state changes only at a cycle: pending work leaves the
    queue only by a bind, and an instant that changes anything while work is pending
    runs one."""

    result: SimulationResult
    idle_gpu_s: dict[str, float]
    """cause -> idle GPU-seconds."""
    owed_s: dict[tuple[str, str], float]
    """(member, model) -> seconds owed."""
    readings: list[tuple[float, Reading]]

    def metered_owed_s(self) -> dict[tuple[str, str], float]:
        """The meter's owed episodes, as seconds per (member, model)."""
        out: dict[tuple[str, str], float] = {}
        for member, model, start, end in self.result.entitlement_episodes:
            if end > start:
                out[(member, model)] = out.get((member, model), 0.0) + end - start
        return out

    def differences(self) -> list[str]:
        metered = self.result.idle_while_waiting_gpu_s
        out = [
            f"{c}: read {self.idle_gpu_s[c]} GPU-s, metered {metered[c]}"
            for c in IDLE_CAUSES
            if self.idle_gpu_s[c] != pytest.approx(metered[c], abs=1e-3)
        ]
        owed = self.metered_owed_s()
        out += [
            f"owed {key}: read {self.owed_s.get(key, 0.0)} s, metered {owed.get(key, 0.0)}"
            for key in sorted(owed.keys() | self.owed_s.keys())
            if self.owed_s.get(key, 0.0) != pytest.approx(owed.get(key, 0.0), abs=1e-6)
        ]
        return out + self.blocker_differences() + self.episode_differences()

    def episode_differences(self) -> list[str]:
        """The daemon's episodes (`OwedEpisodes` over every cycle's reading; those still
        open end with the replay) are the meter's."""
        episodes = OwedEpisodes()
        timed = []
        for at, reading in self.readings:
            timed += [(*key, at - lasted, at) for key, lasted in episodes.read(at, reading.owed)]
        end = self.result.end_time
        timed += [(*key, end - episodes.lasted(key, end), end) for key in episodes.since]
        metered = self.result.entitlement_episodes
        rounded = sorted((m, g, round(a, 6), round(b, 6)) for m, g, a, b in timed)
        if rounded == sorted((m, g, round(a, 6), round(b, 6)) for m, g, a, b in metered):
            return []
        return [f"episodes: read {sorted(timed)}, metered {sorted(metered)}"]

    def blocker_differences(self) -> list[str]:
        """Each owed episode past the allowance has the cause the meter gave it: the
        blocker of the last reading within its allowance (the meter's rule)."""
        out = []
        allowance = self.result.owed_allowance_s
        for member, model, start, _, cause in self.result.owed_past_allowance:
            within = [r for at, r in self.readings if start <= at <= start + allowance]
            read = within[-1].blockers.get((member, model)) if within else None
            if read != cause:
                out.append(f"owed {member} {model} from {start}: read {read}, metered {cause}")
        return out


def replayed(nodes: object, pol: Policy, trace: Trace) -> Replayed:
    readings: list[tuple[float, Reading]] = []

    def engine(snap: Snapshot, p: Policy) -> Decisions:
        decisions = schedule(snap, p)
        readings.append((snap.now, read_cycle(snap, decisions, p)))
        return decisions

    result = Simulator(nodes, pol, trace, engine).run()  # type: ignore[arg-type]
    idle = dict.fromkeys(IDLE_CAUSES, 0.0)
    owed: dict[tuple[str, str], float] = {}
    for k, (at, reading) in enumerate(readings):
        until = readings[k + 1][0] if k + 1 < len(readings) else result.end_time
        for causes in reading.idle.values():
            for cause, gpus in causes.items():
                idle[cause] += gpus * (until - at)
        for key in reading.owed:
            if until > at:
                owed[key] = owed.get(key, 0.0) + until - at
    return Replayed(result, idle, owed, readings)


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_agrees_with_the_simulators_wait_meter_on_random_contended_cases(scale: float) -> None:
    differ = []
    owed = 0
    causes: set[str] = set()
    for seed in range(examples(200)):
        case = scaled(make_case(random.Random(seed)), scale)
        replay = replayed(case.nodes, case.policy, case.trace)
        differ += [f"seed {seed}: {d}" for d in replay.differences()]
        owed += bool(replay.owed_s)
        causes |= {episode[4] for episode in replay.result.owed_past_allowance}
    assert not differ, "\n".join(differ)
    assert owed > 0 and causes  # not a check on empty readings


def test_agrees_with_the_simulators_wait_meter_on_four_days_of_the_philly_shaped_pool() -> None:
    inventory, pol, trace = bench_fairness.philly(4.0, 0)
    replay = replayed(build_nodes(inventory), pol, trace)
    metered = replay.result.idle_while_waiting_gpu_s
    # The rule that keeps reclaimed work off wanted nodes and fragmentation both leave
    # GPUs idle there, and owners wait for their entitlement, past the allowance behind a
    # job at the reclaim limit too: the check is not on zeros.
    assert metered["kept_off_wanted"] > 0 and metered["fragmentation"] > 0
    assert len(replay.metered_owed_s()) > 3
    assert "reclaim_limit" in {episode[4] for episode in replay.result.owed_past_allowance}
    assert replay.differences() == []


def test_an_owed_owner_is_told_what_holds_its_nodes() -> None:
    # lab-b borrows 4 of lab-a's GPUs while lab-a's 8-GPU job waits: what holds a1 is
    # what the simulator would give an episode past its allowance as its cause.
    nodes = [node("a1", "lab-a"), node("b1", "lab-b")]
    waiting = [job("a-1", "lab-a", gpus=8)]
    own = running("b-own", "lab-b", "b1", gpus=8, job_id="b-own")
    key = ("lab-a", H100)

    def blocker(
        run: list[RunningPod], decide: bool = False, refused: frozenset[str] = frozenset()
    ) -> str | None:
        snap = snapshot(nodes, waiting, run)
        decisions = schedule(snap, POL)
        if not decide:  # as if the cycle had not taken it back (yet)
            decisions = Decisions(shares=decisions.shares)
        reading = read_cycle(snap, decisions, POL, refused)
        assert reading.owed == frozenset({key})
        return reading.blockers.get(key)

    pod = running("b-1", "lab-b", "a1", gpus=4, job_id="b-1")
    assert blocker([own, pod]) == "borrowed"
    assert blocker([own, pod], decide=True) == "elsewhere"  # preempted: on its way out
    # ... unless a PodDisruptionBudget refuses its eviction (the daemon's evictor says so).
    assert blocker([own, pod], decide=True, refused=frozenset({"b-1"})) == "disruption_budget"
    # A refusal remembered for a pod the cycle does not preempt holds nothing.
    assert blocker([own, pod], refused=frozenset({"b-1"})) == "borrowed"
    spent = replace(pod, reclaims=3)  # maxReclaimsPerJob: never a victim again
    assert blocker([own, spent], decide=True) == "reclaim_limit"
    # The same job with a pod on lab-b's own node: 12 GPUs, more than lab-b's 8.
    gang = running("b-2", "lab-b", "b1", gpus=8, job_id="b-1", reclaims=3)
    assert blocker([spent, gang], decide=True) == "reclaim_limit_bigger"
    # lab-b within its entitlement (its own node holds a pod of no member): its pod on
    # a1 is never reclaimed for lab-a.
    other = running("z", None, "b1", gpus=8)
    assert blocker([other, pod], decide=True) == "others_entitlement"
    # Nobody owed: no blocker.
    assert read_cycle(snapshot(nodes, [], [pod]), Decisions(), POL).blockers == {}
