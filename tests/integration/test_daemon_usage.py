"""The daemon's usage history on the local control plane: kept in its ConfigMap across a
clean restart and across a leader killed with SIGKILL, read back decayed, never reset.

Both phases end the usage before the handover (the pod is deleted), so from then on the
history only decays: what a daemon reading the ConfigMap must hold at any later instant
is exactly `stored * 0.5 ** ((now - validAt) / half-life)`, whatever its cycle timing.
A daemon that had not read it would hold nothing (restart) or its own copy (the standby,
accumulated from its own cycles, which differs by far more than the 1e-6 allowed).
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from scheduler.k8s.usage_history import StoredHistory, UsageHistoryStore, decode
from tests.controlplane.cluster import ControlPlane
from tests.integration.test_daemon import Pool, pool, wait_until
from tests.integration.test_daemon_ha import fast_lease, start_fairpool_run

pytestmark = pytest.mark.integration
__all__ = ["pool"]

HALF_LIFE_S = 60.0
CONFIGMAP = "fairpool-usage-history"
T0 = 1_790_000_000.0


def _stored(pool: Pool, namespace: str) -> StoredHistory | None:
    try:
        cm = pool.core.read_namespaced_config_map(CONFIGMAP, namespace)
    except k8s.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return decode(cm.data, "test")


def _decayed(stored: StoredHistory, member: str, now: float) -> float:
    return stored.gpu_seconds[member] * 0.5 ** ((now - stored.valid_at) / HALF_LIFE_S)


def _run_and_delete(
    pool: Pool, member: str, name: str, gpus: int, seconds: float
) -> tuple[float, float]:
    """Run one pod for about `seconds`, delete it; returns how long it was bound and
    when it was seen gone."""
    pool.pod(member, name, gpus=gpus)
    wait_until(lambda: name in pool.bound(member), what=f"{name} bound")
    bound = time.time()
    time.sleep(seconds)
    pool.core.delete_namespaced_pod(name, pool.ns(member), grace_period_seconds=0)
    wait_until(lambda: not pool.pods(member), what=f"{name} gone")
    gone = time.time()
    return gone - bound, gone


def test_a_restarted_daemon_reads_the_history_back_decayed(pool: Pool) -> None:
    pool.add_member("a")
    pool.add_member("b")
    pool.add_nodes("a", count=1, gpus=8)
    policy = pool.policy(usageHalfLifeHours=HALF_LIFE_S / 3600)
    settings: dict[str, Any] = {**fast_lease(pool), "usage_write_seconds": 1.0}
    first = pool.daemon(policy, identity="first", **settings)
    wait_until(lambda: first.is_leader, timeout=10, what="first leads")
    ran, gone = _run_and_delete(pool, "a", "train", gpus=4, seconds=8.0)
    wait_until(lambda: not first.snapshot().running, what="the daemon saw the pod go")
    first.stop()  # a clean stop writes the history up to now
    stored = _stored(pool, pool.ns("a"))
    assert stored is not None, "no usage history written"
    # What 4 GPUs for `ran` seconds weigh, decayed to validAt. The daemon counts from the
    # cycle that bound the pod to the first cycle after it saw it gone; the test's own
    # observations of both are within about a second of those (0.2 s polling, 0.5 s
    # cycles, watch latency): at most 4 GPUs x 1 s apart.
    expected = 4 * HALF_LIFE_S / math.log(2) * (1 - 0.5 ** (ran / HALF_LIFE_S))
    expected *= 0.5 ** ((stored.valid_at - gone) / HALF_LIFE_S)
    assert stored.gpu_seconds["a"] == pytest.approx(expected, abs=4.0)
    assert "b" not in stored.gpu_seconds  # used nothing: no entry

    time.sleep(3)
    second = pool.daemon(policy, identity="second", **settings)
    wait_until(lambda: second.is_leader and second.cycles > 0, timeout=10, what="second leads")
    wait_until(lambda: second.snapshot().now > stored.valid_at + 3, what="a cycle")
    snapshot = second.snapshot()
    got = snapshot.usage_history["a"]
    assert got == pytest.approx(_decayed(stored, "a", snapshot.now), rel=1e-6)
    assert got < stored.gpu_seconds["a"] * 0.5 ** (3 / HALF_LIFE_S) + 1e-9  # decayed
    assert second.usage.writes >= 1


def test_a_new_leader_goes_on_from_the_killed_leaders_history(pool: Pool, tmp_path: Path) -> None:
    pool.add_member("a")
    pool.add_member("b")
    pool.add_nodes("a", count=1, gpus=8)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(pool.policy_text(usageHalfLifeHours=HALF_LIFE_S / 3600))
    log = tmp_path / "fairpool.log"
    leader = start_fairpool_run(
        pool.plane,
        policy_file,
        log,
        "--leader-elect",
        "--lease-namespace",
        pool.ns("a"),
        "--lease-name",
        "fairpool-test",
        "--identity",
        "killed",
        "--usage-write-seconds",
        "1",
    )
    try:
        lease_api = k8s.CoordinationV1Api(pool.plane.admin)

        def holder() -> str:
            try:
                lease = lease_api.read_namespaced_lease("fairpool-test", pool.ns("a"))
            except k8s.ApiException:
                return ""
            return str((lease.spec and lease.spec.holder_identity) or "")

        wait_until(lambda: holder() == "killed", timeout=30, what="the process leads")
        # The standby starts before any usage: its own copy is built from its own cycles.
        standby = pool.daemon(
            pool.policy(usageHalfLifeHours=HALF_LIFE_S / 3600),
            identity="standby",
            leader_elect=True,
            lease_namespace=pool.ns("a"),
            lease_name="fairpool-test",
            lease_seconds=15.0,
            renew_deadline=10.0,
            retry_seconds=0.5,
            usage_write_seconds=1.0,
        )
        _run_and_delete(pool, "b", "train", gpus=2, seconds=6.0)
        time.sleep(2.0)  # past the next periodic write
        os.kill(leader.pid, signal.SIGKILL)
        leader.wait(timeout=10)
        killed_at = time.time()
        stored = _stored(pool, pool.ns("a"))
        assert stored is not None and stored.gpu_seconds.get("b", 0) > 0, log.read_text()[-3000:]
        # Writes every 1 s from the scheduling loop (cycles every 1 s when idle): the
        # last one is at most about 2 s old when the process dies.
        assert killed_at - stored.valid_at < 3.0
        own = standby.snapshot()
        assert own.usage_history.get("b", 0) > 0, "the standby keeps its own copy meanwhile"

        wait_until(lambda: standby.is_leader, timeout=25, what="the standby takes over")
        wait_until(lambda: standby.cycles > 0 and standby.usage.writes > 0, what="a write")
        snapshot = standby.snapshot()
        got = snapshot.usage_history["b"]
        assert got == pytest.approx(_decayed(stored, "b", snapshot.now), rel=1e-6)
        # Not the standby's own copy: that one came from its own cycles.
        assert own.usage_history["b"] != pytest.approx(_decayed(stored, "b", own.now), rel=1e-6)
    finally:
        if leader.poll() is None:
            leader.kill()


def test_a_deposed_leaders_late_write_never_overwrites_the_new_leaders(
    control_plane: ControlPlane, namespace: str
) -> None:
    """Two stores on one ConfigMap, as an old and a new leader: each write goes over the
    version its writer last read or wrote, so the old leader's write after the new
    leader's read is refused (409) and the stored history stays the new leader's."""
    old = UsageHistoryStore(control_plane.scheduler, namespace, CONFIGMAP)
    new = UsageHistoryStore(control_plane.scheduler, namespace, CONFIGMAP)
    assert old.load() is None  # none yet: the first write creates it
    assert old.save(StoredHistory(T0, {"a": 100.0}))

    assert new.load() == StoredHistory(T0, {"a": 100.0})  # the new leader reads, ...
    assert new.save(StoredHistory(T0 + 60, {"a": 80.0}))  # ... then writes
    # The old leader's write, sent before it knew it was deposed, lands later.
    assert not old.save(StoredHistory(T0 + 30, {"a": 90.0, "b": 5.0}))
    assert new.load() == StoredHistory(T0 + 60, {"a": 80.0})

    # A write landing between the new leader's read and its write (the old leader's,
    # just before it stopped) costs the new leader one write, not its history.
    assert new.load() == StoredHistory(T0 + 60, {"a": 80.0})
    old.load()
    assert old.save(StoredHistory(T0 + 61, {"a": 1.0}))
    assert not new.save(StoredHistory(T0 + 90, {"a": 70.0}))
    assert new.save(StoredHistory(T0 + 120, {"a": 60.0}))
    assert new.load() == StoredHistory(T0 + 120, {"a": 60.0})

    # Deleted by hand meanwhile: the next write after the refused one creates it again.
    k8s.CoreV1Api(control_plane.admin).delete_namespaced_config_map(CONFIGMAP, namespace)
    assert not new.save(StoredHistory(T0 + 150, {"a": 50.0}))
    assert new.save(StoredHistory(T0 + 180, {"a": 40.0}))
    assert old.load() == StoredHistory(T0 + 180, {"a": 40.0})


def test_a_configmap_of_the_same_name_that_fairpool_did_not_write_is_left_alone(
    control_plane: ControlPlane, namespace: str
) -> None:
    """Another program's ConfigMap under the history's name: its data was replaced by
    the history at the first write (and its labels by fairpool's)."""
    admin = k8s.CoreV1Api(control_plane.admin)
    theirs = {"app.conf": "retries = 3\n"}
    admin.create_namespaced_config_map(
        namespace,
        {"metadata": {"name": CONFIGMAP, "labels": {"app": "other"}}, "data": theirs},  # type: ignore[arg-type]
    )
    store = UsageHistoryStore(control_plane.scheduler, namespace, CONFIGMAP)
    assert store.load() is None
    assert not store.save(StoredHistory(T0, {"a": 100.0}))
    kept = admin.read_namespaced_config_map(CONFIGMAP, namespace)
    assert (kept.data, kept.metadata.labels) == (theirs, {"app": "other"})
    assert store.foreign is not None and CONFIGMAP in store.foreign
    assert "--usage-history-configmap" in store.foreign

    # Fairpool's own (written by it, or by an earlier version, or hand-edited to a
    # history that does not parse) is still written over.
    admin.delete_namespaced_config_map(CONFIGMAP, namespace)
    admin.create_namespaced_config_map(
        namespace,
        {"metadata": {"name": CONFIGMAP}, "data": {"usage-history.json": "{bad"}},  # type: ignore[arg-type]
    )
    assert store.load() is None and store.foreign is None
    assert store.save(StoredHistory(T0, {"a": 100.0}))
    assert store.load() == StoredHistory(T0, {"a": 100.0})
