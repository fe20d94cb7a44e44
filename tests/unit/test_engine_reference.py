"""The engine decides exactly what the reference engine (`tests/reference_engine`, the
cycle that walks the whole queue and every victim at every cycle) decides: on random
snapshots, on queues of many identical jobs, on the benchmark's clusters, and over whole
simulated replays, where the engine's caches carry over from cycle to cycle.

The reference engine has no consolidation (`scheduler/engine/consolidation.py`, tested on
its own in `test_engine_consolidation.py`): the engine runs here with
`maxConsolidationsPerCycle: 0`, so everything else is still compared decision for
decision.

One rule is the engine's own, not the reference's: a job's place within its member's
entitlement does not count the member's pods on others' nodes that started after the
job was submitted (`ordering.LateBorrowing`). Both engines are therefore compared on
snapshots whose pending jobs were all submitted after every running pod started (every
submission time moved later by the same amount, so queue order is unchanged), where
that rule changes nothing; tests/unit/test_engine_late_borrowing.py covers the rule."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.model import Policy
from scheduler.engine import schedule
from scheduler.engine.decisions import Decisions
from scheduler.engine.snapshot import Node, PendingJob, Snapshot
from scheduler.sim.simulator import SimulationResult, Simulator
from scheduler.traces.model import Trace, TraceJob
from tests.examples import examples
from tests.reference_engine import schedule as reference_schedule
from tests.unit import engine_strategies as es
from tests.unit.engine_strategies import (
    MEMBERS,
    policies,
    scenarios,
    snapshots,
    without_consolidation,
)
from tests.unit.test_sim_helpers import node as sim_node
from tests.unit.test_sim_helpers import policy as sim_policy

SETTINGS = settings(
    max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _submitted_last(snap: Snapshot) -> Snapshot:
    """The snapshot with every pending job submitted after every running pod started
    (see the module): the same shift for all, running jobs' submissions too, so queue
    order is unchanged."""
    shift = max((p.started_at for p in snap.running), default=0.0) + 1.0
    shift = max(0.0, shift - min((j.submitted_at for j in snap.pending), default=shift))
    pending = tuple(replace(j, submitted_at=j.submitted_at + shift) for j in snap.pending)
    running = tuple(replace(p, submitted_at=p.submitted_at + shift) for p in snap.running)
    return replace(snap, pending=pending, running=running)


def _same(snap: Snapshot, pol: Policy) -> None:
    snap = _submitted_last(snap)
    # Fresh tuples, so neither engine reuses what the other cached for these objects.
    expected = reference_schedule(replace(snap, nodes=tuple(snap.nodes)), pol)
    got = schedule(replace(snap, nodes=tuple(snap.nodes)), without_consolidation(pol))
    _equal(got, expected)


def _engine(snap: Snapshot, pol: Policy) -> Decisions:
    return schedule(_submitted_last(snap), pol)


def _reference(snap: Snapshot, pol: Policy) -> Decisions:
    return reference_schedule(_submitted_last(snap), pol)


def _equal(got: Decisions, expected: Decisions) -> None:
    assert got.binds == expected.binds
    assert got.preemptions == expected.preemptions
    assert got.nominations == expected.nominations
    assert got.explanations == expected.explanations
    assert got.shares == expected.shares


@SETTINGS
@given(scenarios())
def test_random_snapshots(scenario: tuple[Policy, Snapshot]) -> None:
    _same(scenario[1], scenario[0])


@st.composite
def crowded(draw: st.DrawFn) -> tuple[Policy, Snapshot]:
    """A random snapshot whose queue repeats each pending job many times: identical
    jobs of one member, decided together by the engine."""
    pol = draw(policies())
    snap = draw(snapshots(pol))
    copies = draw(st.integers(2, 12))
    pending: list[PendingJob] = []
    for k, job in enumerate(snap.pending):
        for c in range(copies):
            job_id = f"{job.job_id}-c{c}"
            pods = tuple(replace(p, uid=f"{p.uid}-c{c}", name=f"{p.name}-c{c}") for p in job.pods)
            submitted = job.submitted_at + draw(st.sampled_from([0.0, 0.0, 0.5 * c, 100.0]))
            pending.append(
                replace(
                    job,
                    job_id=job_id,
                    pods=pods,
                    submitted_at=submitted,
                    priority=job.priority if c % 3 else (k + c) % 3,
                    nominated_nodes={},
                )
            )
    return pol, replace(snap, pending=tuple(pending))


@SETTINGS
@given(crowded())
def test_crowded_queues(scenario: tuple[Policy, Snapshot]) -> None:
    _same(scenario[1], scenario[0])


@st.composite
def pod_groups(draw: st.DrawFn) -> tuple[Policy, Snapshot]:
    """A random snapshot where some pending jobs are PodGroups of 4 to 6 pods with a
    minMember of 2 or 3: when not all of their pods fit, they start with the most of
    their first pods that do (and reclaim makes room for minMember of them only)."""
    pol = draw(policies())
    snap = draw(snapshots(pol))
    pending: list[PendingJob] = []
    for job in snap.pending:
        if job.pods and draw(st.booleans()):
            first = job.pods[0]
            count = draw(st.integers(4, 6))
            pods = tuple(
                replace(first, uid=f"{first.uid}-g{c}", name=f"{first.name}-g{c}")
                for c in range(count)
            )
            job = replace(job, pods=pods, min_member=draw(st.integers(2, 3)), nominated_nodes={})
        pending.append(job)
    return pol, replace(snap, pending=tuple(pending))


@SETTINGS
@given(pod_groups())
def test_pod_groups_larger_than_their_min_member(scenario: tuple[Policy, Snapshot]) -> None:
    _same(scenario[1], scenario[0])


@st.composite
def contended(draw: st.DrawFn) -> tuple[Policy, Snapshot]:
    """Runs of identical jobs of several members on a cluster where some work borrows:
    reclaims preempt in the middle of the queue (so what was found when a job was queued
    no longer holds when it is taken), some copies were nominated (their holds are
    released when they are taken), some were reclaimed as often as the policy allows,
    some members restart reclaimed work from zero, some jobs and running pods say
    otherwise than their member (`checkpointable`), and some reclaims are more recent
    than the policy's window."""
    base = draw(policies())
    pol = base.model_copy(
        update={
            "spec": base.spec.model_copy(
                update={
                    "members": [
                        m.model_copy(update={"checkpointable": draw(st.booleans())})
                        for m in base.spec.members
                    ],
                    "sharing": base.spec.sharing.model_copy(
                        update={
                            "max_reclaims_per_job": draw(st.sampled_from([None, 0, 1, 2])),
                            "reclaim_limit_window_seconds": draw(st.sampled_from([0, 100])),
                        }
                    ),
                }
            )
        }
    )
    snap = draw(snapshots(pol))
    names = [n.name for n in snap.nodes]
    pending: list[PendingJob] = []
    for job in snap.pending:
        for c in range(draw(st.integers(1, 10))):
            job_id = f"{job.job_id}-c{c}"
            pods = tuple(replace(p, uid=f"{p.uid}-c{c}", name=f"{p.name}-c{c}") for p in job.pods)
            nominated = {}
            if draw(st.integers(0, 5)) == 0:
                nominated = {p.uid: draw(st.sampled_from(names)) for p in pods}
            pending.append(
                replace(
                    job,
                    job_id=job_id,
                    pods=pods,
                    submitted_at=job.submitted_at + 0.01 * c,
                    nominated_nodes=nominated,
                    reclaims=draw(st.sampled_from([0, 0, 0, 1, 2])),
                    reclaimed_at=draw(st.sampled_from([None, snap.now - 50, snap.now - 500])),
                    checkpointable=draw(st.sampled_from([None, None, True, False])),
                )
            )
    running = tuple(
        replace(p, checkpointable=draw(st.sampled_from([None, None, True, False])))
        for p in snap.running
    )
    return pol, replace(snap, pending=tuple(pending), running=running)


