"""Nominations kept on the pods: `status.nominatedNodeName`, as kube-scheduler does when
it preempts.

When the engine reclaims for a waiting job it nominates nodes for the job's pods: the
GPUs being freed there are held for that job until its victims are gone. The leader
writes each nomination to the pod's status (PATCH pods/status), so it is visible with
kubectl and survives a restart or a leader change: the cluster cache reads it back into
the snapshot (`converted.recorded_nominations`).

`Nominations` decides (no I/O) what each pending pod's nomination should be after a
cycle. A nomination is dropped, and the field cleared, when it is stale: not renewed by
the engine, none of its nodes carries a terminating pod, and no eviction decided for it
in the last `victim_wait` seconds could still be on its way (the watch shows a victim
terminating a little after the eviction). The simulator drops stale nominations by the
same rule. A pod bound to another node than its nomination has the field cleared; a
nomination naming a node that is gone is cleared as well. A pod that is gone takes its
nomination with it.

`NominationWriter` sends the patches on a small thread pool.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from scheduler.engine.decisions import Decisions
from scheduler.engine.snapshot import Snapshot
from scheduler.k8s.client import patch_pod_status
from scheduler.k8s.objects import PodInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NominationWrite:
    """Set (`node`) or clear (`node == ""`) one pod's `status.nominatedNodeName`."""

    pod: PodInfo
    node: str


@dataclass
class Nominations:
    """The leader's nominations: what it decided, before the watch shows it on the pods."""

    victim_wait: float = 30.0
    decided: dict[str, dict[str, str]] = field(default_factory=dict)
    """job id -> {pod uid -> node}; an empty mapping means dropped."""
    victims: dict[str, tuple[float, frozenset[str]]] = field(default_factory=dict)
    """job id -> (when, uids of the pods preempted for it then)."""

    def __bool__(self) -> bool:
        return any(self.decided.values())

    def reset(self) -> None:
        """No longer the leader: the pods' status is the truth for whoever leads next."""
        self.decided.clear()
        self.victims.clear()

    def update(
        self,
        snapshot: Snapshot,
        decisions: Decisions,
        bound_jobs: set[str],
        pods: Mapping[str, PodInfo],
    ) -> list[NominationWrite]:
        """After a leader's cycle: record the engine's nominations, drop the stale ones,
        and return the status writes that make the pods say so."""
        now = snapshot.now
        renewed = {n.job_id for n in decisions.nominations}
        for nomination in decisions.nominations:
            self.decided[nomination.job_id] = dict(nomination.nodes)
        victims: dict[str, set[str]] = {}
        for preemption in decisions.preemptions:
            victims.setdefault(preemption.for_job, set()).add(preemption.pod_uid)
        for job_id, uids in victims.items():
            self.victims[job_id] = (now, frozenset(uids))
        pending = {job.job_id: job for job in snapshot.pending}
        for job_id in list(self.decided):
            if job_id not in pending or job_id in bound_jobs:
                del self.decided[job_id]
        self.victims = {
            job_id: (at, uids)
            for job_id, (at, uids) in self.victims.items()
            if job_id in pending and job_id not in bound_jobs and now - at < self.victim_wait
        }
        terminating = {p.node for p in snapshot.running if p.terminating}
        writes: list[NominationWrite] = []
        for job in snapshot.pending:
            if job.job_id in bound_jobs:
                continue
            nodes = self.decided.get(job.job_id, job.nominated_nodes)
            if (
                nodes
                and job.job_id not in renewed
                and job.job_id not in self.victims
                and not terminating.intersection(nodes.values())
            ):
                self.decided[job.job_id] = nodes = {}
            for pending_pod in job.pods:
                pod = pods.get(pending_pod.uid)
                want = nodes.get(pending_pod.uid, "")
                if pod is not None and pod.nominated_node != want:
                    writes.append(NominationWrite(pod, want))
        return writes


def cleared_on_bind(pod: PodInfo, node: str) -> NominationWrite | None:
    """A pod bound elsewhere than its nomination no longer holds anything there."""
    if pod.nominated_node and pod.nominated_node != node:
        return NominationWrite(pod, "")
    return None


class NominationWriter:
    """PATCH pods/status with the nominated node. Best effort: a write that fails is
    sent again by a later cycle, since the pod still does not say what was decided."""

    def __init__(
        self,
        api: client.ApiClient,
        workers: int = 2,
        resend_seconds: float = 10.0,
        may_write: Callable[[], bool] | None = None,
    ) -> None:
        self._core = client.CoreV1Api(api)
        self.may_write = may_write
        """Asked just before each write: a write queued while this replica led waits
        behind slow ones, and once the lease is lost the new leader's nominations are the
        ones that count."""
        self.resend_seconds = resend_seconds
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="nominator")
        self._lock = threading.Lock()
        self._sent: dict[str, tuple[str, float]] = {}
        """uid -> (node written, when): not sent again while the watch catches up."""
        self.written = 0
        self.failed = 0

    def submit(self, write: NominationWrite) -> bool:
        now = time.monotonic()
        uid = write.pod.uid
        with self._lock:
            last = self._sent.get(uid)
            if last is not None and last[0] == write.node and now - last[1] < self.resend_seconds:
                return False
            self._sent[uid] = (write.node, now)
            if len(self._sent) > 10_000:
                self._sent = {
                    u: s for u, s in self._sent.items() if now - s[1] < self.resend_seconds
                }
        self._pool.submit(self._write, write)
        return True

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _write(self, write: NominationWrite) -> None:
        pod = write.pod
        if self.may_write is not None and not self.may_write():
            with self._lock:
                self._sent.pop(pod.uid, None)  # not written: a leader sends it again
            return
        try:
            patch_pod_status(
                self._core,
                pod.name,
                pod.namespace,
                pod.uid,
                {"nominatedNodeName": write.node or None},
            )
            with self._lock:
                self.written += 1
        except ApiException as exc:
            if exc.status != 404:
                self._failed(pod, f"{exc.status} {exc.reason}")
        except Exception as exc:  # connection refused/reset: the API server restarts
            self._failed(pod, f"{type(exc).__name__}: {exc}")

    def _failed(self, pod: PodInfo, detail: str) -> None:
        log.warning("writing the nomination of %s failed: %s", pod.key, detail)
        with self._lock:
            self.failed += 1
            self._sent.pop(pod.uid, None)
