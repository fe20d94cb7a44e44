"""The effects: Binding and Eviction bodies, the FailedScheduling rate limit, the metrics
exposition, leader-election settings, the ConfigMap reference, and what the binder and
the evictor do with each answer of the API server (its requests stubbed)."""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from prometheus_client import generate_latest

from policies.errors import InputError
from policies.loader import load_policy
from scheduler.engine import schedule
from scheduler.engine.decisions import Bind, Decisions, MemberShare, Preemption
from scheduler.engine.snapshot import (
    Node,
    PendingJob,
    PendingPod,
    PodSpec,
    RunningPod,
    Snapshot,
)
from scheduler.k8s.binder import Binder, BindResult, binding_annotations, binding_body
from scheduler.k8s.cache import PODS, CacheView, ClusterCache
from scheduler.k8s.daemon import Daemon, DaemonConfig, PolicyConfigMap, SchedulerView
from scheduler.k8s.events import EventLevel, EventRecorder, EventType, ObjectRef
from scheduler.k8s.evictor import (
    Evictor,
    EvictResult,
    event_text,
    eviction_body,
    restored_annotations,
    victim_annotations,
)
from scheduler.k8s.exporter import OwedEpisodes, SchedulerMetrics, State
from scheduler.k8s.leader import LeaderElector
from scheduler.k8s.objects import PodInfo, pod_info
from scheduler.k8s.owners import Owner
from scheduler.sim.waiting import DAEMON_OWED_CAUSES, IDLE_CAUSES

POD = pod_info(
    {
        "metadata": {"name": "p", "namespace": "physics", "uid": "u1"},
        "spec": {"schedulerName": "fairpool", "containers": []},
    }
)


def _unreachable() -> k8s.ApiClient:
    configuration = k8s.Configuration()
    configuration.host = "http://127.0.0.1:9"  # discard port: nothing answers
    return k8s.ApiClient(configuration)


def test_binding_carries_uid_precondition_and_annotations() -> None:
    bind = Bind("u1", "n7", "u1", member="physics", owner="lab-bio", reclaimable=True)
    body = binding_body(bind, POD)
    assert body["metadata"] == {
        "name": "p",
        "namespace": "physics",
        "uid": "u1",
        "annotations": {"fairpool.io/member": "physics", "fairpool.io/borrowed-from": "lab-bio"},
    }
    assert body["target"]["name"] == "n7"
    own = Bind("u1", "n1", "u1", member="physics", owner="physics", reclaimable=False)
    assert binding_annotations(own) == {"fairpool.io/member": "physics"}


def test_eviction_body_has_grace_and_uid_precondition() -> None:
    preemption = Preemption(
        "u1",
        "j",
        "physics",
        reclaimer="lab-bio",
        for_job="lab-bio/x",
        reason="r",
        grace_period_seconds=30,
        cause="entitlement",
    )
    body = eviction_body(preemption, POD)
    assert body["deleteOptions"] == {"gracePeriodSeconds": 30, "preconditions": {"uid": "u1"}}
    assert victim_annotations(preemption, POD, 1_800_000_000.4) == {
        # physics reads lab-bio as the reason beside it does (it was named here).
        "fairpool.io/preempted-by": "another member",
        "fairpool.io/preemption-reason": "r",
        "fairpool.io/preemption-cause": "entitlement",
        "fairpool.io/reclaims": "1",
        "fairpool.io/reclaimed-at": "2027-01-15T08:00:00Z",
    }
    # Read by physics: lab-bio and its job are another member's.
    assert event_text(preemption) == (
        "Normal",
        "Preempted",
        "Preempted by another member for a job of another member: r (grace period 30s)",
    )
    own = replace(preemption, victim_member="lab-bio", cause="queue")
    assert event_text(own)[2] == (
        "Preempted by member lab-bio for job lab-bio/x: r (grace period 30s)"
    )
    moved = replace(preemption, cause="consolidation")
    assert victim_annotations(moved, POD, 0.0)["fairpool.io/preemption-cause"] == "consolidation"
    assert event_text(moved) == (
        "Normal",
        "Consolidated",
        "Moved for consolidation, for a job of another member: r (grace period 30s)",
    )
    assert event_text(replace(moved, victim_member="lab-bio"))[2] == (
        "Moved for consolidation, for job lab-bio/x of member lab-bio: r (grace period 30s)"
    )
    # A Job that counts the eviction against its backoffLimit: a Warning saying so.
    kept = Owner(kind="Job", namespace="physics", name="train", uid="j1")
    assert event_text(preemption, kept)[0] == "Normal"
    counted = replace(kept, eviction_fails=0)
    kind, reason, text = event_text(preemption, counted)
    assert (kind, reason) == ("Warning", "Preempted")
    assert text.startswith("Preempted by another member for a job of another member: r ")
    assert "Job train counts this eviction as a failed pod, against its backoffLimit of 0" in text
    assert "podFailurePolicy rule with action Ignore on the condition DisruptionTarget" in text

    def victim(annotations: dict[str, str]) -> PodInfo:
        return pod_info(
            {
                "metadata": {
                    "name": "p",
                    "namespace": "physics",
                    "uid": "u2",
                    "annotations": annotations,
                },
                "spec": {"schedulerName": "fairpool", "containers": []},
            }
        )

    written = victim_annotations(preemption, victim({"fairpool.io/reclaims": "2"}), 1.8e9)
    assert written["fairpool.io/reclaims"] == "3"
    # What the evictor writes reads back as the same count and time (to the second).
    back = victim(written)
    assert (back.reclaims, back.reclaimed_at) == (3, 1.8e9)
    # A refused eviction puts back what the pod carried, and removes what it did not.
    before = victim({"fairpool.io/reclaims": "2", "team": "x"})
    annotated = {**before.annotations, **victim_annotations(preemption, before, 1.8e9)}
    patch = restored_annotations(before)
    merged = {k: v for k, v in {**annotated, **patch}.items() if v is not None}  # merge patch
    assert merged == before.annotations
    assert victim(merged).reclaims == 2