@SETTINGS
@given(contended())
def test_contended_queues(scenario: tuple[Policy, Snapshot]) -> None:
    _same(scenario[1], scenario[0])


def _bind_node(decisions: Decisions, job_id: str) -> str:
    return next(b.node for b in decisions.binds if b.job_id == job_id)


def test_queued_job_after_a_reclaim_of_its_member() -> None:
    """m-a borrows all of m-b's node; m-b's 8-GPU job reclaims it first (entitled
    demand goes first), which brings m-a back within its entitlement: its 1-GPU job,
    queued while m-a borrowed, is no longer cautious and packs onto m-c's node (whose
    owner wants it back, which only cautious work avoids)."""
    pol = es.policy(["m-a", "m-b", "m-c"], models=("H",), min_runtime_seconds=0)
    nodes = [
        es.node("na", "m-a", gpus=4, model="H"),
        es.node("nb", "m-b", gpus=8, model="H"),
        es.node("nc", "m-c", gpus=2, model="H"),
        es.node("nu", None, gpus=4, model="H"),
    ]
    run = [es.running(f"a{k}", "m-a", "nb", started_at=100.0) for k in range(8)]
    run += [es.running(f"c{k}", "m-c", "na", started_at=100.0) for k in range(4)]
    run += [es.running("c-own", "m-c", "nc", started_at=100.0)]
    run += [es.running("u", None, "nu", gpus=2, started_at=100.0)]
    pending = [es.job("b-big", "m-b", gpus=8, submitted_at=200.0)]
    pending += [es.job(f"a-small-{k}", "m-a", submitted_at=200.0 + k) for k in range(3)]
    snap = es.snapshot(nodes, pending, run)
    got = schedule(snap, without_consolidation(pol))
    assert {p.job_id for p in got.preemptions} == {f"a{k}" for k in range(8)}
    assert _bind_node(got, "a-small-0") == "nc"
    _same(snap, pol)


