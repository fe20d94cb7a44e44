"""Gangs found partly bound (a scheduler killed between the binds of one gang): found in
the cache, their rest handed to the real engine, then finished or undone whole."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from scheduler import engine
from scheduler.engine.decisions import Bind, Decisions, Nomination, Preemption
from scheduler.k8s.cache import NODES, PODS, CacheView, ClusterCache
from scheduler.k8s.daemon import Daemon, DaemonConfig
from scheduler.k8s.gang_repair import (
    PartialGang,
    Repair,
    partial_gangs,
    plan,
    remainders,
    without_undone,
)
from tests.unit.test_k8s_cache import POLICY, node, pod

JOB = "physics/train"


def gpus(count: int) -> list[dict[str, Any]]:
    return [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": str(count)}}}]


def gang_pod(name: str, size: int = 3, node_name: str | None = None, **kwargs: Any) -> Any:
    return pod(
        name,
        node_name=node_name,
        phase="Running" if node_name else "Pending",
        labels={"fairpool.io/gang": "train"},
        annotations={"fairpool.io/gang-size": str(size)},
        containers=gpus(4),
        **kwargs,
    )


def filler(name: str, node_name: str, count: int) -> Any:
    return pod(name, node_name=node_name, phase="Running", containers=gpus(count))


def view_of(pods: list[Any]) -> CacheView:
    cache = ClusterCache()
    cache.replace(NODES, [node("n1"), node("n2")])
    cache.replace(PODS, pods)
    return cache.view(POLICY, now=1000.0)


def repair_cycle(pods: list[Any], busy: frozenset[str] = frozenset()) -> tuple[Repair, Decisions]:
    """One leader cycle's repair, as the daemon runs it."""
    view = view_of(pods)
    gangs = partial_gangs(view.snapshot.pending, view.pods, "fairpool", busy)
    decisions = engine.schedule(remainders(view.snapshot, gangs), POLICY)
    repair = plan(gangs, decisions)
    return repair, without_undone(decisions, repair)


def test_a_partly_bound_gang_is_found_with_its_bound_and_pending_pods() -> None:
    view = view_of([gang_pod("w1"), gang_pod("w0", node_name="n1"), gang_pod("w2"), pod("solo")])
    (gang,) = partial_gangs(view.snapshot.pending, view.pods, "fairpool")
    assert gang.job_id == JOB and gang.size == 3
    assert [p.name for p in gang.bound] == ["w0"]
    assert set(gang.pending) == {"uid-w1", "uid-w2"}
    assert gang.complete
    assert "gang physics/train was found partly bound (1 of 3 pods bound" in gang.describe()


def test_whole_gangs_pending_gangs_and_other_schedulers_pods_are_not_partial() -> None:
    whole = [gang_pod(f"w{i}", node_name="n1" if i < 2 else "n2") for i in range(3)]
    pending = [gang_pod(f"w{i}") for i in range(3)]
    for pods in (whole, pending):
        view = view_of(pods)
        assert partial_gangs(view.snapshot.pending, view.pods, "fairpool") == ()
    # A bound pod of the gang that is being deleted (an undo, a reclaim) holds nothing.
    deleting = gang_pod("w0", node_name="n1")
    deleting["metadata"]["deletionTimestamp"] = "2026-11-28T10:05:00Z"
    view = view_of([deleting, gang_pod("w1"), gang_pod("w2")])
    assert partial_gangs(view.snapshot.pending, view.pods, "fairpool") == ()


def test_rest_of_the_gang_that_fits_is_finished_where_the_engine_places_it() -> None:
    # w0 holds 4 of n1's 8 GPUs; the other two 4-GPU pods fit next to it and on n2.
    repair, decisions = repair_cycle(
        [gang_pod("w0", node_name="n1"), gang_pod("w1"), gang_pod("w2")]
    )
    assert [g.job_id for g in repair.finish] == [JOB] and repair.undo == ()
    binds = {b.pod_uid: b.node for b in decisions.binds}
    assert set(binds) == {"uid-w1", "uid-w2"}
    per_node = {"n1": 4}
    for target in binds.values():
        per_node[target] = per_node.get(target, 0) + 4
    assert max(per_node.values()) <= 8, "the bound pod's GPUs are counted"


def test_rest_of_the_gang_that_does_not_fit_is_undone_and_decides_nothing() -> None:
    pods = [
        gang_pod("w0", node_name="n1"),
        gang_pod("w1"),
        gang_pod("w2"),
        filler("other", "n2", 6),  # 4 + 2 GPUs free: room for one 4-GPU pod, not two
    ]
    repair, decisions = repair_cycle(pods)
    assert repair.finish == () and [g.job_id for g in repair.undo] == [JOB]
    assert [p.name for p in repair.undo[0].bound] == ["w0"]
    assert not any(b.job_id == JOB for b in decisions.binds)
    assert "scheduled whole again" in decisions.explanations[JOB]