def test_a_replica_that_lost_the_lease_deletes_no_pod_of_a_gang() -> None:
    # An undo queued behind binds runs after the lease is lost: the new leader may have
    # finished the gang meanwhile.
    leading = [True]
    binder = Binder(_unreachable(), ClusterCache(), may_bind=lambda: leading[0])
    deleted: list[str] = []
    binder._delete = lambda pod: deleted.append(pod.uid)  # type: ignore[method-assign]
    try:
        binder._delete_with_event(POD, "undo")
        leading[0] = False
        binder._delete_with_event(POD, "undo")
    finally:
        binder.close()
    assert deleted == ["u1"]


def test_a_replica_that_lost_the_lease_while_marking_a_gangs_pod_posts_no_undo_event() -> None:
    # The DisruptionTarget patch may take up to its read timeout, past --renew-deadline:
    # the deletion was then skipped, but a GangBindUndone event still went out from the
    # deposed leader, under the new leader's feet.
    leading = [True]
    recorded: list[str] = []

    class Recorder:
        def record(self, ref: ObjectRef, kind: EventType, reason: str, message: str) -> None:
            recorded.append(reason)

    binder = Binder(
        _unreachable(),
        ClusterCache(),
        Recorder(),  # type: ignore[arg-type]
        base_backoff=0.001,
        may_bind=lambda: leading[0],
    )
    deleted: list[str] = []

    def mark(name: str, namespace: str, body: Any, **kwargs: Any) -> None:
        leading[0] = False

    binder._core.patch_namespaced_pod_status = mark  # type: ignore[method-assign]
    binder._core.delete_namespaced_pod = lambda name, *a, **kw: deleted.append(name)  # type: ignore[method-assign]
    try:
        binder._delete_with_event(POD, "undo")
        assert (deleted, recorded) == ([], [])
        # Still leading: the pod is deleted, and the event says so.
        leading[0] = True
        binder._core.patch_namespaced_pod_status = lambda *a, **kw: None  # type: ignore[method-assign]
        binder._delete_with_event(POD, "undo")
    finally:
        binder.close()
    assert (deleted, recorded) == (["p"], ["GangBindUndone"])


def test_a_victims_event_names_a_reclaiming_pod_alone_by_namespace_and_name() -> None:
    # A pod alone is a job whose id is its uid: "Preempted by member lab-bio for job
    # 9c1e7d2a-…" named nothing its reader could find.
    reclaimer = pod_info(
        {
            "metadata": {"name": "eval", "namespace": "lab-bio", "uid": "9c1e"},
            "spec": {"schedulerName": "fairpool", "containers": []},
        }
    )
    # Only the victim's own member reads the job named (a job that overtook it).
    preemption = Preemption("u1", "u1", "lab-bio", "lab-bio", "9c1e", "r", 30, "queue")
    daemon = Daemon(_unreachable(), load_policy())
    sent: list[str] = []
    daemon.evictor.submit = lambda *args: sent.append(args[-1]) or True  # type: ignore[method-assign]
    try:
        view = CacheView(Snapshot(0.0, (), (), ()), (), {"9c1e": reclaimer, "u1": POD})
        daemon._preempt(preemption, POD, {}, view)
        gang = Preemption("u1", "u1", "lab-bio", "lab-bio", "lab-bio/g", "r", 30, "queue")
        daemon._preempt(gang, POD, {}, view)
    finally:
        daemon.recorder.close()
    assert sent == ["lab-bio/eval", ""]
    assert event_text(preemption, None, sent[0])[2] == (
        "Preempted by member lab-bio for job lab-bio/eval: r (grace period 30s)"
    )
    assert event_text(gang)[2].startswith("Preempted by member lab-bio for job lab-bio/g: ")


def test_failed_scheduling_is_rate_limited_per_pod() -> None:
    recorder = EventRecorder(_unreachable(), repeat_seconds=60)
    try:
        ref = ObjectRef("Pod", "ns", "p", "u1")
        assert recorder.failed_scheduling(ref, "no room", now=0.0)
        assert not recorder.failed_scheduling(ref, "no room", now=30.0)
        assert recorder.failed_scheduling(ref, "other reason", now=31.0)
        assert recorder.failed_scheduling(ref, "other reason", now=92.0)
        other = ObjectRef("Pod", "ns", "q", "u2")
        assert recorder.failed_scheduling(other, "no room", now=92.0)
        recorder.forget("u1")
        assert recorder.failed_scheduling(ref, "other reason", now=93.0)
    finally:
        recorder.close()


def test_the_rate_limit_forgets_pods_long_gone() -> None:
    # Pods deleted while they waited (cancelled work) are never bound: their entries go
    # once they no longer limit anything, or the table grows for as long as the daemon runs.
    recorder = EventRecorder(_unreachable(), repeat_seconds=60)
    try:
        for i in range(2000):
            assert recorder.due(f"gone-{i}", "no room", now=0.0)
        for i in range(2000):
            assert recorder.due(f"new-{i}", "no room", now=100.0)
        assert len(recorder._last_failed) < 2100
        assert not recorder.due("new-1999", "no room", now=101.0), "still rate-limited"
        assert recorder.due("gone-0", "no room", now=101.0)
    finally:
        recorder.close()


