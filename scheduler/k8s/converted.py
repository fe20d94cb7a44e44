"""The engine's form of the cache's pods, kept from one view to the next.

At 5,000 nodes, 20,000 running and 50,000 pending pods, converting every pod into the
engine's running pods and pending jobs took about 0.65 s a view (`python -m bench
cache`), more than twice the engine's own cycle on that snapshot (membership by
namespace pattern, priorities, gang sizes, reclaim annotations), while between two
cycles only a few pods change. A `PodInfo` is immutable and the cache
replaces it on every change of its pod, so a pod that is the same object, assumed the
same way, under the same policy and priorities, converts to what it did last time; a
job whose pods are the same, with the same PodGroup figures and nomination, too. Those
answers are reused, and the order is sorted again only when a job or a running pod
changed. The result is what `running_pod` and `pending_jobs` give
(tests/unit/test_k8s_converted.py compares both after random changes).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import NamedTuple

from policies.model import Policy
from scheduler.engine.snapshot import PendingJob, RunningPod
from scheduler.k8s.objects import (
    PodInfo,
    Priorities,
    Requests,
    Unschedulable,
    job_id_of,
    pending_job,
    queue_key,
    running_pod,
)


@dataclass(frozen=True, slots=True)
class Assumed:
    """A bind the binder was asked for and no watch has confirmed yet."""

    node: str
    at: float


class _Pod(NamedTuple):
    """One pod's conversion and what it was converted from (a tuple: built for every
    pod of a cold view, where a frozen dataclass's slower construction shows)."""

    info: PodInfo
    assumed: Assumed | None
    policy: Policy
    priorities: Priorities
    running: tuple[str, str, RunningPod] | None
    """(node, uid, the running pod): the snapshot's order, then the pod; None when the
    pod takes no resources."""
    waiting: bool
    job_id: str


class _Job(NamedTuple):
    pods: tuple[PodInfo, ...]
    policy: Policy
    priorities: Priorities
    pod_group_size: int | None
    pod_group_resources: Requests | str | None
    nominated: Mapping[str, str] | None
    job: PendingJob | Unschedulable


@dataclass(frozen=True, slots=True)
class Converted:
    """One view's running pods (by node, then uid), pending jobs (by submission, then
    job id) and jobs the engine cannot be given."""

    running: tuple[RunningPod, ...]
    jobs: tuple[PendingJob, ...]
    rejected: tuple[Unschedulable, ...]