def ran(body: Any, scheduled: str) -> Any:
    """The pod as the API server shows it once bound at `scheduled`."""
    body["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled}
    ]
    return body


def created(body: Any, at: str) -> Any:
    body["metadata"]["creationTimestamp"] = at
    return body


def test_a_gang_that_ran_whole_keeps_running_while_its_replacement_waits() -> None:
    # w2 failed after the gang started; its controller made a new w2, which does not fit
    # (n2 is full): the running pods are no half-done bind, and are never deleted for it.
    bound_at = "2026-11-28T10:00:05Z"
    pods = [
        ran(gang_pod("w0", node_name="n1"), bound_at),
        ran(gang_pod("w1", node_name="n1"), bound_at),
        created(gang_pod("w2"), "2026-11-29T08:00:00Z"),
        filler("other", "n2", 6),
    ]
    view = view_of(pods)
    (gang,) = partial_gangs(view.snapshot.pending, view.pods, "fairpool")
    assert gang.replacing
    repair, decisions = repair_cycle(pods)
    assert not repair
    assert not decisions.binds and JOB in decisions.explanations
    # Room on n2 again: the replacement binds like any pod, with no repair event.
    repair, decisions = repair_cycle(pods[:-1])
    assert not repair
    assert [(b.pod_uid, b.node) for b in decisions.binds] == [("uid-w2", "n2")]


def test_a_gang_whose_pods_were_all_created_before_its_binds_is_a_half_done_bind() -> None:
    # The same second counts as before: a scheduler killed between the binds.
    pods = [
        ran(gang_pod("w0", node_name="n1"), "2026-11-28T10:00:00Z"),
        gang_pod("w1"),
        gang_pod("w2"),
        filler("other", "n2", 6),
    ]
    repair, _ = repair_cycle(pods)
    assert [g.job_id for g in repair.undo] == [JOB] and not repair.undo[0].replacing


def test_gang_with_a_pod_missing_is_undone_without_asking_the_engine() -> None:
    view = view_of([gang_pod("w0", node_name="n1"), gang_pod("w1")])  # w2 is gone
    gangs = partial_gangs(view.snapshot.pending, view.pods, "fairpool")
    (gang,) = gangs
    assert not gang.complete
    assert JOB not in {j.job_id for j in remainders(view.snapshot, gangs).pending}
    assert plan(gangs, Decisions()).undo == gangs


def test_gang_with_a_bind_or_deletion_in_flight_is_left_to_the_binder() -> None:
    pods = [gang_pod("w0", node_name="n1"), gang_pod("w1"), gang_pod("w2")]
    repair, _ = repair_cycle(pods, busy=frozenset({"uid-w1"}))
    assert not repair


def test_repair_is_deterministic_whatever_order_the_pods_come_in() -> None:
    pods = [
        gang_pod("w0", node_name="n1"),
        gang_pod("w1"),
        gang_pod("w2"),
        filler("x", "n2", 2),
    ]
    first = repair_cycle(pods)
    for _ in range(3):
        pods = pods[1:] + pods[:1]
        assert repair_cycle(pods) == first


def test_without_undone_drops_binds_reclaims_and_holds_for_the_undone_gang() -> None:
    gang = PartialGang(JOB, 3, (), ("uid-w1", "uid-w2"))
    other = Bind("uid-x", "n1", "uid-x", "physics", "physics", False)
    decisions = Decisions(
        binds=(Bind("uid-w1", "n2", JOB, "physics", "physics", False), other),
        preemptions=(
            Preemption("uid-v", "uid-v", "lab-bio", "physics", JOB, "r", 20, "entitlement"),
        ),
        nominations=(Nomination(JOB, {"uid-w1": "n2"}),),
    )
    kept = without_undone(decisions, Repair(undo=(gang,)))
    assert kept.binds == (other,)
    assert kept.preemptions == () and kept.nominations == ()
    assert without_undone(decisions, Repair()) is decisions