def test_event_queue_drops_beyond_its_limit() -> None:
    recorder = EventRecorder(_unreachable(), workers=1, queue_limit=2)
    try:
        for i in range(50):
            recorder.record(ObjectRef("Pod", "ns", f"p{i}"), "Normal", "Scheduled", "x")
        assert recorder.dropped >= 40
    finally:
        recorder.close()


def test_leader_timings_must_nest() -> None:
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaderElector(_unreachable(), "ns", "lease", "me", lease_seconds=5, renew_deadline=6)


def test_the_lease_a_standby_waits_out_is_never_shorter_than_the_holders() -> None:
    # A standby waits out the leaseDurationSeconds the holder wrote (whole seconds): 4.5
    # written as 4 let it lead while a holder with a 4.2 s renew deadline still did.
    holder = LeaderElector(
        _unreachable(), "ns", "lease", "me", lease_seconds=4.5, renew_deadline=4.2
    )
    written = holder._spec(0, None)["leaseDurationSeconds"]
    assert written == 5
    standby = LeaderElector(_unreachable(), "ns", "lease", "other", lease_seconds=30.0)
    assert standby._holders_lease(SimpleNamespace(lease_duration_seconds=written)) == 5.0
    assert standby._holders_lease(SimpleNamespace(lease_duration_seconds=None)) == 30.0


def test_policy_configmap_reference() -> None:
    assert PolicyConfigMap.parse("fairpool-system/policy") == PolicyConfigMap(
        "fairpool-system", "policy"
    )
    with pytest.raises(InputError, match="NAMESPACE/NAME"):
        PolicyConfigMap.parse("policy")


def test_daemon_is_a_scheduler_view() -> None:
    daemon = Daemon(_unreachable(), load_policy())
    assert isinstance(daemon, SchedulerView)
    assert daemon.last_decisions() == Decisions()
    assert daemon.snapshot().nodes == ()
    policy = load_policy()
    daemon.set_policy(policy)
    assert daemon.policy() is policy


def test_metrics_exposition() -> None:
    node = Node("n1", "lab-bio", "A100", gpus=8, cpu_milli=0, memory_bytes=0)
    running = RunningPod(
        "u1", "p", "physics", "physics", "u1", "n1", PodSpec(gpus=2), started_at=0.0
    )
    pending_other = RunningPod(
        "u2", "q", "physics", "physics", "u2", "n1", PodSpec(gpus=1), started_at=0.0
    )
    snapshot = Snapshot(now=10.0, nodes=(node,), running=(running, pending_other), pending=())
    share = MemberShare("physics", "A100", 0, 2, 1.5, 5, 3, 4, 0, 0, 5)
    state = State(
        snapshot, Decisions(shares=(share,)), leader=True, running_phase=frozenset({"u1"})
    )
    metrics = SchedulerMetrics(lambda: state)
    text = generate_latest(metrics.registry).decode()
    assert "fairpool_leader 1.0" in text
    assert 'fairpool_member_fair_share_gpus{gpu_model="A100",member="physics"} 1.5' in text
    assert 'fairpool_member_borrowed_gpus{gpu_model="A100",member="physics"} 3.0' in text
    assert 'fairpool_member_reclaimable_gpus{gpu_model="A100",member="physics"} 4.0' in text
    allocation = [s for s in text.splitlines() if s.startswith("fairpool_pod_gpu_allocation{")]
    assert allocation == [
        'fairpool_pod_gpu_allocation{gpu_model="A100",member="physics",namespace="physics",'
        'node="n1",owner="lab-bio",pod="p",uid="u1"} 2.0'
    ]
    metrics.pod_series = False  # `fairpool run --no-metrics-pod-series`
    text = generate_latest(metrics.registry).decode()
    assert "fairpool_pod_gpu_allocation{" not in text
    assert 'fairpool_member_fair_share_gpus{gpu_model="A100",member="physics"} 1.5' in text
    standby = SchedulerMetrics(lambda: State(snapshot, Decisions(), False, frozenset({"u1"})))
    text = generate_latest(standby.registry).decode()
    assert "fairpool_leader 0.0" in text
    assert "fairpool_pod_gpu_allocation{" not in text


def test_owed_episodes_open_and_end_with_the_readings() -> None:
    episodes = OwedEpisodes()
    a, b = ("a", "H100"), ("b", "H100")
    assert episodes.read(10.0, {a}) == []
    assert episodes.read(20.0, {a, b}) == []
    assert episodes.lasted(a, 25.0) == 15.0 and episodes.lasted(b, 25.0) == 5.0
    assert episodes.read(30.0, {b}) == [(a, 20.0)]
    assert episodes.lasted(a, 30.0) == 0.0
    assert episodes.read(30.0, {b}) == []  # the same cycle read again
    assert episodes.read(40.0, set()) == [(b, 20.0)]


PHYSICS_A100 = {"member": "physics", "gpu_model": "A100"}


