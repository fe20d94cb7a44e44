"""Nominations on the pods (`status.nominatedNodeName`) and gangs bound all or none: what
the cache reads back, when a nomination is written, kept, dropped or cleared, and which
pods of a gang not bound whole are deleted."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from kubernetes import client as k8s

from scheduler.engine.decisions import Bind, Decisions, Nomination, Preemption
from scheduler.k8s.binder import BindResult, gang_undo
from scheduler.k8s.cache import NODES, PODS, CacheView, ClusterCache
from scheduler.k8s.daemon import Daemon, DaemonConfig
from scheduler.k8s.nominator import (
    Nominations,
    NominationWrite,
    NominationWriter,
    cleared_on_bind,
)
from scheduler.k8s.objects import pod_info
from tests.unit.test_k8s_cache import POLICY, node, pod

GANG = {"labels": {"fairpool.io/gang": "train"}, "annotations": {"fairpool.io/gang-size": "2"}}
JOB = "physics/train"


def gang_pod(name: str, nominated: str = "", **kwargs: Any) -> dict[str, Any]:
    body = pod(name, **GANG, **kwargs)  # type: ignore[arg-type]
    if nominated:
        body["status"]["nominatedNodeName"] = nominated
    return body


def victim(name: str, node_name: str, terminating: bool) -> dict[str, Any]:
    body = pod(name, namespace="lab-bio", node_name=node_name, phase="Running")
    if terminating:
        body["metadata"]["deletionTimestamp"] = "2026-11-28T10:05:00Z"
    return body


def cache_with(pods: list[dict[str, Any]], nodes: tuple[str, ...] = ("n1", "n2")) -> ClusterCache:
    cache = ClusterCache()
    cache.replace(NODES, [node(n) for n in nodes])
    cache.replace(PODS, pods)
    return cache


def view(cache: ClusterCache, nominations: Nominations, now: float) -> CacheView:
    return cache.view(POLICY, nominations.decided, now=now)


def writes_of(writes: list[NominationWrite]) -> dict[str, str]:
    return {w.pod.name: w.node for w in writes}


# --- the cache reads nominations from the pods ------------------------------------------


def test_cache_reads_nominated_node_of_pending_pods_into_the_job() -> None:
    cache = cache_with([gang_pod("w0", "n2"), gang_pod("w1", "n2"), pod("single")])
    jobs = {j.job_id: j for j in cache.view(POLICY).snapshot.pending}
    assert jobs[JOB].nominated_nodes == {"uid-w0": "n2", "uid-w1": "n2"}
    assert jobs["uid-single"].nominated_nodes == {}


def test_nomination_of_a_node_that_is_gone_is_left_out() -> None:
    cache = cache_with([gang_pod("w0", "n2"), gang_pod("w1", "n9")])
    (job,) = cache.view(POLICY).snapshot.pending
    assert job.nominated_nodes == {"uid-w0": "n2"}
    cache.apply(NODES, "DELETED", node("n2"))
    (job,) = cache.view(POLICY).snapshot.pending
    assert job.nominated_nodes == {}


def test_leader_decisions_override_what_the_pods_say() -> None:
    cache = cache_with([gang_pod("w0", "n2"), gang_pod("w1", "n2")])
    (job,) = cache.view(POLICY, {JOB: {}}).snapshot.pending
    assert job.nominated_nodes == {}, "a dropped nomination is not read back meanwhile"
    (job,) = cache.view(POLICY, {JOB: {"uid-w0": "n1", "uid-w1": "n1"}}).snapshot.pending
    assert job.nominated_nodes == {"uid-w0": "n1", "uid-w1": "n1"}


def test_bound_pod_nomination_is_not_read() -> None:
    bound = gang_pod("w0", "n2", node_name="n1", phase="Running")
    cache = cache_with([bound, gang_pod("w1", "n2")])
    (job,) = cache.view(POLICY).snapshot.pending
    assert job.nominated_nodes == {"uid-w1": "n2"}


# --- when nominations are written, kept, dropped ----------------------------------------


def reclaim_decisions() -> Decisions:
    preemption = Preemption("uid-v", "uid-v", "lab-bio", "physics", JOB, "r", 20, "entitlement")
    nomination = Nomination(JOB, {"uid-w0": "n2", "uid-w1": "n2"})
    return Decisions(preemptions=(preemption,), nominations=(nomination,))


def test_reclaim_writes_the_nomination_on_each_pod_once() -> None:
    cache = cache_with([gang_pod("w0"), gang_pod("w1"), victim("v", "n2", terminating=False)])
    noms = Nominations()
    v = view(cache, noms, now=100.0)
    writes = noms.update(v.snapshot, reclaim_decisions(), set(), v.pods)
    assert writes_of(writes) == {"w0": "n2", "w1": "n2"}
    assert noms
    # The watch has not shown the status nor the eviction yet: the engine still sees the
    # hold (from the leader's decision) and it is not dropped; the pods still have to say
    # it (the writer does not send a write again while it is on its way).
    v = view(cache, noms, now=101.0)
    (job,) = v.snapshot.pending
    assert job.nominated_nodes == {"uid-w0": "n2", "uid-w1": "n2"}
    writes = noms.update(v.snapshot, Decisions(), set(), v.pods)
    assert writes_of(writes) == {"w0": "n2", "w1": "n2"}
    # The watch catches up: the pods say it, the victim terminates.
    for name in ("w0", "w1"):
        cache.apply(PODS, "MODIFIED", gang_pod(name, "n2"))
    cache.apply(PODS, "MODIFIED", victim("v", "n2", terminating=True))
    v = view(cache, noms, now=105.0)
    assert noms.update(v.snapshot, Decisions(), set(), v.pods) == []


def test_restarted_leader_keeps_nomination_while_victims_terminate_then_drops_it() -> None:
    cache = cache_with(
        [gang_pod("w0", "n2"), gang_pod("w1", "n2"), victim("v", "n2", terminating=True)]
    )
    noms = Nominations()  # a new process: nothing in memory
    v = view(cache, noms, now=100.0)
    (job,) = v.snapshot.pending
    assert job.nominated_nodes == {"uid-w0": "n2", "uid-w1": "n2"}
    assert noms.update(v.snapshot, Decisions(), set(), v.pods) == []
    assert not noms, "kept as the pods say it, nothing decided anew"
    # The victim is gone but the job did not bind (someone else took the node): stale.
    cache.apply(PODS, "DELETED", victim("v", "n2", terminating=True))
    v = view(cache, noms, now=110.0)
    writes = noms.update(v.snapshot, Decisions(), set(), v.pods)
    assert writes_of(writes) == {"w0": "", "w1": ""}
    (job,) = view(cache, noms, now=111.0).snapshot.pending
    assert job.nominated_nodes == {}, "dropped before the watch shows the cleared status"


def test_nomination_whose_victims_never_terminate_expires() -> None:
    cache = cache_with([gang_pod("w0"), gang_pod("w1"), victim("v", "n2", terminating=False)])
    noms = Nominations(victim_wait=30.0)
    v = view(cache, noms, now=100.0)
    noms.update(v.snapshot, reclaim_decisions(), set(), v.pods)
    for name in ("w0", "w1"):
        cache.apply(PODS, "MODIFIED", gang_pod(name, "n2"))
    v = view(cache, noms, now=129.0)
    assert noms.update(v.snapshot, Decisions(), set(), v.pods) == []
    v = view(cache, noms, now=131.0)
    writes = noms.update(v.snapshot, Decisions(), set(), v.pods)
    assert writes_of(writes) == {"w0": "", "w1": ""}


def test_nomination_of_a_vanished_node_is_cleared() -> None:
    cache = cache_with(
        [gang_pod("w0", "n9"), gang_pod("w1", "n2"), victim("v", "n2", terminating=True)]
    )
    noms = Nominations()
    v = view(cache, noms, now=100.0)
    assert writes_of(noms.update(v.snapshot, Decisions(), set(), v.pods)) == {"w0": ""}


def test_bound_job_forgets_its_nomination_and_clears_only_pods_bound_elsewhere() -> None:
    cache = cache_with([gang_pod("w0"), gang_pod("w1"), victim("v", "n2", terminating=False)])
    noms = Nominations()
    v = view(cache, noms, now=100.0)
    noms.update(v.snapshot, reclaim_decisions(), set(), v.pods)
    v = view(cache, noms, now=101.0)
    assert noms.update(v.snapshot, Decisions(), {JOB}, v.pods) == []
    assert JOB not in noms.decided and JOB not in noms.victims
    nominated = pod_info(gang_pod("w0", "n2"))
    assert cleared_on_bind(nominated, "n2") is None
    assert cleared_on_bind(nominated, "n1") == NominationWrite(nominated, "")
    assert cleared_on_bind(pod_info(gang_pod("w1")), "n1") is None


def test_losing_the_lease_forgets_decisions() -> None:
    cache = cache_with([gang_pod("w0"), gang_pod("w1"), victim("v", "n2", terminating=False)])
    noms = Nominations()
    v = view(cache, noms, now=100.0)
    noms.update(v.snapshot, reclaim_decisions(), set(), v.pods)
    noms.reset()
    assert not noms and noms.decided == {} and noms.victims == {}


# --- gangs: all or none -----------------------------------------------------------------


def result(name: str, outcome: str, bound_node: str, detail: str = "") -> BindResult:
    info = pod_info(gang_pod(name))
    bind = Bind(info.uid, "n1", JOB, "physics", "physics", reclaimable=False)
    return BindResult(bind, info, outcome, detail, 0.01, bound_node)  # type: ignore[arg-type]


def test_gang_bound_whole_is_left_alone() -> None:
    assert gang_undo([result("w0", "bound", "n1"), result("w1", "bound", "n1")]) is None


def test_gang_with_a_pod_gone_deletes_the_bound_ones_naming_the_reason() -> None:
    undo = gang_undo(
        [
            result("w2", "bound", "n1"),
            result("w1", "gone", "", "pod deleted before it was bound"),
            result("w0", "bound", "n1"),
        ]
    )
    assert undo is not None
    assert [r.pod.name for r in undo.delete] == ["w0", "w2"]
    assert undo.job_id == JOB
    assert undo.reason == "pod physics/w1: pod deleted before it was bound"


def test_gang_bind_failed_for_good_is_undone_too() -> None:
    undo = gang_undo([result("w0", "bound", "n1"), result("w1", "failed", "", "403 forbidden")])
    assert undo is not None and [r.pod.name for r in undo.delete] == ["w0"]
    assert "403 forbidden" in undo.reason


def test_pod_found_bound_by_an_earlier_attempt_counts_as_bound() -> None:
    whole = [result("w0", "bound", "n1"), result("w1", "gone", "n2", "pod already bound to n2")]
    assert gang_undo(whole) is None
    undo = gang_undo([*whole, result("w2", "gone", "", "pod deleted before it was bound")])
    assert undo is not None and [r.pod.name for r in undo.delete] == ["w0", "w1"]


def test_gang_with_nothing_bound_has_nothing_to_delete() -> None:
    failed = [result("w0", "failed", "", "x"), result("w1", "gone", "", "y")]
    assert gang_undo(failed) is None


# --- only the leader writes them ---------------------------------------------------------


def test_a_nomination_queued_while_leading_is_not_written_once_the_lease_is_lost() -> None:
    # Writes wait in the writer's pool behind slow ones; a replica that lost the lease
    # meanwhile would overwrite what the new leader nominates.
    configuration = k8s.Configuration()
    configuration.host = "http://127.0.0.1:9"  # nothing answers: every request is stubbed
    leading = [True]
    writer = NominationWriter(k8s.ApiClient(configuration), workers=1, may_write=lambda: leading[0])
    slow = threading.Event()
    sent: list[str] = []

    def patch_status(name: str, namespace: str, body: Any, **kwargs: Any) -> Any:
        sent.append(name)
        slow.wait(5)
        return SimpleNamespace(data=b"{}")

    writer._core.patch_namespaced_pod_status = patch_status  # type: ignore[method-assign]
    first, second = (pod_info(gang_pod(name)) for name in ("w0", "w1"))
    try:
        assert writer.submit(NominationWrite(first, "n1"))
        assert writer.submit(NominationWrite(second, "n1"))
        leading[0] = False
        slow.set()
        writer._pool.submit(lambda: None).result(5)  # one worker: after the second write
    finally:
        writer.close()
    assert sent == ["w0"]
    # Not written: a later leader's cycle sends it again.
    assert writer._sent.keys() == {"uid-w0"}


def test_the_daemon_writes_nominations_only_while_it_leads() -> None:
    configuration = k8s.Configuration()
    configuration.host = "http://127.0.0.1:9"
    daemon = Daemon(k8s.ApiClient(configuration), POLICY, DaemonConfig(leader_elect=True))
    try:
        may_write = daemon.nomination_writer.may_write
        assert may_write is not None and not may_write()  # the lease was never taken
    finally:
        for part in (daemon.binder, daemon.evictor, daemon.nomination_writer, daemon.recorder):
            part.close()
        daemon.metrics.close()
