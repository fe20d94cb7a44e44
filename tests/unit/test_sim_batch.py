"""The simulator's batched cycles (`Simulator(batch_s=...)`, `fairpool simulate
--batch-seconds`): a cycle waits `batch_s` after the first change for more, while every
event keeps its own time in the usage, the lost work and the timeline."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings

from policies.model import Policy
from scheduler.engine.cycle import schedule
from scheduler.engine.decisions import Decisions
from scheduler.engine.snapshot import Snapshot
from scheduler.sim.pipeline import build_study
from scheduler.sim.simulator import JobState, SimulationResult, Simulator
from scheduler.sim.waiting import State, WaitMeter
from tests.unit.test_sim_helpers import START, job, node, policy, trace
from tests.unit.test_sim_properties import Case, cases, check_no_overcommit, examples

NODES = (node("a-0", "a", 4), node("b-0", "b", 4))


def replay(pol: Policy, batch_s: float, *jobs: object) -> tuple[SimulationResult, list[float]]:
    """The result and the time of every engine cycle."""
    times: list[float] = []

    def engine(snapshot: Snapshot, p: Policy) -> Decisions:
        times.append(snapshot.now)
        return schedule(snapshot, p)

    result = Simulator(NODES, pol, trace(*jobs), engine, batch_s=batch_s).run()  # type: ignore[arg-type]
    return result, times


def test_borrowing_then_reclaim_batched_by_hand() -> None:
    # tests/unit/test_sim_scenarios.py's borrow-then-reclaim with 60 s batches: a1 and a2
    # arrive at 0 and start at 60; b1 arrives at 100, a2 is preempted at 160 and gone at
    # 190; b1 starts at 250 and ends at 750; a2 starts again at 810 and ends at 1810. a1
    # ends at 1060 and a2 at 1810 with nothing pending: no cycle follows either.
    result, times = replay(
        policy({"a": {}, "b": {}}),
        60.0,
        job("a1", "a", 0, 1000, 4),
        job("a2", "a", 0, 1000, 4),
        job("b1", "b", 100, 500, 4),
    )
    assert times == [60, 160, 250, 810]
    assert result.cycles == 4 and result.batch_s == 60
    a1, a2, b1 = (result.jobs[j] for j in ("a1", "a2", "b1"))
    assert all(r.state is JobState.DONE for r in (a1, a2, b1))
    assert (a1.first_start, a1.end) == (60, 1060)
    assert (a2.first_start, a2.preemptions, a2.end) == (60, 1, 1810)
    assert (b1.first_start, b1.end, b1.nodes) == (250, 750, ("b-0",))
    # a2 held b's node from 60 to 190, its grace period included, and restarts from zero.
    assert a2.lost_gpu_s == pytest.approx(4 * 130)
    assert result.end_time == 1810

    study = build_study(result.policy, START, result, None)
    s = study.summary
    assert s["simulation"]["batch_seconds"] == 60  # type: ignore[index]
    assert s["makespan_s"] == 1810
    # Idle while work waits, event by event, not only at the cycles: all 8 GPUs on
    # [0, 60); none on [100, 190) (a2 holds b's node through its grace period); b's
    # node on [190, 250) while b1 and a2 wait, and on [750, 810) after b1 ends.
    assert s["idle_while_waiting_gpu_h"] == pytest.approx(
        (8 * 60 + 4 * 60 + 4 * 60) / 3600, abs=1e-6
    )
    # The timeline shows b1's node freed at 750, not at the next cycle.
    rows = [r for r in result.timeline if r[1] == "b" and r[0] == 750]
    assert rows and rows[0][3] == 0


def test_a_job_submitted_as_its_batch_closes_starts_then() -> None:
    """x's arrival at 3,556 opens a batch that closes at 3,601, when j04 arrives: the
    cycle then sees j04, which starts at once, as in an exact replay (the property test
    above once found it and asserted a start strictly after the submission)."""
    result, times = replay(
        policy({"a": {}, "b": {}}), 45.0, job("x", "a", 3556, 100, 1), job("j04", "b", 3601, 30, 1)
    )
    assert times == [3601.0]
    assert {r.job.job_id: r.first_start for r in result.jobs.values()} == {
        "x": 3601.0,
        "j04": 3601.0,
    }


def test_zero_batch_is_the_exact_replay() -> None:
    jobs = (
        job("a1", "a", 0, 1000, 4),
        job("a2", "a", 0, 1000, 4),
        job("b1", "b", 100, 500, 4),
    )
    exact, exact_times = replay(policy({"a": {}, "b": {}}), 0.0, *jobs)
    default = Simulator(NODES, policy({"a": {}, "b": {}}), trace(*jobs)).run()  # type: ignore[arg-type]
    assert exact_times == [0, 100, 130, 630]
    assert exact.timeline == default.timeline and exact.pod_runs == default.pod_runs


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_batch_must_be_finite_and_not_negative(bad: float) -> None:
    with pytest.raises(ValueError, match="batch_s"):
        Simulator(NODES, policy(), trace(job("a1", "a", 0, 10, 1)), batch_s=bad)


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases)
def test_batched_invariants(case: Case) -> None:
    """Every job finishes, no node holds more than it has, jobs start only at cycles,
    and the timeline's allocation follows the pods' runs at every instant (frees between
    cycles included)."""
    batch_s = 45.0
    event_times = {j.submit_time for j in case.trace.jobs}
    times: list[float] = []

    def engine(snapshot: Snapshot, p: Policy) -> Decisions:
        times.append(snapshot.now)
        return schedule(snapshot, p)

    result = Simulator(case.nodes, case.policy, case.trace, engine, batch_s=batch_s).run()
    assert all(r.state is JobState.DONE for r in result.jobs.values()), str(case)
    check_no_overcommit(case, result)
    # Every cycle comes `batch_s` after the change that opened its batch: an arrival, a
    # pod gone (a completion, a grace period's end), a minimum runtime passed, or the
    # reclaim-limit window of a reclaimed job kept off wanted nodes ended (at
    # `maxReclaimsPerJob`, or restarting from zero; counted here from every preemption:
    # a superset).
    min_runtime = case.policy.sharing.min_runtime_seconds
    for run in result.pod_runs:
        event_times.update((run.end, run.start + min_runtime))
    window = case.policy.sharing.reclaim_limit_window_seconds
    event_times.update(v.time + window for v in result.victims)
    assert all(t - batch_s in event_times for t in times), (times, str(case))
    assert all(b - a >= batch_s for a, b in pairwise(times)), times
    cycle_times = set(times)
    for record in result.jobs.values():
        # At its submission at the earliest: a job submitted at the instant its batch
        # closes is in that cycle (`test_a_job_submitted_as_its_batch_closes_starts_then`).
        assert record.first_start in cycle_times and record.first_start >= record.job.submit_time
    model_of = {n.name: n.gpu_model for n in case.nodes}
    # Rows at one instant (a grace period of 0 s: preempted and gone at once): the last.
    last = {(t, member, model): allocated for t, member, model, allocated, *_ in result.timeline}
    for (t, member, model), allocated in last.items():
        held = sum(
            r.gpus
            for r in result.pod_runs
            if r.member == member and model_of[r.node] == model and r.start <= t < r.end
        )
        assert allocated == held, (t, member, model, str(case))


@settings(max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases)
def test_the_wait_meter_skips_only_instants_that_change_nothing_it_reads(case: Case) -> None:
    """The simulator tells its wait meter when an instant changes nothing the meter reads
    (`same_as`): a replay whose meter reads every instant measures exactly the same."""

    def figures(result: SimulationResult) -> tuple[object, ...]:
        return (
            result.idle_while_waiting_gpu_s,
            result.fragmentation_claimable_gpu_s,
            result.capacity_gpu_s_while_pending,
            result.entitlement_episodes,
            result.owed_past_allowance,
        )

    said = Simulator(case.nodes, case.policy, case.trace, schedule, batch_s=45.0).run()
    observe = WaitMeter.observe

    def every_instant(self: WaitMeter, now: float, state: State, same_as: object = None) -> None:
        observe(self, now, state)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(WaitMeter, "observe", every_instant)
        read = Simulator(case.nodes, case.policy, case.trace, schedule, batch_s=45.0).run()
    assert figures(said) == figures(read), str(case)