def _owed_then_not(leader: bool, wait_s: float) -> tuple[State, list[State], SchedulerMetrics]:
    """lab-bio holds physics' only node while physics' 8-GPU job waits (owed); `wait_s`
    later nothing runs or waits. The second cycle's state, the list of published states
    (the first cycle's in it) and the metrics that read the list's last."""
    nodes = (Node("n1", "physics", "A100", 8, 0, 0),)
    held = (RunningPod("u2", "p2", "lab-bio", "lab-bio", "u2", "n1", PodSpec(gpus=8)),)
    big = PendingJob("big", "physics", (PendingPod("b0", "big", "physics", PodSpec(gpus=8)),))
    policy = load_policy()
    owed = Snapshot(now=10_000.0, nodes=nodes, running=held, pending=(big,))
    free = Snapshot(now=10_000.0 + wait_s, nodes=nodes, running=(), pending=())
    published = [State(owed, schedule(owed, policy), leader, frozenset(), policy, version=1)]
    second = State(free, schedule(free, policy), leader, frozenset(), policy, version=2)
    return second, published, SchedulerMetrics(lambda: published[-1])


def test_a_standby_tracks_owed_episodes_but_counts_none() -> None:
    # Every replica reads its own cycles; only the leader's histogram counts the pool's
    # episodes, so that summing over replicas does not count one twice.
    second, published, metrics = _owed_then_not(leader=False, wait_s=300.0)
    get = metrics.registry.get_sample_value
    assert get("fairpool_member_owed", PHYSICS_A100) == 1.0
    assert get("fairpool_member_owed_seconds", PHYSICS_A100) == 0.0
    published.append(second)
    assert get("fairpool_member_owed_seconds", PHYSICS_A100) == 0.0
    assert get("fairpool_time_to_entitlement_seconds_count", PHYSICS_A100) is None


def test_the_daemons_readings_between_scrapes_time_the_episodes() -> None:
    # No scrape while physics waits: the daemon's own readings (`SchedulerMetrics.read`)
    # open and end the episode, and the next scrape finds it counted.
    second, published, metrics = _owed_then_not(leader=True, wait_s=40.0)
    metrics.read()
    published.append(second)
    metrics.read()
    get = metrics.registry.get_sample_value
    assert get("fairpool_time_to_entitlement_seconds_count", PHYSICS_A100) == 1.0
    assert get("fairpool_time_to_entitlement_seconds_sum", PHYSICS_A100) == 40.0
    SchedulerMetrics().read()  # no published state: nothing to read, and no error


