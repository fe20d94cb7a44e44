"""A SchedulerView without a cluster, for `fairpool serve-api`, demos, tests and the
benchmark: nodes from an inventory, pending work from a trace (or a built-in demo queue),
and the real engine run on it. Until the daemon hosts the API, this is what it serves.

The cluster is frozen after one engine cycle has placed what fits: jobs the engine bound
run; the rest stay pending with the engine's explanation. A new policy re-runs the engine
on the same cluster, so its effect on shares and explanations shows at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from policies.inventory import ClusterInventory
from policies.model import Policy
from scheduler.engine import schedule
from scheduler.engine.decisions import Decisions
from scheduler.engine.snapshot import Node, PendingJob, PendingPod, RunningPod, Snapshot
from scheduler.k8s.published import NOTHING_PUBLISHED, Published
from scheduler.sim.cluster import build_nodes, namespace_for, pod_spec
from scheduler.traces.model import Trace, TraceJob


def pending_job(job: TraceJob, policy: Policy) -> PendingJob:
    namespace = namespace_for(policy, job.org)
    pods = tuple(
        PendingPod(
            uid=f"{job.job_id}-p{i}",
            name=f"{job.job_id}-{i}" if job.is_gang else job.job_id,
            namespace=namespace,
            spec=pod_spec(job),
            created_at=job.submit_time,
        )
        for i in range(job.num_pods)
    )
    return PendingJob(
        job_id=job.job_id,
        member=job.org,
        pods=pods,
        min_member=job.num_pods,
        priority=job.priority,
        submitted_at=job.submit_time,
    )


def demo_trace(inventory: ClusterInventory) -> Trace:
    """More work than the cluster holds: every owner queues single pods and a gang on
    its own GPU model, twice its contribution, so some of it must borrow or wait."""
    jobs: list[TraceJob] = []
    for g, group in enumerate(inventory.node_groups):
        per_node = max(1, group.gpus_per_node)
        for i in range(2 * group.count):
            jobs.append(
                TraceJob(
                    f"{group.owner}-job-{g}-{i}",
                    group.owner,
                    float(10 * i + g),
                    3600.0,
                    1,
                    per_node,
                    group.gpu_model,
                )
            )
        jobs.append(
            TraceJob(
                f"{group.owner}-gang-{g}",
                group.owner,
                float(5 + g),
                7200.0,
                2,
                per_node,
                group.gpu_model,
            )
        )
    return Trace(tuple(sorted(jobs, key=lambda j: (j.submit_time, j.job_id))))


def settle(
    nodes: tuple[Node, ...], jobs: Iterable[PendingJob], policy: Policy, now: float
) -> Snapshot:
    """The cluster after one engine cycle: bound jobs running, the rest pending."""
    pending = tuple(jobs)
    first = schedule(Snapshot(now=now, nodes=nodes, running=(), pending=pending), policy)
    node_of = {b.pod_uid: b.node for b in first.binds}
    running: list[RunningPod] = []
    waiting: list[PendingJob] = []
    for job in pending:
        if not all(p.uid in node_of for p in job.pods):
            waiting.append(job)
            continue
        for pod in job.pods:
            running.append(
                RunningPod(
                    uid=pod.uid,
                    name=pod.name,
                    namespace=pod.namespace,
                    member=job.member,
                    job_id=job.job_id,
                    node=node_of[pod.uid],
                    spec=pod.spec,
                    priority=job.priority,
                    started_at=now,
                    checkpointable=job.checkpointable,
                    submitted_at=job.submitted_at,
                )
            )
    return Snapshot(now=now, nodes=nodes, running=tuple(running), pending=tuple(waiting))


class FrozenClusterView:
    """SchedulerView over a frozen simulated cluster (no Kubernetes behind it)."""

    def __init__(self, policy: Policy, snapshot: Snapshot, decide: bool = True) -> None:
        self._lock = threading.Lock()
        self._decide = decide
        self._policy = policy
        decisions = schedule(snapshot, policy) if decide else Decisions()
        self._published = NOTHING_PUBLISHED.next(snapshot, policy, decisions)

    @classmethod
    def from_inventory(
        cls, policy: Policy, inventory: ClusterInventory, trace: Trace | None = None
    ) -> FrozenClusterView:
        nodes = build_nodes(inventory)
        trace = trace if trace is not None else demo_trace(inventory)
        jobs = [pending_job(j, policy) for j in trace.jobs]
        now = max((j.submit_time for j in trace.jobs), default=0.0) + 60.0
        return cls(policy, settle(nodes, jobs, policy, now))

    def published(self) -> Published:
        return self._published

    def policy(self) -> Policy:
        return self._policy

    def snapshot(self) -> Snapshot:
        return self._published.snapshot

    def last_decisions(self) -> Decisions:
        return self._published.decisions

    def publish(self, snapshot: Snapshot, decisions: Decisions | None = None) -> Published:
        """A new cycle over `snapshot` under the policy in use (the engine decides it when
        `decisions` is None and this view decides at all)."""
        policy = self._policy
        if decisions is None:
            decisions = schedule(snapshot, policy) if self._decide else Decisions()
        with self._lock:
            self._published = self._published.next(snapshot, policy, decisions)
            return self._published

    def set_policy(self, policy: Policy) -> None:
        snapshot = self._published.snapshot
        decisions = schedule(snapshot, policy) if self._decide else Decisions()
        with self._lock:
            self._policy = policy
            self._published = self._published.next(snapshot, policy, decisions)