def test_a_replacement_that_bound_stays_when_its_sibling_cannot_be_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two workers of a running gang of four were recreated; the daemon's cycle binds both
    # replacements, and one is deleted by its controller before its bind (404). Bound as
    # a gang, the other replacement was deleted too, "so that no part of the gang runs
    # alone", while the gang's first two workers ran on.
    bound_at = "2026-11-28T10:00:05Z"
    pods = [ran(gang_pod(f"w{i}", size=4, node_name="n1"), bound_at) for i in (0, 1)] + [
        created(gang_pod(f"w{i}", size=4), "2026-11-29T08:00:00Z") for i in (2, 3)
    ]

    def post(api: object, path: str, body: dict[str, Any], timeout: object) -> bytes:
        if body["metadata"]["name"] == "w3":
            raise ApiException(status=404, reason="Not Found")
        return b"{}"

    monkeypatch.setattr("scheduler.k8s.binder.post_json", post)
    configuration = k8s.Configuration()
    configuration.host = "http://127.0.0.1:9"  # nothing answers: every request is stubbed
    daemon = Daemon(k8s.ApiClient(configuration), POLICY, DaemonConfig(leader_elect=False))
    deleted: list[str] = []
    daemon.binder._delete = lambda pod: deleted.append(pod.name)  # type: ignore[method-assign]
    daemon.cache.replace(NODES, [node("n1"), node("n2")])
    daemon.cache.replace(PODS, pods)
    try:
        decisions = daemon.run_cycle()
        assert {b.pod_uid: b.node for b in decisions.binds} == {"uid-w2": "n2", "uid-w3": "n2"}
        assert daemon.binder.wait_idle(5)
    finally:
        for part in (daemon.binder, daemon.evictor, daemon.nomination_writer, daemon.recorder):
            part.close()
        daemon.metrics.close()
    assert deleted == [] and daemon.binder.undone == 0
    assert daemon.cache.is_assumed("uid-w2")


def test_a_gang_whose_undo_ends_while_the_cycle_reads_the_cache_is_not_repaired_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The binder undoes a gang (its deletions in flight) while a cycle starts: the cycle
    # copies the cache, in which the gang is still partly bound, and the undo ends while
    # it does. The in-flight set read after the copy was empty, so the cycle took the
    # gang for one a crash left partly bound and repaired it a second time.
    pods = [gang_pod("w0", size=2, node_name="n1"), gang_pod("w1", size=2)]
    deletes: list[str] = []
    monkeypatch.setattr(
        "scheduler.k8s.binder.post_json", lambda *a, **k: pytest.fail("no bind expected")
    )
    configuration = k8s.Configuration()
    configuration.host = "http://127.0.0.1:9"  # nothing answers: every request is stubbed
    daemon = Daemon(k8s.ApiClient(configuration), POLICY, DaemonConfig(leader_elect=False))
    daemon.binder._delete = lambda pod: deletes.append(pod.name)  # type: ignore[method-assign]
    daemon.cache.replace(NODES, [node("n1"), node("n2")])
    daemon.cache.replace(PODS, pods)
    daemon.binder._in_flight.update({"uid-w0", "uid-w1"})
    copy = daemon.cache.view

    def view_while_the_undo_ends(*args: Any, **kwargs: Any) -> CacheView:
        taken = copy(*args, **kwargs)
        daemon.binder._in_flight.clear()
        return taken

    monkeypatch.setattr(daemon.cache, "view", view_while_the_undo_ends)
    try:
        decisions = daemon.run_cycle()
        daemon.binder.wait_idle(5)
        repaired = daemon.metrics.gang_repairs.collect()
    finally:
        for part in (daemon.binder, daemon.evictor, daemon.nomination_writer, daemon.recorder):
            part.close()
        daemon.metrics.close()
    assert deletes == [] and not decisions.binds
    assert not [s for m in repaired for s in m.samples if s.value], "no repair counted"


def test_a_gang_with_more_pods_than_its_size_starts_with_its_size_and_keeps_it() -> None:
    # Four 4-GPU pods of a gang of size 2 (a PodGroup's minMember): 8 + 2 GPUs free hold
    # two. The gang starts with them (it waited for room for all four), and its other
    # pods, still waiting, are no half-done bind: its running pods are never deleted.
    pods = [gang_pod(f"w{i}", size=2) for i in range(4)] + [filler("other", "n2", 6)]
    repair, decisions = repair_cycle(pods)
    assert not repair
    assert sorted((b.pod_uid, b.node) for b in decisions.binds) == [
        ("uid-w0", "n1"),
        ("uid-w1", "n1"),
    ]
    started = [gang_pod("w0", 2, "n1"), gang_pod("w1", 2, "n1"), *pods[2:]]
    repair, decisions = repair_cycle(started)
    assert not repair and repair.replacing == {JOB}
    assert not decisions.binds
    # Room on n2 again: the rest bind as room allows, one pod at a time if need be.
    repair, decisions = repair_cycle([*started[:-1], filler("other", "n2", 4)])
    assert not repair
    assert [(b.pod_uid, b.node) for b in decisions.binds] == [("uid-w2", "n2")]


