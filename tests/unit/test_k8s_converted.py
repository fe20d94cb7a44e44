"""The cache's kept conversions (scheduler/k8s/converted.py): after any sequence of
informer events, binds assumed and forgotten, PodGroup, priority and policy changes, a
view equals the one converted from scratch by `running_pod` and `pending_jobs`; and an
unchanged pod or job is not converted again."""

from __future__ import annotations

import random
from typing import Any

from policies.loader import load_policy
from policies.model import Policy
from scheduler.engine.snapshot import PendingJob, RunningPod
from scheduler.k8s.cache import NODES, POD_GROUPS, PODS, PRIORITY_CLASSES, CacheView, ClusterCache
from scheduler.k8s.converted import recorded_nominations
from scheduler.k8s.objects import Unschedulable, pending_jobs, running_pod
from tests.examples import examples
from tests.unit.test_k8s_cache import POLICY, node, pod

MEMBERS = ("physics", "lab-bio", "uni-north", "stray")
"""Namespaces; `stray` belongs to no member of the policy (its pods are rejected)."""


def _without_physics() -> Policy:
    policy = load_policy()
    members = [m for m in policy.spec.members if m.name != "physics"]
    return policy.model_copy(update={"spec": policy.spec.model_copy(update={"members": members})})


OTHER_POLICY = _without_physics()
"""The demo policy without `physics`: its pods turn from jobs into rejected ones."""


def from_scratch(
    cache: ClusterCache, policy: Policy, decided: dict[str, dict[str, str]]
) -> tuple[tuple[RunningPod, ...], tuple[PendingJob, ...], tuple[Unschedulable, ...]]:
    """The view as it was computed before conversions were kept: every pod, every time."""
    pods = {p.uid: p for p in cache.pods()}
    assumed = dict(cache._assumed)
    priorities = cache._priorities
    running: list[RunningPod] = []
    waiting = []
    for info in pods.values():
        guess = assumed.get(info.uid)
        if guess is not None and not info.terminal:
            running.append(
                running_pod(info, policy, priorities, cache.scheduler_name, guess.node, guess.at)
            )
        elif info.takes_resources():
            running.append(running_pod(info, policy, priorities, cache.scheduler_name))
        elif info.waits_for(cache.scheduler_name):
            waiting.append(info)
    held = recorded_nominations(waiting, {n.name for n in cache.nodes()}, decided)
    jobs, rejected = pending_jobs(
        waiting,
        policy,
        priorities,
        dict(cache._pod_groups),
        held,
        dict(cache._pod_group_resources),
    )
    running.sort(key=lambda p: (p.node, p.uid))
    return tuple(running), jobs, rejected


