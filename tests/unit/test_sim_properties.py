"""Properties of the simulator over random small clusters, policies and traces.

Invariants (hypothesis): every job of a finite trace completes when every job fits;
no node is ever over-committed; gangs start whole; a member at or below its
entitlement is never preempted; two runs give byte-identical summary.json.

Sharing incentive (docs/metrics.md): no member's mean JCT pooled should be worse than
standalone. It is measured over 200 fixed seeded random cases built for contention
(the first member fills the cluster early and borrows, the others arrive later wanting
their own nodes), comparing like with like (the pooled JCT of the jobs that also
completed standalone), with a tolerance of 10 % plus the grace period. It does NOT hold
in every case; the failing cases are printed (run with -s). Measured with the engine
of commit 79a2353: 43 of 200 cases (21.5 %) failed. Causes seen replaying them by hand,
and what the engine does about them since (commits c4d501d..5d184b6):
- Fair share by count (seed 58): a (2 GPUs) borrows both of b's 4-GPU nodes with two
  4-GPU jobs; b submits a 2-GPU job. By count a holds exactly its fair share (8 on 10),
  so the fair-share reclaim found no victim, and b waited for a's job to end although
  it was below its entitlement. Now a job that keeps its member within its entitlement
  may reclaim any borrowed pods of others (down to the victim member's entitlement),
  members furthest above their fair share first, so b gets a node back (also seeds 7,
  13, 62, 69, 76, 93, 119, 135, 144, 150, 158, 176, 185 pass now).
- Ties in ordering: two members submit at the same instant with equal
  allocated/fair-share ratios; the one without entitlement on that model could be
  served first and borrow the other's node. Now entitled demand goes first.
- Still failing, pod granularity (seed 18, the clearest): a (6 GPUs: 4 + 2) runs a
  4-GPU job on its own node and another on b's only 4-GPU node; b (6 GPUs: 2 + 4)
  submits a 4-GPU job. 2 + 2 GPUs are free on two nodes. a's pod on b's node is
  borrowed (a holds 8 of 6), but preempting it would take a to 4, below its
  entitlement, which reclaim never does; b waits ~1800 s instead of 300 s.
- Also still failing: min runtime (600 s) before a borrowed pod may be reclaimed;
  short jobs (30-300 s standalone) make any such wait large in relative terms.
Measured after those changes: 29 of 200 cases (14.5 %) fail. The bound asserted
(`MAX_FAILURE_RATE`, 15 %) is that rate rounded up; an engine or accounting change that
makes pooling worse shows up as a higher rate.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.model import Policy
from scheduler.engine.snapshot import Node
from scheduler.sim.outputs import summary_json
from scheduler.sim.pipeline import build_study
from scheduler.sim.simulator import JobState, SimulationResult, Simulator
from scheduler.sim.standalone import fits, replay_all
from scheduler.traces.model import Trace, TraceJob
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
        changes.setdefault(run.node, []).extend([(run.start, run.gpus), (run.end, -run.gpus)])
    for name, steps in changes.items():
        held = 0
        # At one instant, pods leaving free their GPUs before new ones take them.
        for _, delta in sorted(steps, key=lambda s: (s[0], s[1])):
            held += delta
            assert 0 <= held <= capacity[name], f"node {name} holds {held} GPUs"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases)
def test_determinism(case: Case) -> None:
    def once() -> str:
        result = Simulator(case.nodes, case.policy, case.trace).run()
        alone = replay_all(case.nodes, case.policy, case.trace, list(result.members))
        return summary_json(build_study(case.policy, START, result, alone))

    assert once() == once()


SHARING_CASES = 200
TOLERANCE = 0.10
MAX_FAILURE_RATE = 0.15


def sharing_incentive_failures(case: Case) -> list[str]:
    result = Simulator(case.nodes, case.policy, case.trace).run()
    alone = replay_all(case.nodes, case.policy, case.trace, list(result.members))
    slack = case.policy.sharing.reclaim_grace_period_seconds
    failures = []
    for member, own in alone.items():
        if not own.jct_s:
            continue
        pooled = [
            result.jobs[j].end - result.jobs[j].job.submit_time  # type: ignore[operator]
            for j in own.jct_s
        ]
        pooled_mean = sum(pooled) / len(pooled)
        standalone_mean = sum(own.jct_s.values()) / len(own.jct_s)
        if pooled_mean > standalone_mean * (1 + TOLERANCE) + slack:
            failures.append(
                f"{member}: pooled {pooled_mean:.0f} s > standalone {standalone_mean:.0f} s"
            )
    return failures


def test_sharing_incentive_holds_in_most_cases() -> None:
    failing: list[str] = []
    for seed in range(SHARING_CASES):
        case = make_case(random.Random(seed))
        found = sharing_incentive_failures(case)
        if found:
            failing.append(f"seed {seed}: {'; '.join(found)}\n    {case}")
    rate = len(failing) / SHARING_CASES
    print(f"\nsharing incentive fails in {len(failing)}/{SHARING_CASES} cases ({rate:.1%}):")
    for line in failing:
        print("  " + line)
    assert rate <= MAX_FAILURE_RATE, f"{rate:.1%} of cases fail the sharing incentive"
