"""A live replay: a trace in `fairpool simulate`'s format replayed against the control
plane (pods created at their submit times, completed by kwok after their durations, time
scaled down) takes the same decisions as the simulator on the same trace: the same jobs
start in the same order on the same members' nodes, and the same jobs are preempted.

The replay plays the part of a Job controller the way the simulator models one: a
preempted job comes back at once with fresh pods that restart from zero.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from policies.loader import parse_policy
from scheduler.engine.snapshot import Node
from scheduler.sim.simulator import Simulator
from scheduler.traces.model import Trace, TraceJob
from tests.integration.test_daemon import H100, Pool, pool, wait_until

pytestmark = pytest.mark.integration
__all__ = ["pool"]

SCALE = 0.05
"""Real seconds per trace second."""
GRACE_TRACE_S = 20

# Member a fills its node, then borrows b's idle node for a gang; b comes back with a
# job that needs its whole node and reclaims it (the gang is preempted whole); the gang
# comes back, waits for room, and borrows b's node again when b's job ends.
TRACE = Trace(
    jobs=(
        TraceJob("j1", "a", 0, 400, num_pods=1, gpus_per_pod=4),
        TraceJob("j2", "a", 20, 400, num_pods=2, gpus_per_pod=2),
        TraceJob("j3", "b", 100, 100, num_pods=1, gpus_per_pod=4),
    )
)


@dataclass(frozen=True)
class Start:
    job: str
    attempt: int
    owners: tuple[str, ...]
    at: float


def _simulated(pool: Pool, nodes: dict[str, str]) -> tuple[list[Start], dict[str, int]]:
    policy = parse_policy(pool.policy_text(grace=GRACE_TRACE_S))
    sim_nodes = tuple(
        Node(name, owner, H100, gpus=4, cpu_milli=64_000, memory_bytes=512 * 2**30)
        for name, owner in sorted(nodes.items())
    )
    result = Simulator(sim_nodes, policy, TRACE).run()
    attempts: dict[tuple[str, float], set[str]] = {}
    for run in result.pod_runs:
        attempts.setdefault((run.job_id, run.start), set()).add(nodes[run.node])
    starts = []
    seen: dict[str, int] = {}
    for (job, at), owners in sorted(attempts.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        seen[job] = seen.get(job, -1) + 1
        starts.append(Start(job, seen[job], tuple(sorted(owners)), at))
    return starts, {j: r.preemptions for j, r in result.jobs.items()}


class Replay:
    """Creates each job's pods at its (scaled) submit time and again after a preemption;
    records when each attempt had all its pods bound, and where."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.jobs = {j.job_id: j for j in TRACE.jobs}
        self.attempt: dict[str, int] = {}
        self.bound: dict[tuple[str, int], dict[str, str]] = {}
        self.bound_at: dict[tuple[str, int], float] = {}
        self.preemptions: dict[str, int] = dict.fromkeys(self.jobs, 0)
        self.stop = threading.Event()
        self.started = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def create(self, job: TraceJob) -> None:
        attempt = self.attempt.get(job.job_id, -1) + 1
        self.attempt[job.job_id] = attempt
        gang = f"{job.job_id}-r{attempt}"
        for k in range(job.num_pods):
            self.pool.core.create_namespaced_pod(
                self.pool.ns(job.org),
                {
                    "metadata": {
                        "name": f"{gang}-{k}",
                        "labels": {
                            "fairpool.io/trace-job": job.job_id,
                            "fairpool.io/attempt": str(attempt),
                            **({"fairpool.io/gang": gang} if job.is_gang else {}),
                        },
                        "annotations": {
                            "fairpool.io/duration-seconds": f"{job.duration_s * SCALE:g}",
                            **({"fairpool.io/gang-size": str(job.num_pods)} if job.is_gang else {}),
                        },
                    },
                    "spec": {
                        "schedulerName": "fairpool",
                        "restartPolicy": "Never",
                        "terminationGracePeriodSeconds": 30,
                        "containers": [
                            {
                                "name": "train",
                                "image": "example.invalid/train:1",
                                "resources": {"limits": {"nvidia.com/gpu": str(job.gpus_per_pod)}},
                            }
                        ],
                    },
                },  # type: ignore[arg-type]
            )

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        arrivals = sorted(TRACE.jobs, key=lambda j: j.submit_time)
        while not self.stop.is_set():
            now = (time.monotonic() - self.started) / SCALE
            while arrivals and arrivals[0].submit_time <= now:
                self.create(arrivals.pop(0))
            self._observe(now)
            time.sleep(0.05)

    def _observe(self, now: float) -> None:
        pods = self.pool.core.list_pod_for_all_namespaces(label_selector="fairpool.io/trace-job")
        for p in pods.items:
            labels = p.metadata.labels
            key = (labels["fairpool.io/trace-job"], int(labels["fairpool.io/attempt"]))
            if p.spec.node_name and p.metadata.name not in self.bound.setdefault(key, {}):
                owner = p.metadata.annotations.get("fairpool.io/borrowed-from") or (
                    self.pool.ns_member(p.metadata.namespace)
                )
                self.bound[key][p.metadata.name] = owner
                if len(self.bound[key]) == self.jobs[key[0]].num_pods:
                    self.bound_at[key] = now
            preempted = p.metadata.deletion_timestamp and (p.metadata.annotations or {}).get(
                "fairpool.io/preempted-by"
            )
            if preempted and self.attempt[key[0]] == key[1]:
                # The simulator's Job controller: the job is pending again at once.
                self.preemptions[key[0]] += 1
                self.create(self.jobs[key[0]])

    def starts(self) -> list[Start]:
        return sorted(
            (
                Start(job, attempt, tuple(sorted(set(self.bound[(job, attempt)].values()))), at)
                for (job, attempt), at in self.bound_at.items()
            ),
            key=lambda s: (s.at, s.job),
        )


@pytest.fixture
def replay(pool: Pool) -> Iterator[Replay]:
    result = Replay(pool)
    yield result
    result.stop.set()


def test_live_replay_takes_the_simulators_decisions(pool: Pool, replay: Replay) -> None:
    for m in ("a", "b"):
        pool.add_member(m)
    nodes = {name: "a" for name in pool.add_nodes("a", count=1, gpus=4)}
    nodes |= {name: "b" for name in pool.add_nodes("b", count=1, gpus=4)}
    expected, expected_preemptions = _simulated(pool, nodes)
    assert [s.job for s in expected] == ["j1", "j2", "j3", "j2"], expected

    pool.daemon(parse_policy(pool.policy_text(grace=round(GRACE_TRACE_S * SCALE))))
    replay.start()
    wait_until(
        lambda: len(replay.bound_at) >= len(expected), timeout=60, what="every simulated start"
    )
    live = replay.starts()
    assert [(s.job, s.attempt, s.owners) for s in live] == [
        (s.job, s.attempt, s.owners) for s in expected
    ]
    assert replay.preemptions == expected_preemptions
    # Scaled start times agree to within the daemon's reaction time.
    for got, want in zip(live, expected, strict=True):
        assert abs(got.at - want.at) * SCALE < 2.0, (got, want)