def test_nominated_job_released_hold() -> None:
    """A job's own hold counts against its member's entitlement while it is queued and
    no longer once released: it is then within the entitlement, not cautious, and packs
    onto the node its hold was on, though that node's owner wants it back."""
    pol = es.policy(["m-a", "m-b", "m-c"], models=("H",), min_runtime_seconds=0)
    nodes = [
        es.node("na", "m-a", gpus=2, model="H"),
        es.node("nc", "m-c", gpus=4, model="H"),
        es.node("nu", None, gpus=8, model="H"),
    ]
    run = [es.running(f"b{k}", "m-b", "na", started_at=100.0) for k in range(2)]
    run += [es.running(f"c{k}", "m-c", "nc", started_at=100.0) for k in range(2)]
    pending = [
        es.job("a-held", "m-a", gpus=2, submitted_at=200.0, nominated={"a-held-0": "nc"}),
        es.job("a-next", "m-a", gpus=2, submitted_at=201.0),
    ]
    snap = es.snapshot(nodes, pending, run)
    got = schedule(snap, without_consolidation(pol))
    assert _bind_node(got, "a-held") == "nc"
    _same(snap, pol)


def test_a_job_listed_twice_leaves_no_trace_in_the_next_cycle() -> None:
    """The engine reuses the last snapshot's queue order. A snapshot that lists one job
    twice must not stand in for the next one, where that job appears once beside a new
    one: each is queued once and both are placed, as the reference engine places them."""
    pol = es.policy(["m-a", "m-b"], models=("H",), min_runtime_seconds=0)
    nodes = [es.node("na", "m-a", gpus=4, model="H"), es.node("nb", "m-b", gpus=4, model="H")]
    known = es.job("a-known", "m-a", submitted_at=200.0)
    new = es.job("a-new", "m-a", submitted_at=201.0)
    schedule(es.snapshot(nodes, [known], []), pol)
    schedule(es.snapshot(nodes, [known, known], []), pol)
    snap = es.snapshot(nodes, [known, new], [])
    got = schedule(snap, without_consolidation(pol))
    assert sorted(b.job_id for b in got.binds) == ["a-known", "a-new"]
    _equal(got, reference_schedule(snap, pol))