def test_a_half_done_bind_of_a_bigger_gang_is_finished_once_it_reaches_its_size() -> None:
    # Size 2, three pods, one bound before a crash: one more makes the gang whole.
    pods = [
        gang_pod("w0", 2, "n1"),
        gang_pod("w1", 2),
        gang_pod("w2", 2),
        filler("other", "n2", 8),
    ]
    repair, decisions = repair_cycle(pods)
    assert [g.job_id for g in repair.finish] == [JOB] and repair.undo == ()
    assert [b.pod_uid for b in decisions.binds] == ["uid-w1"]


def test_a_bigger_gang_that_started_and_lost_a_pod_keeps_running_while_it_terminates() -> None:
    # Size 2, four pods: w0 and w1 started it on n1, w2 and w3 wait (n2 is full). w0 is
    # deleted and its grace period holds its GPUs: w1 runs on, not undone as a half-done
    # bind (it was, for w2 and w3, which were created with the gang, before its binds).
    w0 = gang_pod("w0", 2, "n1")
    w0["metadata"]["deletionTimestamp"] = "2026-11-28T10:05:00Z"
    pods = [w0, gang_pod("w1", 2, "n1"), gang_pod("w2", 2), gang_pod("w3", 2)]
    pods.append(filler("other", "n2", 6))
    view = view_of(pods)
    (gang,) = partial_gangs(view.snapshot.pending, view.pods, "fairpool")
    assert (len(gang.bound), gang.gone, gang.ran_whole) == (1, 1, True)
    repair, decisions = repair_cycle(pods)
    assert not repair and repair.replacing == {JOB}
    assert not decisions.binds
    # w0 gone, its room is free: w2 binds there and the gang has its size again.
    repair, decisions = repair_cycle(pods[1:])
    assert repair.undo == ()
    assert [(b.pod_uid, b.node) for b in decisions.binds] == [("uid-w2", "n1")]


def test_a_half_done_bind_whose_pods_since_failed_is_still_undone() -> None:
    # Size 3: w0 was bound and failed, w1 is bound, then the scheduler died. Two pods
    # were ever bound, fewer than the gang's size: still a half-done bind.
    w0 = gang_pod("w0", 3, "n1")
    w0["status"]["phase"] = "Failed"
    pods = [w0, gang_pod("w1", 3, "n1"), gang_pod("w2", 3), gang_pod("w3", 3)]
    pods.append(filler("other", "n2", 8))
    pods.append(filler("more", "n1", 4))
    repair, _ = repair_cycle(pods)
    assert [g.job_id for g in repair.undo] == [JOB]
    assert repair.undo[0].gone == 1 and not repair.undo[0].ran_whole


def batch(body: Any, label: str) -> Any:
    """The pod as fairpool's gang bind annotated it (`fairpool.io/gang-bind`)."""
    body["metadata"]["annotations"]["fairpool.io/gang-bind"] = label
    return body


def test_a_group_whose_size_was_raised_after_it_started_keeps_running() -> None:
    # Bound whole as a batch of two (its size then), w0 and w1 run; its size is now 3
    # and w2, created with it, waits for room (n2 is full): no half-done bind, its
    # running pods stay. Without the batch it was undone, both running pods deleted.
    pods = [batch(gang_pod(f"w{k}", 3, "n1"), "b1/2") for k in range(2)]
    pods += [gang_pod("w2", 3), filler("other", "n2", 8), filler("more", "n1", 0)]
    view = view_of(pods)
    (gang,) = partial_gangs(view.snapshot.pending, view.pods, "fairpool")
    assert (len(gang.bound), gang.batch_whole, gang.ran_whole) == (2, True, True)
    repair, _ = repair_cycle(pods)
    assert repair.undo == () and repair.replacing == {JOB}


def test_a_half_done_batch_is_undone_once_an_earlier_batchs_pods_are_gone() -> None:
    # Batch b2 of three bound w3 only; w0 and w1 of batch b1 are being deleted (an
    # earlier undo). No batch was bound whole, but the count (one bound, two going) makes
    # the gang's size: kept while they terminate (`PartialGang.ran_whole`), undone once
    # they are gone.
    old = [batch(gang_pod(f"w{k}", 3, "n1"), "b1/3") for k in range(2)]
    for body in old:
        body["metadata"]["deletionTimestamp"] = "2026-11-28T10:05:00Z"
    rest = [batch(gang_pod("w3", 3, "n2"), "b2/3"), gang_pod("w4", 3), gang_pod("w5", 3)]
    rest += [filler("other", "n2", 4), filler("more", "n1", 8)]
    view = view_of([*old, *rest])
    (gang,) = partial_gangs(view.snapshot.pending, view.pods, "fairpool")
    assert (len(gang.bound), gang.gone, gang.batch_whole, gang.ran_whole) == (1, 2, False, True)
    repair, _ = repair_cycle(rest)
    assert [g.job_id for g in repair.undo] == [JOB]
