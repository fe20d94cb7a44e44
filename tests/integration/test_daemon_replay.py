"""A live replay: a trace in `fairpool simulate`'s format replayed against the control
plane (pods created at their submit times, completed by kwok after their durations, time
scaled down) takes the same decisions as the simulator on the same trace: the same jobs
start in the same order on the same members' nodes, and the same jobs are preempted.

The replay plays the part of a Job controller the way the simulator models one: a
preempted job comes back at once with fresh pods that restart from zero, or, for a
checkpointable job (its trace row says so, carried to its pods as the
`fairpool.io/checkpointable` annotation, else its member's setting), that run only the
work it had left when it was preempted.

Time: every policy duration given to the daemon is the trace's times SCALE (grace period,
min runtime, usage half-life), and the daemon keeps its usage history on its own wall
clock. Its history is then the simulator's times SCALE (GPU-seconds of real time), and
the engine uses the history only relative to the members' mean, so the same decisions
follow without any test-only clock in the daemon.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from policies.loader import parse_policy
from policies.model import Policy
from scheduler.engine import schedule
from scheduler.engine.decisions import Decisions
from scheduler.engine.snapshot import Node, Snapshot
from scheduler.k8s.informer import Informer
from scheduler.k8s.objects import Obj, reclaim_time
from scheduler.sim.simulator import Engine, SimulationResult, Simulator
from scheduler.traces.model import Trace, TraceJob
from tests.integration.test_daemon import H100, Pool, pool, wait_until

pytestmark = pytest.mark.integration
__all__ = ["pool"]

SCALE = 0.05
"""Real seconds per trace second."""
CARRIED = ("fairpool.io/reclaims", "fairpool.io/reclaimed-at")
"""What a controller that recreates evicted pods copies from the victim."""
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


def _simulated(
    pool: Pool,
    nodes: dict[str, str],
    trace: Trace = TRACE,
    policy: Policy | None = None,
    engine: Engine | None = None,
) -> tuple[list[Start], dict[str, int]]:
    policy = policy or parse_policy(pool.policy_text(grace=GRACE_TRACE_S))
    result = _simulation(nodes, trace, policy, engine)
    return _starts(result, nodes), {j: r.preemptions for j, r in result.jobs.items()}


def _simulation(
    nodes: dict[str, str], trace: Trace, policy: Policy, engine: Engine | None = None
) -> SimulationResult:
    sim_nodes = tuple(
        Node(name, owner, H100, gpus=4, cpu_milli=64_000, memory_bytes=512 * 2**30)
        for name, owner in sorted(nodes.items())
    )
    return Simulator(sim_nodes, policy, trace, engine).run()


def _starts(result: SimulationResult, nodes: dict[str, str]) -> list[Start]:
    attempts: dict[tuple[str, float], set[str]] = {}
    for run in result.pod_runs:
        attempts.setdefault((run.job_id, run.start), set()).add(nodes[run.node])
    starts = []
    seen: dict[str, int] = {}
    for (job, at), owners in sorted(attempts.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        seen[job] = seen.get(job, -1) + 1
        starts.append(Start(job, seen[job], tuple(sorted(owners)), at))
    return starts


class Replay:
    """Creates each job's pods at its (scaled) submit time and again after a preemption;
    records when each attempt had all its pods bound, and where."""

    def __init__(self, pool: Pool, trace: Trace = TRACE) -> None:
        self.pool = pool
        self.trace = trace
        self.jobs = {j.job_id: j for j in trace.jobs}
        self.checkpointable: frozenset[str] = frozenset()
        """Members whose preempted jobs come back with the work they had left (unless a
        job says otherwise)."""
        self.remaining = {j.job_id: j.duration_s for j in trace.jobs}
        self.attempt: dict[str, int] = {}
        self.bound: dict[tuple[str, int], dict[str, str]] = {}
        self.bound_at: dict[tuple[str, int], float] = {}
        self.preemptions: dict[str, int] = dict.fromkeys(self.jobs, 0)
        self.carried: dict[str, dict[str, str]] = {}
        """What each job's last victim carried over to its next attempt."""
        self.stop = threading.Event()
        self.started = 0.0
        self._lock = threading.Lock()
        """Arrivals and the watch both create attempts."""
        self._thread = threading.Thread(target=self._run, daemon=True)

    def create(self, job: TraceJob, carried: dict[str, str] | None = None) -> None:
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
                            "fairpool.io/duration-seconds": (
                                f"{self.remaining[job.job_id] * SCALE:g}"
                            ),
                            **({"fairpool.io/gang-size": str(job.num_pods)} if job.is_gang else {}),
                            **(
                                {"fairpool.io/checkpointable": str(job.checkpointable).lower()}
                                if job.checkpointable is not None
                                else {}
                            ),
                            # Carried over from the victim, as the simulator counts a
                            # job's reclaims (and knows the last one's time) across its
                            # attempts.
                            **(carried or {}),
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
        self._inform()
        self.started = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        arrivals = sorted(self.trace.jobs, key=lambda j: (j.submit_time, j.job_id))
        while not self.stop.is_set():
            now = (time.monotonic() - self.started) / SCALE
            while arrivals and arrivals[0].submit_time <= now:
                with self._lock:
                    self.create(arrivals.pop(0))
            time.sleep(0.01)

    def _inform(self) -> None:
        """Every change of the trace's pods, as it happens (the daemon's own informer: a
        list, then a watch from its version). A poll could miss a preempted pod: with a
        grace period of a second it may be gone between two lists on a busy machine, and
        its job would never come back."""
        replay = self

        class Sink:
            def replace(self, kind: str, objects: list[Obj]) -> None:
                for obj in objects:
                    self.apply(kind, "ADDED", obj)

            def apply(self, kind: str, event_type: str, obj: Obj) -> None:
                with replay._lock:
                    replay._observe(obj, (time.monotonic() - replay.started) / SCALE)

        informer = Informer(
            "pods",
            self.pool.core.list_pod_for_all_namespaces,
            Sink(),
            self.stop,
            label_selector="fairpool.io/trace-job",
        ).start()
        assert informer.synced.wait(30), "the replay's pod informer did not sync"

    def _observe(self, pod: Obj, now: float) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        key = (labels["fairpool.io/trace-job"], int(labels["fairpool.io/attempt"]))
        if spec.get("nodeName") and meta["name"] not in self.bound.setdefault(key, {}):
            owner = annotations.get("fairpool.io/borrowed-from") or (
                self.pool.ns_member(meta["namespace"])
            )
            self.bound[key][meta["name"]] = owner
            if len(self.bound[key]) == self.jobs[key[0]].num_pods:
                self.bound_at[key] = now
        preempted = meta.get("deletionTimestamp") and annotations.get("fairpool.io/preempted-by")
        if preempted and self.attempt[key[0]] == key[1]:
            # The simulator's Job controller: the job is pending again at once.
            job = self.jobs[key[0]]
            self.preemptions[job.job_id] += 1
            resumes = job.checkpointable
            if resumes is None:
                resumes = job.org in self.checkpointable
            if resumes:
                self.remaining[job.job_id] -= now - self.bound_at.get(key, now)
            else:
                self.remaining[job.job_id] = job.duration_s
            self.carried[job.job_id] = {k: annotations[k] for k in CARRIED if k in annotations}
            self.create(job, self.carried[job.job_id])

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