def test_benchmark_clusters() -> None:
    from bench.bench_engine import _borrowed_everywhere, _jobs, _nodes, _policy

    pol = _policy()
    gangs = _jobs(60, 8, 1, "gang-small") + _jobs(12, 8, 8, "gang-big", offset=3)
    reclaimers = [j for j in _jobs(300, 1, 1, "reclaim") if j.member.endswith(("4", "5", "6"))]
    cases = [
        Snapshot(100_000.0, _nodes(50), (), tuple(_jobs(600, 1, 1, "single"))),
        Snapshot(100_000.0, _nodes(60), (), tuple(gangs)),
        Snapshot(100_000.0, _nodes(40), _borrowed_everywhere(_nodes(40)), tuple(reclaimers)),
    ]
    for snap in cases:
        _same(snap, pol)


def _trace(rng: random.Random, members: list[str], models: tuple[str, ...]) -> Trace:
    jobs = []
    for k in range(rng.randint(20, 70)):
        pods = rng.choice([1, 1, 1, 2, 4])
        jobs.append(
            TraceJob(
                job_id=f"j{k:03d}",
                org=rng.choice(members),
                submit_time=float(rng.randint(0, 4) * 300 + rng.choice([0, 0, 7])),
                duration_s=float(rng.choice([60, 600, 1800, 7200])),
                num_pods=pods,
                gpus_per_pod=rng.choice([1, 1, 2, 4]) if pods < 4 else 2,
                gpu_model=rng.choice([None, *models]) if len(models) > 1 else None,
                priority=rng.choice([0, 0, 1]),
            )
        )
    return Trace(tuple(jobs), 0.0)


def _contended_case(
    rng: random.Random, sharing: dict[str, object] | None = None, checkpointable: float = 0.3
) -> tuple[Policy, tuple[Node, ...], Trace]:
    """A random small pool (2 or 3 members, 1 or 2 models, 3 to 8 nodes) and a trace
    that keeps it busy."""
    members = list(MEMBERS[: rng.randint(2, 3)])
    models = ("G", "H")[: rng.randint(1, 2)]
    pol = sim_policy(
        {m: {"checkpointable": rng.random() < checkpointable} for m in members},
        models=models,
        grace=rng.choice([0, 30]),
        min_runtime=rng.choice([0, 600]),
        half_life=rng.choice([None, 24.0]),
        sharing=sharing,
    )
    nodes = tuple(
        sim_node(f"n{k}", rng.choice(members), rng.choice([2, 4, 8]), rng.choice(models))
        for k in range(rng.randint(3, 8))
    )
    return pol, nodes, _trace(rng, members, models)


def _assert_same_jobs(got: SimulationResult, expected: SimulationResult, seed: int) -> None:
    for job_id, record in expected.jobs.items():
        mine = got.jobs[job_id]
        assert (mine.state, mine.start, mine.end, mine.preemptions) == (
            record.state,
            record.start,
            record.end,
            record.preemptions,
        ), f"seed {seed}, job {job_id}"


def test_contended_replays() -> None:
    """Whole replays under contention: every cycle's decisions, hence every job's
    start and end, the same with both engines."""
    for seed in range(examples(12)):
        rng = random.Random(seed)
        pol, nodes, trace = _contended_case(rng)
        got = Simulator(nodes, without_consolidation(pol), trace, _engine).run()
        expected = Simulator(nodes, pol, trace, _reference).run()
        assert got.timeline == expected.timeline, f"seed {seed}"
        _assert_same_jobs(got, expected, seed)


