"""Gangs with more pods than their size (a PodGroup's minMember) on the local control
plane: they start with as many pods as fit, the rest wait for room, and the running
pods are never deleted for the ones still waiting."""

from __future__ import annotations

import time

import pytest

from tests.integration.test_daemon import Pool, pool, wait_until
from tests.integration.test_daemon_ha import fast_lease

pytestmark = pytest.mark.integration
__all__ = ["pool"]  # the fixture, imported for this module's tests


def test_a_started_group_that_loses_a_pod_keeps_the_rest_running(pool: Pool) -> None:
    """Six 4-GPU pods of size 4 on 16 GPUs: four start, two wait. One running pod is
    deleted and its grace period holds its GPUs: the three others run on, and a waiting
    pod takes the freed room once the deleted pod is gone."""
    pool.add_member("a")
    pool.add_nodes("a", count=2, gpus=8)
    daemon = pool.daemon(pool.policy())
    for i in range(6):
        pool.pod("a", f"w{i}", gpus=4, gang="g", gang_size=4, grace=5)
    wait_until(lambda: len(pool.bound("a")) == 4, what="the group started with 4 pods")
    assert set(pool.bound("a")) == {"w0", "w1", "w2", "w3"}
    pool.core.delete_namespaced_pod("w0", pool.ns("a"), grace_period_seconds=5)
    started = daemon.cycles
    wait_until(lambda: daemon.cycles >= started + 6, what="cycles while w0 terminates")
    assert daemon.binder.wait_idle(10)
    assert set(pool.bound("a")) == {"w1", "w2", "w3"}, "the running pods stay"
    assert daemon.binder.undone == 0
    assert not pool.events("a", "GangBindUndone")
    wait_until(lambda: "w4" in pool.bound("a"), timeout=30, what="w4 in w0's room")
    time.sleep(1)
    assert set(pool.bound("a")) == {"w1", "w2", "w3", "w4"}


def test_a_standby_explains_a_started_groups_waiting_pod_as_the_leader_does(
    pool: Pool,
) -> None:
    """Six 4-GPU pods of size 4 where five fit: the sixth waits for room, and a standby
    (any replica answers `fairpool explain`) says why in the leader's words, not that the
    group waits for the rest of its pods."""
    pool.add_member("a")
    pool.add_nodes("a", count=3, gpus=8)
    lease = fast_lease(pool)
    leader = pool.daemon(pool.policy(), identity="leader", **lease)
    wait_until(lambda: leader.is_leader, timeout=10, what="it leads")
    standby = pool.daemon(pool.policy(), identity="standby", **lease)
    pool.pod("a", "other", gpus=4)
    wait_until(lambda: "other" in pool.bound("a"), what="other bound")
    for i in range(6):
        pool.pod("a", f"w{i}", gpus=4, gang="g", gang_size=4)
    wait_until(lambda: len(pool.bound("a")) == 6, what="five pods of the group bound")
    assert "w5" not in pool.bound("a")
    job = f"{pool.ns('a')}/g"
    said = wait_until(
        lambda: leader.last_decisions().explanations.get(job), what="the leader's sentence"
    )
    assert "all NVIDIA-H100-80GB-HBM3 on nodes it may use are taken" in said, said
    assert not standby.is_leader
    wait_until(
        lambda: standby.last_decisions().explanations.get(job) == said,
        what=f"the standby saying {said!r}",
    )


def test_a_started_group_whose_size_is_raised_keeps_its_pods_running(pool: Pool) -> None:
    """Six 4-GPU pods of size 4 with room for five: five start. Their gang size raised
    to 6 (as a PodGroup's minMember can be), the five run on and the sixth waits for
    room; they were deleted as a half-done bind, since five is short of six."""
    pool.add_member("a")
    pool.add_nodes("a", count=3, gpus=8)
    daemon = pool.daemon(pool.policy())
    pool.pod("a", "other", gpus=4)
    wait_until(lambda: len(pool.bound("a")) == 1, what="the other pod")
    for i in range(6):
        pool.pod("a", f"w{i}", gpus=4, gang="g", gang_size=4)
    wait_until(lambda: len(pool.bound("a")) == 6, what="the group started with 5 pods")
    started = set(pool.bound("a")) - {"other"}
    assert len(started) == 5
    for i in range(6):
        pool.core.patch_namespaced_pod(
            f"w{i}", pool.ns("a"), {"metadata": {"annotations": {"fairpool.io/gang-size": "6"}}}
        )
    cycles = daemon.cycles
    wait_until(lambda: daemon.cycles >= cycles + 6, what="cycles after the size changed")
    assert daemon.binder.wait_idle(10)
    assert daemon.binder.undone == 0
    assert not pool.events("a", "GangBindUndone")
    assert set(pool.bound("a")) == {"other", *started}, "the running pods stay"