@pytest.fixture
def usage_replay(pool: Pool) -> Iterator[Replay]:
    result = Replay(pool, USAGE_TRACE)
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
    began = time.time()
    replay.start()
    wait_until(
        lambda: len(replay.bound_at) >= len(expected), timeout=120, what="every simulated start"
    )
    live = replay.starts()
    assert [(s.job, s.attempt, s.owners) for s in live] == [
        (s.job, s.attempt, s.owners) for s in expected
    ]
    assert replay.preemptions == expected_preemptions
    # The evictor wrote the reclaim's count and time (to the second) on the victim.
    carried = replay.carried["j2"]
    assert carried["fairpool.io/reclaims"] == "1"
    at = reclaim_time(carried["fairpool.io/reclaimed-at"])
    assert at is not None and began - 1 <= at <= time.time(), carried
    # Scaled start times agree to within the daemon's reaction time.
    for got, want in zip(live, expected, strict=True):
        assert abs(got.at - want.at) * SCALE < 2.0, (got, want)


# Usage history decides who goes first, and a checkpointable job is preempted.
# c owns the only node (4 GPUs); a and b own nothing, so all they run is borrowed.
# b used the node long ago (jb1), a more recently (ja1); with a 100 s half-life a's
# history is the larger when ja3 and jb3 both wait for the 2 GPUs c's jc1 frees at 450,
# so b goes first (the heavier recent user gets less of the surplus). Without the history
# a goes first (names break the tie), and so it would with no decay (b's total is the
# larger). Young pods are protected by a 300 s min runtime, so nobody is preempted for
# that surplus. Then c reclaims its node for jc2: a's ja2 and b's jb2 are preempted as
# soon as they pass the min runtime; jb2 is checkpointable (its trace row says so, and its
# pods' annotation; b is not), so it comes back with the 200 s it had left and ends at
# 970, when a's 3-GPU ja4 fits.
USAGE_HALF_LIFE_TRACE_S = 100.0
MIN_RUNTIME_TRACE_S = 300
USAGE_TRACE = Trace(
    jobs=(
        TraceJob("jb1", "b", 0, 120, num_pods=1, gpus_per_pod=4),
        TraceJob("ja1", "a", 140, 180, num_pods=1, gpus_per_pod=2),
        TraceJob("ja2", "a", 330, 500, num_pods=1, gpus_per_pod=1),
        TraceJob("jb2", "b", 350, 500, num_pods=1, gpus_per_pod=1, checkpointable=True),
        TraceJob("jc1", "c", 370, 80, num_pods=1, gpus_per_pod=2),
        TraceJob("ja3", "a", 390, 100, num_pods=1, gpus_per_pod=2),
        TraceJob("jb3", "b", 410, 100, num_pods=1, gpus_per_pod=2),
        TraceJob("jc2", "c", 600, 100, num_pods=1, gpus_per_pod=4),
        TraceJob("ja4", "a", 800, 50, num_pods=1, gpus_per_pod=3),
    )
)