def test_contended_replays_taking_back_from_overtaking_jobs() -> None:
    """The same with `reclaimOvertakenAfterSeconds` and mostly checkpointable members,
    where a member's waiting gang takes GPUs back from its own later, smaller jobs."""
    taken_back = 0
    for seed in range(examples(12)):
        rng = random.Random(1000 + seed)
        after = rng.choice([0, 3600])
        sharing = {"reclaimOvertakenAfterSeconds": after}
        pol, nodes, trace = _contended_case(rng, sharing, checkpointable=0.8)
        got = Simulator(nodes, without_consolidation(pol), trace, _engine).run()
        expected = Simulator(nodes, pol, trace, _reference).run()
        assert got.timeline == expected.timeline, f"seed {seed}"
        _assert_same_jobs(got, expected, seed)
        taken_back += sum(1 for v in got.victims if v.cause == "queue")
    assert taken_back > 0  # the rule was exercised, not only allowed


def _taking_back(pol: Policy, snap: Snapshot, after: int, submitted: float) -> None:
    """Both engines with `reclaimOvertakenAfterSeconds: after` and every running job
    checkpointable and submitted at `submitted`, shifted with the pending jobs by
    `_submitted_last` (-20,000, 5.5, 20,000: before, among or after their 0 to 11)."""
    sharing = pol.spec.sharing.model_copy(update={"reclaim_overtaken_after_seconds": after})
    pol = pol.model_copy(update={"spec": pol.spec.model_copy(update={"sharing": sharing})})
    running = tuple(replace(p, submitted_at=submitted, checkpointable=True) for p in snap.running)
    _same(replace(snap, running=running), pol)


@SETTINGS
@given(scenarios(), st.sampled_from([0, 95]), st.sampled_from([-20_000.0, 5.5, 20_000.0]))
def test_random_snapshots_taking_back_from_overtaking_jobs(
    scenario: tuple[Policy, Snapshot], after: int, submitted: float
) -> None:
    """Random snapshots with the rule on, where waiting jobs of 2 or more GPUs may take
    back what their member's smaller running jobs hold."""
    _taking_back(scenario[0], scenario[1], after, submitted)


@SETTINGS
@given(crowded(), st.sampled_from([0, 50, 95, 150]), st.sampled_from([-20_000.0, 5.5, 20_000.0]))
def test_crowded_queues_taking_back_from_overtaking_jobs(
    scenario: tuple[Policy, Snapshot], after: int, submitted: float
) -> None:
    """Queues of look-alike jobs with the rule on: a later job of one shape that has
    waited long enough (lower priority, submitted earlier) while the earlier one has not
    gets its own turn, as the reference gives every job."""
    _taking_back(scenario[0], scenario[1], after, submitted)


def _fresh(snap: Snapshot, pol: Policy) -> Decisions:
    """The engine on copies of every pod and job: none of its caches recognises them."""
    return schedule(
        replace(
            snap,
            nodes=tuple(snap.nodes),
            running=tuple(replace(p) for p in snap.running),
            pending=tuple(replace(j) for j in snap.pending),
        ),
        pol,
    )


def test_caches_change_no_decision_over_replays() -> None:
    """The engine reuses what it derived from the last snapshot's very objects (job
    information, queue order, allocation, pending demand): a replay that hands it the
    simulator's own objects decides every cycle as one that hands it copies."""
    for seed in range(examples(12)):
        rng = random.Random(1000 + seed)
        pol, nodes, trace = _contended_case(rng)
        got = Simulator(nodes, pol, trace, schedule).run()
        expected = Simulator(nodes, pol, trace, _fresh).run()
        assert got.timeline == expected.timeline, f"seed {seed}"
        assert got.cycles == expected.cycles, f"seed {seed}"
        _assert_same_jobs(got, expected, seed)