def test_wait_meter_gauges_read_the_published_cycle_once() -> None:
    # physics owns two 8-GPU nodes and runs 6 GPUs on n1; lab-bio borrows 6 on n2.
    # physics's 8-GPU job fits its entitlement once n2 is taken back: the cycle
    # preempts lab-bio's pod and holds n2's 2 free GPUs for the job; n1's 2 are too few.
    nodes = tuple(Node(f"n{i}", "physics", "A100", 8, 0, 0) for i in (1, 2))
    run = (
        RunningPod("u1", "p1", "physics", "physics", "u1", "n1", PodSpec(gpus=6)),
        RunningPod("u2", "p2", "lab-bio", "lab-bio", "u2", "n2", PodSpec(gpus=6)),
    )
    big = PendingJob("big", "physics", (PendingPod("b0", "big", "physics", PodSpec(gpus=8)),))
    policy = load_policy()
    snapshot = Snapshot(now=10_000.0, nodes=nodes, running=run, pending=(big,))
    decisions = schedule(snapshot, policy)
    assert [p.pod_uid for p in decisions.preemptions] == ["u2"]
    states = [State(snapshot, decisions, True, frozenset(), policy, version=1)]
    metrics = SchedulerMetrics(lambda: states[-1])

    def series(name: str, label: str) -> dict[str, float]:
        """`label`'s value -> the sample's, of the A100 series of `name`."""
        out = {}
        for line in generate_latest(metrics.registry).decode().splitlines():
            if line.startswith(name + "{") and 'gpu_model="A100"' in line:
                out[line.split(f'{label}="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
        return out

    def idle() -> dict[str, float]:
        return series("fairpool_idle_gpus_while_pending", "cause")

    def owed() -> dict[str, float]:
        return series("fairpool_member_owed", "member")

    def blocker() -> dict[str, float]:
        return series("fairpool_member_owed_blocker", "cause")

    def lasted() -> dict[str, float]:
        return series("fairpool_member_owed_seconds", "member")

    def value(name: str, labels: str = "") -> float | None:
        return metrics.registry.get_sample_value(
            name, dict(p.split("=") for p in labels.split(",") if p)
        )

    def ended() -> tuple[float, float]:
        """(count, sum) of physics' A100 episodes that ended."""
        labels = "member=physics,gpu_model=A100"
        count = value("fairpool_time_to_entitlement_seconds_count", labels)
        return (count or 0.0, value("fairpool_time_to_entitlement_seconds_sum", labels) or 0.0)

    assert idle() == {**dict.fromkeys(IDLE_CAUSES, 0.0), "held": 2.0, "too_few_free": 2.0}
    assert owed() == {"physics": 1.0}
    # lab-bio's pod on n2 is on its way out: nothing else holds physics' nodes.
    assert blocker() == {**dict.fromkeys(DAEMON_OWED_CAUSES, 0.0), "elsewhere": 1.0}
    # Worked out once per publication: the same version reads the same figures ...
    done = replace(snapshot, pending=())
    states.append(State(done, decisions, True, frozenset(), policy, version=1))
    assert idle()["held"] == 2.0 and owed() == {"physics": 1.0}
    # ... and the next one anew: nothing waits, every cause is 0, nobody is owed, and the
    # episode that ended is counted, as long as it lasted between the two cycles read.
    assert lasted() == {"physics": 0.0} and ended() == (0.0, 0.0)
    later = replace(snapshot, now=snapshot.now + 100.0)
    states.append(State(later, decisions, True, frozenset(), policy, version=2))
    assert lasted() == {"physics": 100.0}
    done = replace(done, now=snapshot.now + 150.0)
    states.append(State(done, schedule(done, policy), True, frozenset(), policy, version=3))
    assert idle() == dict.fromkeys(IDLE_CAUSES, 0.0)
    assert owed() == {"physics": 0.0}
    assert blocker() == dict.fromkeys(DAEMON_OWED_CAUSES, 0.0)
    assert lasted() == {"physics": 0.0} and ended() == (1.0, 150.0)
    # The built-in demo policy: 30 s grace period, 600 s minimum runtime.
    assert value("fairpool_owed_allowance_seconds") == 30 + 600 + 60
    # Before the first cycle (no policy, no snapshot): no series.
    states.append(State(None, Decisions(), False, frozenset()))
    assert idle() == {} and owed() == {} and blocker() == {}


class _Capture(EventRecorder):
    """Keeps what would be posted instead of posting it."""

    def __init__(self, level: EventLevel = "all") -> None:
        super().__init__(_unreachable(), repeat_seconds=60, level=level)
        self.sent: list[tuple[str, str]] = []

    def record(self, ref: ObjectRef, event_type: EventType, reason: str, message: str) -> None:
        if self.wanted(event_type):
            self.sent.append((ref.uid, message))


def _waiting(name: str, submitted: float) -> PendingJob:
    return PendingJob(
        name,
        "physics",
        (PendingPod(f"u-{name}", name, "physics", PodSpec(gpus=1), submitted),),
        submitted_at=submitted,
    )


@pytest.mark.parametrize("level", ["all", "none"])
def test_waiting_jobs_are_counted_and_explained_once_per_repeat(level: EventLevel) -> None:
    """Every waiting job counts as an unschedulable attempt; a FailedScheduling warning
    goes to the pods of jobs that waited `explain_after_seconds`, again only when the
    reason changed or `repeat_seconds` passed (none at all with `--events none`)."""
    old, new = _waiting("old", 0.0), _waiting("new", 99.5)
    pods = {
        p.uid: pod_info(
            {
                "metadata": {"name": p.name, "namespace": "physics", "uid": p.uid},
                "spec": {"schedulerName": "fairpool", "containers": []},
            }
        )
        for job in (old, new)
        for p in job.pods
    }
    recorder = _Capture(level)
    fake = SimpleNamespace(
        config=DaemonConfig(), metrics=SchedulerMetrics(), recorder=recorder, policy=load_policy
    )

    def explain(now: float, sentence: str) -> None:
        snapshot = Snapshot(now=now, nodes=(), running=(), pending=(old, new))
        view = CacheView(snapshot, (), pods)
        Daemon._explain(fake, snapshot, {"old": sentence, "new": sentence}, view)  # type: ignore[arg-type]

    try:
        explain(100.0, "no room")
        explain(110.0, "no room")
        explain(120.0, "still no room")
        explain(200.0, "still no room")
    finally:
        recorder.close()
    counted = fake.metrics.attempts.labels("unschedulable")._value.get()
    assert counted == 8
    expected = [
        ("u-old", "no room"),  # `new` has waited only 0.5 s
        ("u-new", "no room"),  # now it has; `old` was told this 10 s ago
        ("u-old", "still no room"),
        ("u-new", "still no room"),
        ("u-old", "still no room"),
        ("u-new", "still no room"),
    ]
    assert recorder.sent == (expected if level == "all" else [])


@pytest.mark.parametrize(
    ("member", "own", "lost"),
    [
        ("physics", None, 0.0),  # the demo's checkpointable member
        ("lab-bio", None, 4 * 130.0),
        ("lab-bio", True, 0.0),  # the pod says it resumes
        ("physics", False, 4 * 130.0),  # the pod says it restarts
    ],
)
def test_work_lost_at_an_eviction_follows_the_pod_else_its_member(
    member: str, own: bool | None, lost: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lost-work metric counts GPUs x (end of the grace period - start) for a pod
    that restarts, nothing for one that resumes: its `checkpointable`, else its
    member's."""
    policy = load_policy()  # physics: checkpointable; grace period 30 s
    node = Node("n1", "physics", "NVIDIA-A100-SXM4-80GB", 8, 64_000, 2**39)
    victim = RunningPod(
        "u9",
        "p",
        member,
        member,
        "u9",
        "n1",
        PodSpec(gpus=4),
        started_at=900.0,
        checkpointable=own,
    )
    fake = SimpleNamespace(
        metrics=SchedulerMetrics(),
        _victims={"u9": victim},
        snapshot=lambda: Snapshot(now=0.0, nodes=(node,), running=(victim,), pending=()),
        policy=lambda: policy,
    )
    fake._checkpointable = lambda m: Daemon._checkpointable(fake, m)  # type: ignore[arg-type]
    monkeypatch.setattr("scheduler.k8s.daemon.time.time", lambda: 1000.0)
    pod = pod_info({"metadata": {"name": "p", "namespace": member, "uid": "u9"}, "spec": {}})
    preemption = Preemption("u9", "u9", member, "uni-north", "uni-north/x", "r", 30, "entitlement")
    Daemon._evicted(fake, EvictResult(preemption, pod, "evicted", ""))  # type: ignore[arg-type]
    sample = fake.metrics.registry.get_sample_value(
        "fairpool_reclaim_lost_gpu_seconds_total",
        {"member": member, "gpu_model": "NVIDIA-A100-SXM4-80GB", "cause": "entitlement"},
    )
    assert sample == pytest.approx(lost)
    evictions = {"reclaimer": "uni-north", "result": "evicted", "cause": "entitlement"}
    assert fake.metrics.registry.get_sample_value("fairpool_preemptions_total", evictions) == 1


# --- the binder and the evictor against the API server's answers (requests stubbed) -----


def _refusal(status: int, message: str, **details: Any) -> ApiException:
    """An API error as kube-apiserver answers it: a Status body."""
    exc = ApiException(status=status, reason="refused")
    body: dict[str, Any] = {"kind": "Status", "code": status, "message": message}
    if details:
        body["details"] = details
    exc.body = json.dumps(body)
    return exc


def _bind(pod: PodInfo, node: str = "n1") -> Bind:
    return Bind(pod.uid, node, "physics/train", "physics", None, False)


@pytest.mark.parametrize(
    ("status", "message", "detail"),
    [
        (409, 'pod "p" has non-empty .spec.schedulingGates', "pod held by a scheduling gate"),
        # Its Job replaced it, or a gang undo deleted it, while the bind was on its way:
        # it was tried again for 30 s.
        (409, "pod p is being deleted, cannot be assigned to a host", "pod being deleted"),
        (500, "pod p is being deleted, cannot be assigned to a host", "pod being deleted"),
    ],
)
def test_a_bind_no_retry_can_make_is_dropped_at_once(
    monkeypatch: pytest.MonkeyPatch, status: int, message: str, detail: str
) -> None:
    posts: list[str] = []

    def post(api: object, path: str, body: dict[str, Any], timeout: object) -> bytes:
        posts.append(path)
        raise _refusal(status, message)

    monkeypatch.setattr("scheduler.k8s.binder.post_json", post)
    recorder = _Capture()
    results: list[BindResult] = []
    binder = Binder(_unreachable(), ClusterCache(), recorder, on_result=results.append)
    reads: list[str] = []
    binder._core.read_namespaced_pod = lambda *a, **k: reads.append(a[0])  # type: ignore[method-assign]
    try:
        binder.submit([(_bind(POD), POD)])
        assert binder.wait_idle(5)
    finally:
        binder.close()
    (result,) = results
    assert (result.outcome, result.detail) == ("gone", detail)
    assert len(posts) == 1 and reads == [] and recorder.sent == []


def _gang_pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "physics",
            "uid": f"u-{name}",
            "labels": {"fairpool.io/gang": "train"},
            "annotations": {"fairpool.io/gang-size": "2"},
        },
        "spec": {"schedulerName": "fairpool", "containers": []},
    }


ASSIGNED = 'Operation cannot be fulfilled on pods/binding "a": pod a is already assigned'


@pytest.mark.parametrize(
    ("message", "reads_failing", "outcome"),
    [
        (ASSIGNED + ' to node "n1"', 99, "bound"),  # the node is in the answer: no read
        (ASSIGNED, 2, "bound"),  # read once the API server answers again
        (ASSIGNED, 99, "assigned"),  # never read: bound, to a node not known
    ],
    ids=["node-named", "read-later", "never-read"],
)
def test_a_pod_the_api_server_says_is_bound_is_never_reported_failed(
    message: str, reads_failing: int, outcome: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first Binding of `a` went through but its answer was lost; the retry is
    answered 409 "already assigned", and reading the pod may fail too (the API server
    restarts). Reported failed, the gang's other pod was deleted and `a` left running
    alone, and the cache took `a` for pending with its GPUs free."""
    posts: list[str] = []

    def post(api: object, path: str, body: dict[str, Any], timeout: object) -> bytes:
        name = body["metadata"]["name"]
        posts.append(name)
        if name == "a" and posts.count("a") == 1:
            raise urllib3.exceptions.ProtocolError("Connection reset by peer")
        if name == "a":
            raise _refusal(409, message)
        return b"{}"

    monkeypatch.setattr("scheduler.k8s.binder.post_json", post)
    cache = ClusterCache()
    cache.replace(PODS, [_gang_pod("a"), _gang_pod("b")])
    recorder = _Capture()
    results: list[BindResult] = []
    binder = Binder(
        _unreachable(),
        cache,
        recorder,
        retry_seconds=0.5,
        base_backoff=0.001,
        on_result=results.append,
    )
    reads: list[str] = []

    def read(name: str, namespace: str, **kwargs: Any) -> k8s.V1Pod:
        reads.append(name)
        if len(reads) <= reads_failing:
            raise _refusal(503, "the server is currently unable to handle the request")
        return k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(uid="u-a"), spec=k8s.V1PodSpec(containers=[], node_name="n1")
        )

    binder._core.read_namespaced_pod = read  # type: ignore[method-assign]
    deleted: list[str] = []
    binder._delete = lambda pod: deleted.append(pod.name)  # type: ignore[method-assign]
    a, b = (cache.pod(uid) for uid in ("u-a", "u-b"))
    assert a is not None and b is not None
    try:
        binder.submit([(_bind(a), a), (_bind(b), b)], gang=True)
        assert binder.wait_idle(5)
    finally:
        binder.close()
    got = {r.pod.name: r for r in results}
    assert got["a"].outcome == outcome and got["b"].outcome == "bound"
    assert deleted == [] and binder.undone == 0
    assert "a" not in (ref for ref, _ in recorder.sent)
    # Bound or assumed on n1: not pending, its GPUs counted there.
    assert not cache.has_pending()
    assert {p.name: p.node for p in cache.view(load_policy()).snapshot.running} == {
        "a": "n1",
        "b": "n1",
    }


class _Victim:
    """The API server's side of one victim: its annotations as patched, and what each
    Eviction is answered."""

    def __init__(self, refusal: ApiException | None) -> None:
        self.annotations: dict[str, str] = {"fairpool.io/reclaims": "1"}
        self.refusal = refusal
        self.evictions = 0

    def patch_namespaced_pod(self, name: str, namespace: str, body: Any, **kw: Any) -> Any:
        for key, value in body["metadata"]["annotations"].items():
            if value is None:
                self.annotations.pop(key, None)
            else:
                self.annotations[key] = value
        return SimpleNamespace(data=b"{}")

    def create_namespaced_pod_eviction(
        self, name: str, namespace: str, body: Any, **kw: Any
    ) -> Any:
        self.evictions += 1
        if self.refusal is not None:
            raise self.refusal
        return SimpleNamespace(data=b"{}")

    def pod(self) -> PodInfo:
        return pod_info(
            {
                "metadata": {
                    "name": "v",
                    "namespace": "lab-bio",
                    "uid": "uv",
                    "annotations": dict(self.annotations),
                },
                "spec": {"schedulerName": "fairpool", "nodeName": "n1", "containers": []},
                "status": {"phase": "Running"},
            }
        )


RECLAIM = Preemption("uv", "lab-bio/j", "lab-bio", "physics", "physics/x", "r", 30, "entitlement")


def _evict_cycles(victim: _Victim, cycles: int, **options: Any) -> list[EvictResult]:
    """The victim's eviction decided `cycles` times, each time as the cache then shows it."""
    results: list[EvictResult] = []
    evictor = Evictor(_unreachable(), retry_seconds=0.0, on_result=results.append, **options)
    evictor._core = victim  # type: ignore[assignment]
    try:
        for _ in range(cycles):
            evictor.submit(RECLAIM, victim.pod())
            evictor.wait_idle(5)
    finally:
        evictor.close()
    return results


PDB_CONFLICT = (
    'Operation cannot be fulfilled on poddisruptionbudgets.policy "train": the object has '
    "been modified; please apply your changes to the latest version and try again"
)
REPLACED = (
    'Operation cannot be fulfilled on Pod "v": the UID in the precondition (uv) does not '
    "match the UID in record (uw). The object might have been deleted and then recreated"
)


def test_an_eviction_whose_budget_update_conflicts_is_no_reclaim() -> None:
    """The API server answers 409 when its retries of the PodDisruptionBudget's status
    update all conflicted: taken for "pod replaced", the annotations stayed and each
    cycle's attempt added one to the job's reclaim count."""
    victim = _Victim(_refusal(409, PDB_CONFLICT))
    results = _evict_cycles(victim, 3)
    assert victim.evictions == 3 and victim.annotations == {"fairpool.io/reclaims": "1"}
    assert [r.outcome for r in results] == ["failed"] * 3
    assert PDB_CONFLICT in results[0].detail
    replaced = _Victim(_refusal(409, REPLACED))
    (result,) = _evict_cycles(replaced, 1)
    assert (result.outcome, result.detail) == ("gone", "pod replaced")


def test_a_replica_that_lost_the_lease_during_the_victims_patch_does_not_evict() -> None:
    # The patch may take up to its 30 s read timeout, past --renew-deadline: the lease
    # was checked only before it, and the Eviction went out from a deposed leader.
    leading = [True]

    class Slow(_Victim):
        def patch_namespaced_pod(self, name: str, namespace: str, body: Any, **kw: Any) -> Any:
            leading[0] = False
            return super().patch_namespaced_pod(name, namespace, body, **kw)

    victim = Slow(None)
    (result,) = _evict_cycles(victim, 1, may_evict=lambda: leading[0])
    assert victim.evictions == 0 and result.outcome == "gone"
    assert victim.annotations == {"fairpool.io/reclaims": "1"}  # what it wrote, undone


def test_a_replica_that_lost_the_lease_while_retrying_a_deletion_stops() -> None:
    leading = [True]
    binder = Binder(_unreachable(), ClusterCache(), base_backoff=0.001, may_bind=lambda: leading[0])
    sent: list[bool] = []

    def delete(name: str, namespace: str, **kwargs: Any) -> None:
        sent.append(leading[0])
        leading[0] = False  # lost while the API server struggles
        raise _refusal(503, "the server is currently unable to handle the request")

    binder._core.delete_namespaced_pod = delete  # type: ignore[method-assign]
    try:
        assert binder._delete(POD) == "not the leader any more; the new leader repairs the gang"
    finally:
        binder.close()
    assert sent == [True]


def test_binds_shed_by_the_api_server_wait_as_asked_within_a_time_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """API Priority and Fairness answers 429 with how long to wait (a `Retry-After`
    header, and `retryAfterSeconds` in the Status). Retried 5 times in about 3 s
    whatever it asked, a gang's bind was given up, and the gang undone, under a load
    that lasted seconds; and the worker slept once more after its last attempt."""
    started = time.monotonic()
    posts: dict[str, list[float]] = {"a": [], "b": []}

    def post(api: object, path: str, body: dict[str, Any], timeout: object) -> bytes:
        name = body["metadata"]["name"]
        posts[name].append(time.monotonic() - started)
        if name == "a" and len(posts["a"]) == 3:  # a: shed twice, then bound
            return b"{}"
        exc = _refusal(429, "Too many requests, please try again later.", retryAfterSeconds=1)
        if name == "b":
            exc.headers = {"Retry-After": "1"}
        raise exc

    monkeypatch.setattr("scheduler.k8s.binder.post_json", post)
    results: list[BindResult] = []
    binder = Binder(_unreachable(), ClusterCache(), retry_seconds=2.5, on_result=results.append)
    deleted: list[str] = []
    binder._delete = lambda pod: deleted.append(pod.name)  # type: ignore[method-assign]
    a, b = pod_info(_gang_pod("a")), pod_info(_gang_pod("b"))
    try:
        binder.submit([(_bind(a), a)], gang=False)
        binder.submit([(_bind(b), b)], gang=False)
        assert binder.wait_idle(10)
    finally:
        binder.close()
    got = {r.pod.name: r for r in results}
    for name in ("a", "b"):
        gaps = [later - earlier for earlier, later in itertools.pairwise(posts[name])]
        assert len(posts[name]) == 3 and min(gaps) >= 1.0, (name, posts[name])
    assert got["a"].outcome == "bound"
    # b: shed at 0, 1 and 2 s; a fourth attempt would start past the 2.5 s budget, so
    # it is given up at once.
    assert got["b"].outcome == "failed" and "gave up after 3 attempts" in got["b"].detail
    assert got["b"].seconds - posts["b"][-1] < 0.5


BUDGET = {
    "causes": [
        {
            "type": "DisruptionBudget",
            "message": "The disruption budget train needs 2 healthy pods and has 2 currently",
        }
    ]
}


@pytest.mark.parametrize(
    ("refusal", "outcome"),
    [
        (
            _refusal(
                429, "Cannot evict pod as it would violate the pod's disruption budget.", **BUDGET
            ),
            "blocked",
        ),
        # API Priority and Fairness shedding load: no budget holds the owner's node.
        (
            _refusal(429, "Too many requests, please try again later.", retryAfterSeconds=1),
            "failed",
        ),
    ],
    ids=["budget", "load-shed"],
)
def test_only_a_refusal_naming_a_disruption_budget_counts_as_the_budgets(
    refusal: ApiException, outcome: str
) -> None:
    victim = _Victim(refusal)
    results: list[EvictResult] = []
    evictor = Evictor(_unreachable(), retry_seconds=60.0, on_result=results.append)
    evictor._core = victim  # type: ignore[assignment]
    try:
        evictor.submit(RECLAIM, victim.pod())
        evictor.wait_idle(5)
        refused = evictor.refused()
        again = evictor.submit(RECLAIM, victim.pod())
    finally:
        evictor.close()
    (result,) = results
    assert result.outcome == outcome
    assert refused == (frozenset({"uv"}) if outcome == "blocked" else frozenset())
    assert not again, "tried again only after retry_seconds"
    assert victim.annotations == {"fairpool.io/reclaims": "1"}


def test_work_lost_at_an_eviction_counts_to_the_end_of_the_grace_period_it_was_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The victim was evicted with the grace period of its preemption (120 s); a policy
    applied since (30 s) does not shorten the work counted as lost (it did)."""
    policy = load_policy()  # grace period 30 s
    node = Node("n1", "lab-bio", "NVIDIA-A100-SXM4-80GB", 8, 64_000, 2**39)
    victim = RunningPod(
        "u9", "p", "lab-bio", "lab-bio", "u9", "n1", PodSpec(gpus=4), started_at=900.0
    )
    fake = SimpleNamespace(
        metrics=SchedulerMetrics(),
        _victims={"u9": victim},
        snapshot=lambda: Snapshot(now=0.0, nodes=(node,), running=(victim,), pending=()),
        policy=lambda: policy,
    )
    fake._checkpointable = lambda m: Daemon._checkpointable(fake, m)  # type: ignore[arg-type]
    monkeypatch.setattr("scheduler.k8s.daemon.time.time", lambda: 1000.0)
    pod = pod_info({"metadata": {"name": "p", "namespace": "lab-bio", "uid": "u9"}, "spec": {}})
    preemption = Preemption("u9", "u9", "lab-bio", "uni-north", "u/x", "r", 120, "entitlement")
    Daemon._evicted(fake, EvictResult(preemption, pod, "evicted", ""))  # type: ignore[arg-type]
    sample = fake.metrics.registry.get_sample_value(
        "fairpool_reclaim_lost_gpu_seconds_total",
        {"member": "lab-bio", "gpu_model": "NVIDIA-A100-SXM4-80GB", "cause": "entitlement"},
    )
    assert sample == pytest.approx(4 * (1000.0 + 120 - 900.0))


def test_preempted_by_names_only_the_victims_own_member() -> None:
    """The annotation beside the redacted reason named the other member that reclaimed
    (`preempted-by: lab-bio` on a pod of physics, whose reason read "another member")."""
    other = Preemption("u1", "j", "physics", "lab-bio", "lab-bio/x", "r", 30, "entitlement")
    own = replace(other, reclaimer="physics", cause="queue")
    assert victim_annotations(other, POD, 0.0)["fairpool.io/preempted-by"] == "another member"
    assert victim_annotations(own, POD, 0.0)["fairpool.io/preempted-by"] == "physics"
    assert event_text(own)[2].startswith("Preempted by member physics for job lab-bio/x: ")