def random_pod(rng: random.Random, i: int) -> dict[str, Any]:
    namespace = rng.choice(MEMBERS)
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    spec: dict[str, Any] = {}
    kind = rng.random()
    if kind < 0.2:
        labels["scheduling.x-k8s.io/pod-group"] = f"pg{rng.randrange(3)}"
    elif kind < 0.4:
        labels["fairpool.io/gang"] = f"g{rng.randrange(3)}"
        if rng.random() < 0.8:
            annotations["fairpool.io/gang-size"] = str(rng.randrange(1, 4))
    if rng.random() < 0.2:
        annotations["fairpool.io/reclaims"] = str(rng.randrange(4))
        annotations["fairpool.io/reclaimed-at"] = f"2026-11-28T1{rng.randrange(10)}:00:00Z"
    if rng.random() < 0.2:
        annotations["fairpool.io/checkpointable"] = rng.choice(("true", "false", "maybe"))
    if rng.random() < 0.3:
        spec["priorityClassName"] = rng.choice(("high", "low"))
    phase, node_name = "Pending", None
    if rng.random() < 0.3:
        phase, node_name = rng.choice(("Running", "Succeeded")), f"n{rng.randrange(4)}"
    body = pod(
        f"p{i}",
        namespace=namespace,
        node_name=node_name,
        phase=phase,
        labels=labels,
        annotations=annotations,
        **spec,
    )
    body["metadata"]["creationTimestamp"] = f"2026-11-28T10:{rng.randrange(60):02d}:00Z"
    if rng.random() < 0.1:
        body["status"]["nominatedNodeName"] = f"n{rng.randrange(5)}"
    if rng.random() < 0.05:
        body["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "many"
    return body


def step(cache: ClusterCache, rng: random.Random, bodies: dict[str, dict[str, Any]]) -> None:
    """One random change of what the cache holds."""
    roll = rng.random()
    uids = sorted(bodies)
    if roll < 0.35 or not uids:
        body = random_pod(rng, len(bodies) + rng.randrange(10_000))
        bodies[body["metadata"]["uid"]] = body
        cache.apply(PODS, "ADDED", body)
    elif roll < 0.5:
        uid = rng.choice(uids)
        cache.apply(PODS, "DELETED", bodies.pop(uid))
    elif roll < 0.65:
        uid = rng.choice(uids)
        body = random_pod(rng, 0)
        body["metadata"]["uid"] = uid
        body["metadata"]["name"] = bodies[uid]["metadata"]["name"]
        bodies[uid] = body
        cache.apply(PODS, "MODIFIED", body)
    elif roll < 0.75:
        # Some assumptions outlive the view at 1000 s, some expire (`assume_ttl` 60 s
        # after their bind was answered), some wait for their answer.
        at = float(rng.randrange(900, 1000))
        uid = rng.choice(uids)
        cache.assume(uid, f"n{rng.randrange(4)}", now=at)
        if rng.random() < 0.7:
            cache.settle(uid, now=at)
    elif roll < 0.8:
        cache.forget(rng.choice(uids))
    elif roll < 0.87:
        name = f"pg{rng.randrange(3)}"
        group = {
            "metadata": {"name": name, "namespace": rng.choice(MEMBERS)},
            "spec": {"minMember": rng.choice((2, 2, 3))},
        }
        if rng.random() < 0.5:
            group["spec"]["minResources"] = {"nvidia.com/gpu": str(rng.randrange(1, 5))}
        cache.apply(POD_GROUPS, rng.choice(("ADDED", "DELETED")), group)
    elif roll < 0.93:
        cls = {"metadata": {"name": rng.choice(("high", "low"))}, "value": rng.randrange(1000)}
        cache.apply(PRIORITY_CLASSES, "ADDED", cls)
    else:
        cache.apply(NODES, rng.choice(("ADDED", "DELETED")), node(f"n{rng.randrange(5)}"))


def same(view: CacheView, expected: tuple[Any, Any, Any]) -> None:
    running, jobs, rejected = expected
    assert view.snapshot.running == running
    assert view.snapshot.pending == jobs
    assert view.unschedulable == rejected


def test_kept_conversions_equal_converting_everything_again() -> None:
    for seed in range(examples(40)):
        rng = random.Random(seed)
        cache = ClusterCache()
        cache.replace(NODES, [node(f"n{i}") for i in range(4)])
        bodies: dict[str, dict[str, Any]] = {}
        for _ in range(60):
            step(cache, rng, bodies)
            policy = POLICY if rng.random() < 0.9 else OTHER_POLICY
            decided: dict[str, dict[str, str]] = {}
            if bodies and rng.random() < 0.2:
                uid = rng.choice(sorted(bodies))
                decided[uid] = {uid: f"n{rng.randrange(5)}"}
            view = cache.view(policy, decided, now=1000.0)
            same(view, from_scratch(cache, policy, decided))


def test_an_unchanged_job_or_pod_is_not_converted_again() -> None:
    cache = ClusterCache()
    cache.replace(NODES, [node("n1")])
    cache.replace(
        PODS,
        [pod("run", node_name="n1", phase="Running"), pod("a"), pod("b"), pod("c")],
    )
    first = cache.view(POLICY, now=1.0).snapshot
    cache.apply(PODS, "MODIFIED", pod("b", annotations={"fairpool.io/reclaims": "2"}))
    second = cache.view(POLICY, now=2.0).snapshot
    # Same order, same objects, but for the pod that changed.
    assert [j.job_id for j in second.pending] == [j.job_id for j in first.pending]
    kept = [a is b for a, b in zip(first.pending, second.pending, strict=True)]
    assert kept == [True, False, True]
    assert second.pending[1].reclaims == 2
    assert second.running[0] is first.running[0]
    # Another policy: everything is converted again under it.
    third = cache.view(OTHER_POLICY, now=3.0)
    assert third.snapshot.pending == ()
    assert [u.job_id for u in third.unschedulable] == ["uid-a", "uid-b", "uid-c"]


def test_a_pod_group_whose_min_resources_alone_change_is_converted_again() -> None:
    cache = ClusterCache()
    cache.replace(NODES, [node("n1")])
    group = {"scheduling.x-k8s.io/pod-group": "pg"}
    cache.replace(PODS, [pod("w0", labels=group), pod("w1", labels=group)])

    def pod_group(gpus: int) -> dict[str, Any]:
        return {
            "metadata": {"name": "pg", "namespace": "physics"},
            "spec": {"minMember": 2, "minResources": {"nvidia.com/gpu": str(gpus)}},
        }

    cache.apply(POD_GROUPS, "ADDED", pod_group(4))
    waits = cache.view(POLICY, now=1.0)
    assert waits.snapshot.pending == () and len(waits.unschedulable) == 1
    cache.apply(POD_GROUPS, "MODIFIED", pod_group(2))
    (job,) = cache.view(POLICY, now=2.0).snapshot.pending
    assert (job.job_id, job.min_member) == ("physics/pg", 2)