class Conversions:
    """Remembers the last view's conversions (`convert`); one view at a time."""

    def __init__(self, scheduler_name: str) -> None:
        self.scheduler_name = scheduler_name
        self._lock = threading.Lock()
        self._pods: dict[str, _Pod] = {}
        self._jobs: dict[str, _Job] = {}
        self._running: tuple[tuple[RunningPod, ...], tuple[RunningPod, ...]] = ((), ())
        """The last running pods in the cache's order, and sorted."""
        self._queued: tuple[tuple[PendingJob, ...], tuple[PendingJob, ...]] = ((), ())
        """The last pending jobs in the cache's order, and sorted."""

    def convert(
        self,
        pods: Mapping[str, PodInfo],
        assumed: Mapping[str, Assumed],
        policy: Policy,
        priorities: Priorities,
        pod_groups: Mapping[str, int],
        pod_group_resources: Mapping[str, Requests | str],
        node_names: frozenset[str],
        decided: Mapping[str, Mapping[str, str]],
    ) -> Converted:
        """`pods` in the cache's order (uid -> pod); `decided`: the leader's own
        nominations not seen through the watch yet (`recorded_nominations`)."""
        with self._lock:
            last = self._pods
            kept: dict[str, _Pod] = {}
            running: list[tuple[str, str, RunningPod]] = []
            waiting: list[PodInfo] = []
            groups: dict[str, list[PodInfo]] = {}
            for uid, info in pods.items():
                guess = assumed.get(uid)
                seen = last.get(uid)
                if (
                    seen is None
                    or seen.info is not info
                    or seen.assumed != guess
                    or seen.policy is not policy
                    or seen.priorities is not priorities
                ):
                    seen = self._pod(info, guess, policy, priorities)
                kept[uid] = seen
                if seen.running is not None:
                    running.append(seen.running)
                elif seen.waiting:
                    waiting.append(info)
                    groups.setdefault(seen.job_id, []).append(info)
            self._pods = kept
            order = tuple(r[2] for r in running)
            if order != self._running[0]:
                running.sort(key=lambda r: (r[0], r[1]))
                self._running = (order, tuple(r[2] for r in running))
            nominations = recorded_nominations(waiting, node_names, decided)
            jobs, rejected = self._group(
                groups, policy, priorities, pod_groups, pod_group_resources, nominations
            )
            return Converted(self._running[1], jobs, rejected)

    def _pod(
        self, info: PodInfo, guess: Assumed | None, policy: Policy, priorities: Priorities
    ) -> _Pod:
        name = self.scheduler_name
        job_id = job_id_of(info)
        if guess is not None and not info.terminal:
            pod = running_pod(info, policy, priorities, name, guess.node, guess.at)
            return _Pod(info, guess, policy, priorities, (pod.node, pod.uid, pod), False, job_id)
        if info.takes_resources():
            pod = running_pod(info, policy, priorities, name)
            return _Pod(info, guess, policy, priorities, (pod.node, pod.uid, pod), False, job_id)
        return _Pod(info, guess, policy, priorities, None, info.waits_for(name), job_id)

    def _group(
        self,
        groups: dict[str, list[PodInfo]],
        policy: Policy,
        priorities: Priorities,
        pod_groups: Mapping[str, int],
        pod_group_resources: Mapping[str, Requests | str],
        nominations: Mapping[str, Mapping[str, str]],
    ) -> tuple[tuple[PendingJob, ...], tuple[Unschedulable, ...]]:
        last = self._jobs
        kept: dict[str, _Job] = {}
        jobs: list[PendingJob] = []
        rejected: list[Unschedulable] = []
        for job_id, members in groups.items():
            pods = tuple(members)
            size = pod_groups.get(job_id)
            resources = pod_group_resources.get(job_id)
            nominated = nominations.get(job_id)
            seen = last.get(job_id)
            if (
                seen is None
                or seen.pods != pods
                or seen.policy is not policy
                or seen.priorities is not priorities
                or seen.pod_group_size != size
                or seen.pod_group_resources != resources
                or seen.nominated != nominated
            ):
                found = pending_job(job_id, pods, policy, priorities, size, resources, nominated)
                seen = _Job(pods, policy, priorities, size, resources, nominated, found)
            kept[job_id] = seen
            if isinstance(seen.job, Unschedulable):
                rejected.append(seen.job)
            else:
                jobs.append(seen.job)
        self._jobs = kept
        order = tuple(jobs)
        if order != self._queued[0]:
            jobs.sort(key=queue_key)
            self._queued = (order, tuple(jobs))
        return self._queued[1], tuple(rejected)


def recorded_nominations(
    waiting: Iterable[PodInfo],
    node_names: AbstractSet[str],
    decided: Mapping[str, Mapping[str, str]],
) -> dict[str, dict[str, str]]:
    """job id -> {pod uid -> node}: what the pending pods' `status.nominatedNodeName`
    says, replaced per job by `decided` (an empty mapping there drops the job's
    nomination), keeping only nodes that exist."""
    found: dict[str, dict[str, str]] = {}
    for pod in waiting:
        if pod.nominated_node:
            found.setdefault(job_id_of(pod), {})[pod.uid] = pod.nominated_node
    found.update({job_id: dict(nodes) for job_id, nodes in decided.items()})
    kept = {
        job_id: {uid: node for uid, node in nodes.items() if node in node_names}
        for job_id, nodes in found.items()
    }
    return {job_id: nodes for job_id, nodes in kept.items() if nodes}
