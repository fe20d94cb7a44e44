"""Properties of the simulator over random small clusters, policies and traces.

Invariants (hypothesis): every job of a finite trace completes when every job fits;
no node is ever over-committed; gangs start whole; a member at or below its
entitlement is never preempted; two runs give byte-identical summary.json.

Sharing incentive (docs/metrics.md, "worse off pooled"): over 200 fixed seeded random
cases built for contention (the first member fills the cluster early and borrows, the
others arrive later wanting their own nodes back), no member is worse off pooled than
standalone on the same jobs: the pooled mean JCT of the jobs that also completed
standalone is within max(5 %, 1 h) of their standalone mean in at least 99 % of the
cases, and every member's own work completed within the submission window pooled is at
least its standalone work in every case. Failing cases are printed (run with -s). The
jobs here run 30 s to 2 h, so the 1 h allowance is generous for the short ones;
`python -m bench fairness` also runs the same cases with every time ten times longer,
where it is not, and prints that rate too.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.model import Policy
from scheduler.engine.snapshot import Node
from scheduler.sim.metrics import work_done_by, worse_off_pooled
from scheduler.sim.never import fits
from scheduler.sim.outputs import summary_json
from scheduler.sim.pipeline import build_study
from scheduler.sim.simulator import JobState, SimulationResult, Simulator
from scheduler.sim.standalone import replay_all
from scheduler.traces.model import Trace, TraceJob
from tests.examples import examples
from tests.unit.test_sim_helpers import START, node, policy

MODELS = ("G", "H")
MEMBERS = ("a", "b", "c")


@dataclass(frozen=True)
class Case:
    policy: Policy
    nodes: tuple[Node, ...]
    trace: Trace

    def __str__(self) -> str:
        nodes = ", ".join(f"{n.name}({n.owner},{n.gpus}{n.gpu_model})" for n in self.nodes)
        jobs = ", ".join(
            f"{j.job_id}:{j.org}@{j.submit_time:g}+{j.duration_s:g}s {j.num_pods}x{j.gpus_per_pod}"
            f"{j.gpu_model}"
            for j in self.trace.jobs
        )
        sharing = self.policy.sharing
        return (
            f"nodes [{nodes}] grace={sharing.reclaim_grace_period_seconds} "
            f"min_runtime={sharing.min_runtime_seconds} jobs [{jobs}]"
        )


def make_case(rng: random.Random) -> Case:
    members = list(MEMBERS[: rng.randint(2, 3)])
    models = MODELS[: rng.randint(1, 2)]
    nodes: list[Node] = []
    for member in members:
        for k in range(rng.randint(1, 2)):
            nodes.append(node(f"{member}-{k}", member, rng.choice([2, 4, 8]), rng.choice(models)))
    options = {
        m: {"weight": rng.choice([1.0, 2.0]), "checkpointable": rng.random() < 0.3} for m in members
    }
    pol = policy(
        options,
        models=models,
        grace=rng.choice([0, 30]),
        min_runtime=rng.choice([0, 600]),
        half_life=rng.choice([None, 1.0]),
    )
    jobs: list[TraceJob] = []
    present = sorted({n.gpu_model or "" for n in nodes})
    for i in range(rng.randint(1, 12)):
        early = rng.random() < 0.5
        org = members[0] if early else rng.choice(members[1:])
        # Mostly the model of the member's own nodes, so that reclaim has a reason.
        own = sorted({n.gpu_model or "" for n in nodes if n.owner == org})
        model = rng.choice(own if rng.random() < 0.8 else present)
        widest = max(n.gpus for n in nodes if n.gpu_model == model)
        per_pod = rng.choice([g for g in (1, 2, 4, 8) if g <= widest])
        # Half the jobs: the first member fills the cluster early (it borrows); the
        # rest: other members arrive later and want their nodes back (reclaim).
        job = TraceJob(
            job_id=f"j{i:02d}",
            org=org,
            submit_time=float(
                (0 if early else rng.choice([60, 300, 1000, 3600])) + rng.randint(0, 5)
            ),
            duration_s=float(rng.choice([1800, 7200] if early else [30, 300, 1800, 7200])),
            num_pods=rng.choice([1, 1, 1, 2]),
            gpus_per_pod=per_pod,
            gpu_model=model,
            priority=rng.choice([0, 0, 1]),
        )
        if fits(job, nodes):
            jobs.append(job)
    jobs.sort(key=lambda j: (j.submit_time, j.job_id))
    return Case(pol, tuple(nodes), Trace(tuple(jobs)))


cases = st.randoms(use_true_random=False).map(make_case)


def check_no_overcommit(case: Case, result: SimulationResult) -> None:
    capacity = {n.name: n.gpus for n in case.nodes}
    changes: dict[str, list[tuple[float, int]]] = {}
    for run in result.pod_runs:
        assert run.end >= run.start, run
        if run.end == run.start:
            # Bound and preempted at one instant (no minimum runtime, no grace period):
            # it never held its GPUs.
            continue
        changes.setdefault(run.node, []).extend([(run.start, run.gpus), (run.end, -run.gpus)])
    for name, steps in changes.items():
        held = 0
        # At one instant, pods leaving free their GPUs before new ones take them.
        for _, delta in sorted(steps, key=lambda s: (s[0], s[1])):
            held += delta
            assert 0 <= held <= capacity[name], f"node {name} holds {held} GPUs"


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases)
def test_invariants(case: Case) -> None:
    result = Simulator(case.nodes, case.policy, case.trace).run()
    assert not result.unfinished(), [r.job.job_id for r in result.unfinished()]
    assert all(r.state is JobState.DONE for r in result.jobs.values())
    check_no_overcommit(case, result)
    # A member at or below its entitlement is never preempted by reclaim (consolidation
    # moves work that fits elsewhere: test_engine_properties checks whose).
    for victim in result.victims:
        assert victim.cause == "consolidation" or victim.allocated > victim.entitlement, victim
    # Gangs start whole: every attempt's pods start and end together.
    attempts: dict[tuple[str, float], set[float]] = {}
    for run in result.pod_runs:
        attempts.setdefault((run.job_id, run.start), set()).add(run.end)
    for (job_id, _), ends in attempts.items():
        assert len(ends) == 1, job_id
    runs_per_job: dict[str, int] = {}
    for run in result.pod_runs:
        runs_per_job[run.job_id] = runs_per_job.get(run.job_id, 0) + 1
    for record in result.jobs.values():
        # A job that finishes within its grace period completes: its last preemption
        # starts no new run (its preemption time is then never cleared).
        restarts = record.preemptions - (record.preempted_at is not None)
        assert runs_per_job[record.job.job_id] == record.job.num_pods * (restarts + 1)
        assert record.end is not None and record.first_start is not None
        assert record.end - record.job.submit_time >= record.job.duration_s - 1e-6


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases)
def test_determinism(case: Case) -> None:
    def once() -> str:
        result = Simulator(case.nodes, case.policy, case.trace).run()
        alone = replay_all(case.nodes, case.policy, case.trace, list(result.members))
        return summary_json(build_study(case.policy, START, result, alone))

    assert once() == once()


SHARING_CASES = 200
MAX_JCT_FAILURE_RATE = 0.01


@dataclass(frozen=True)
class IncentiveCheck:
    """One case's sharing-incentive failures: members whose pooled mean JCT of the same
    jobs exceeds the bound, and members whose work done within the window is less."""

    jct: list[str]
    work: list[str]


def sharing_incentive(case: Case) -> IncentiveCheck:
    result = Simulator(case.nodes, case.policy, case.trace).run()
    alone = replay_all(case.nodes, case.policy, case.trace, list(result.members))
    window_end = max((j.submit_time for j in case.trace.jobs), default=0.0)
    jct: list[str] = []
    work: list[str] = []
    for member, own in sorted(alone.items()):
        mine = [j for j in case.trace.jobs if j.org == member]
        if own.jct_s:
            pooled_mean = mean_of([_jct(result, j) for j in own.jct_s])
            standalone_mean = mean_of(list(own.jct_s.values()))
            if worse_off_pooled(pooled_mean, standalone_mean, 0.0):
                jct.append(
                    f"{member}: pooled mean JCT {pooled_mean:.0f} s > standalone "
                    f"{standalone_mean:.0f} s"
                )
        gpus = [j.num_pods * j.gpus_per_pod for j in mine]
        durations = [j.duration_s for j in mine]
        pooled_end = [_end(result.jobs[j.job_id].end) for j in mine]
        standalone_end = [
            j.submit_time + own.jct_s[j.job_id] if j.job_id in own.jct_s else math.nan for j in mine
        ]
        pooled_work = work_done_by(gpus, durations, pooled_end, window_end)
        standalone_work = work_done_by(gpus, durations, standalone_end, window_end)
        if pooled_work < standalone_work - 1e-6:
            work.append(
                f"{member}: work done within the window pooled {pooled_work:.0f} GPU-s "
                f"< standalone {standalone_work:.0f} GPU-s"
            )
    return IncentiveCheck(jct, work)


def _jct(result: SimulationResult, job_id: str) -> float:
    """Pooled JCT; infinite for a job that never ended (so the member fails)."""
    record = result.jobs[job_id]
    return math.inf if record.end is None else record.end - record.job.submit_time


def _end(end: float | None) -> float:
    return math.nan if end is None else end


def mean_of(values: list[float]) -> float:
    return sum(values) / len(values)


def incentive_failures(cases: int, scale: float = 1.0) -> tuple[list[str], list[str]]:
    """Printed failing cases (JCT, work) over the first `cases` seeds, every time of the
    trace multiplied by `scale`."""
    jct: list[str] = []
    work: list[str] = []
    for seed in range(cases):
        case = scaled(make_case(random.Random(seed)), scale)
        found = sharing_incentive(case)
        if found.jct:
            jct.append(f"seed {seed}: {'; '.join(found.jct)}\n    {case}")
        if found.work:
            work.append(f"seed {seed}: {'; '.join(found.work)}\n    {case}")
    return jct, work


def scaled(case: Case, scale: float) -> Case:
    if scale == 1.0:
        return case
    jobs = tuple(
        replace(j, submit_time=j.submit_time * scale, duration_s=j.duration_s * scale)
        for j in case.trace.jobs
    )
    return replace(case, trace=Trace(jobs))


def test_sharing_incentive_holds() -> None:
    jct, work = incentive_failures(SHARING_CASES)
    print(f"\nmean JCT worse pooled in {len(jct)}/{SHARING_CASES} cases:")
    for line in jct:
        print("  " + line)
    print(f"work within the window less pooled in {len(work)}/{SHARING_CASES} cases:")
    for line in work:
        print("  " + line)
    assert not work, "\n".join(work)
    assert len(jct) <= MAX_JCT_FAILURE_RATE * SHARING_CASES, "\n".join(jct)