def _usage_policy(pool: Pool, scale: float) -> Policy:
    """The policy with its durations in trace seconds times `scale`."""
    return parse_policy(
        pool.policy_text(
            grace=round(GRACE_TRACE_S * scale),
            minRuntimeSeconds=round(MIN_RUNTIME_TRACE_S * scale),
            usageHalfLifeHours=USAGE_HALF_LIFE_TRACE_S * scale / 3600,
        )
    )


def _without_history(snapshot: Snapshot, policy: Policy) -> Decisions:
    return schedule(replace(snapshot, usage_history={}), policy)


def _assert_same_decisions(live: list[Start], expected: list[Start]) -> None:
    """Same attempts on the same members' nodes at about the same (scaled) times, in the
    same order wherever the simulator started them at different instants (starts at one
    instant are one cycle's binds, observed in any order)."""
    got = {(s.job, s.attempt): s for s in live}
    want = {(s.job, s.attempt): s for s in expected}
    assert sorted(got) == sorted(want)
    assert {k: s.owners for k, s in got.items()} == {k: s.owners for k, s in want.items()}
    for key, start in want.items():
        assert abs(got[key].at - start.at) * SCALE < 2.0, (got[key], start)
    for first in expected:
        for later in expected:
            if first.at < later.at:
                a, b = got[(first.job, first.attempt)], got[(later.job, later.attempt)]
                assert a.at < b.at, f"{first.job} started after {later.job}: {live}"


def test_live_replay_with_usage_history_and_a_checkpointable_job(
    pool: Pool, usage_replay: Replay
) -> None:
    for m in ("a", "b", "c"):
        pool.add_member(m)
    nodes = {name: "c" for name in pool.add_nodes("c", count=1, gpus=4)}
    policy = _usage_policy(pool, 1.0)
    simulated = _simulation(nodes, USAGE_TRACE, policy)
    expected = _starts(simulated, nodes)
    order = [s.job for s in expected]
    assert order.index("jb3") < order.index("ja3"), expected
    # The trace is one where the history decides: without it the simulator starts ja3
    # first; and jb2's checkpoint shortens its second attempt.
    blind = [
        s.job for s in _starts(_simulation(nodes, USAGE_TRACE, policy, _without_history), nodes)
    ]
    assert blind.index("ja3") < blind.index("jb3"), blind
    preemptions = {j: r.preemptions for j, r in simulated.jobs.items()}
    assert preemptions == {**dict.fromkeys(preemptions, 0), "ja2": 1, "jb2": 1}
    assert simulated.jobs["jb2"].end == pytest.approx(970)

    daemon = pool.daemon(_usage_policy(pool, SCALE), lease_namespace=pool.ns("c"))
    usage_replay.start()
    wait_until(
        lambda: len(usage_replay.bound_at) >= len(expected),
        timeout=90,
        what="every simulated start",
    )
    _assert_same_decisions(usage_replay.starts(), expected)
    assert usage_replay.preemptions == preemptions

    # Lost to reclaim, with the engine's function in both shells: nothing for
    # checkpointable jb2; for a, ja2's run from its start to the end of its grace period
    # (the daemon counts at the eviction with the grace period the victim is given).
    # Within 2 GPU-s: pod start times have whole-second resolution and the eviction
    # follows the decision within ~0.5 s. Both split it by the engine's cause of each
    # preemption, so the daemon's counter carries the simulator's (member, cause) keys.
    def lost(member: str, cause: str) -> float | None:
        return daemon.metrics.registry.get_sample_value(
            "fairpool_reclaim_lost_gpu_seconds_total",
            {"member": member, "gpu_model": H100, "cause": cause},
        )

    by_cause = simulated.lost_by_cause_gpu_s
    assert {m for m, _ in by_cause} == {"a", "b"}, by_cause
    assert sum(v for (m, _), v in by_cause.items() if m == "a") == simulated.jobs["ja2"].lost_gpu_s
    wait_until(lambda: all(lost(*key) is not None for key in by_cause), what="lost work")
    for (member, cause), gpu_s in by_cause.items():
        assert lost(member, cause) == pytest.approx(gpu_s * SCALE, abs=2.0), (member, cause)
    assert sum(v for (m, _), v in by_cause.items() if m == "b") == 0.0  # jb2 resumes
