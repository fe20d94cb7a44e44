"""The binder: carries out the engine's `Bind` decisions through the Binding subresource.

Annotations ride in the Binding itself: the API server copies a Binding's annotations onto
the pod in the same atomic update that sets `spec.nodeName` (with the pod's UID as
precondition). So `fairpool.io/member` and `fairpool.io/borrowed-from` are on the pod
from the instant it is bound; there is no window in which metering could see a bound pod
without them, and no second request (patch before would annotate pods that may never
bind; patch after would leave bound pods unannotated if the daemon died in between).

Binds run on a bounded thread pool. Each pod is *assumed* in the cache before its request
goes out, so the next scheduling cycle already counts its GPUs. Conflicts and transient
errors are retried with exponential backoff, for at most `RETRY_SECONDS` and never sooner
than the API server asks (`Retry-After`); a pod deleted (404), replaced (UID precondition
failed) or being deleted mid-cycle, or still held by a scheduling gate (409 naming
`spec.schedulingGates`), is dropped quietly; a pod found already bound to the same node
(a retry after a lost response) counts as bound.

A gang is bound all or none. Its binds go out together; once every one has its answer,
a gang not bound whole (a pod deleted before its bind, or a bind that still failed after
the retries of transient errors) is undone. Kubernetes cannot unbind a pod, so the
gang's bound pods are deleted, each with a `GangBindUndone` event naming the pod that
failed and why: the owning controller recreates them, and the gang is scheduled whole
again. Running part of a gang would hold GPUs for work that cannot start. Each is first
given the condition `DisruptionTarget`, as an evicted pod is, so that a Job ignoring it
in its podFailurePolicy does not count the deletion as a failure of its work; a pod
not deleted after all (the lease lost meanwhile, the deletion refused) has it removed
again, and a replica that lost the lease posts no event: the gang is the new leader's.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from scheduler.engine.decisions import Bind
from scheduler.k8s import labels as L
from scheduler.k8s.cache import ClusterCache
from scheduler.k8s.client import (
    namespaced_path,
    patch_pod_status,
    post_json,
    read_body,
    retry_after,
    status_message,
)
from scheduler.k8s.events import EventRecorder, ObjectRef
from scheduler.k8s.gang_repair import PartialGang
from scheduler.k8s.objects import PodInfo

log = logging.getLogger(__name__)

Outcome = Literal["bound", "assigned", "gone", "failed"]
"""`assigned`: bound, to a node that could not be read (the watch tells)."""
RETRY_SECONDS = 30.0
"""How long a bind, or an undo's deletion, is tried again after transient errors: long
enough to outlast an API server's restart or a burst of load shedding (a gang's bind given
up is a gang undone)."""
NOT_LEADER = "not the leader any more; the new leader repairs the gang"
"""Why an undo's deletion stopped: the lease was lost (then nothing more is written)."""
MAX_BACKOFF_SECONDS = 5.0
RETRYABLE = frozenset({401, 403, 409, 429, 500, 502, 503, 504})
"""Answers worth another try. 401 and 403 among them: a kube-apiserver that has just
started refuses every request until it has loaded its RBAC (about a second), and a gang
whose binds were refused half way would have to be undone."""


@dataclass(frozen=True, slots=True)
class BindResult:
    bind: Bind
    pod: PodInfo
    outcome: Outcome
    detail: str
    seconds: float
    """From the request being queued to the API server's answer."""
    bound_node: str = ""
    """Where the pod is bound after the attempt ("" when it is not, or not known)."""

    @property
    def bound(self) -> bool:
        return bool(self.bound_node) or self.outcome == "assigned"


@dataclass(frozen=True, slots=True)
class GangUndo:
    """A gang not bound whole: the pods to delete, and why."""

    job_id: str
    delete: tuple[BindResult, ...]
    reason: str


def gang_undo(results: Sequence[BindResult]) -> GangUndo | None:
    """The decision once every bind of a gang has its answer: None when all its pods are
    bound (or none is), else every bound pod goes (Kubernetes cannot unbind) so the gang
    is never left partly bound."""
    missing = [r for r in results if not r.bound]
    bound = tuple(sorted((r for r in results if r.bound), key=_pod_key))
    if not missing or not bound:
        return None
    why = "; ".join(f"pod {r.pod.key}: {r.detail}" for r in sorted(missing, key=_pod_key))
    return GangUndo(results[0].bind.job_id, bound, why)


def _pod_key(result: BindResult) -> str:
    return result.pod.key


class _Backoff:
    """The waits between the attempts of one request: doubling from `base` (with
    jitter, at most `MAX_BACKOFF_SECONDS`), never shorter than the API server asked,
    and no attempt started after `budget` seconds."""

    def __init__(self, base: float, budget: float, closing: threading.Event) -> None:
        self.base = base
        self.deadline = time.monotonic() + budget
        self.closing = closing
        self.attempts = 1

    def wait(self, asked: float | None = None) -> bool:
        """Sleep until the next attempt; False, at once, when it would start too late,
        or once the binder closes (a stopping daemon does not wait out the budget)."""
        delay = min(self.base * 2 ** (self.attempts - 1), MAX_BACKOFF_SECONDS)
        delay *= 0.5 + random.random()
        if asked is not None:
            delay = max(delay, asked)
        if time.monotonic() + delay > self.deadline or self.closing.wait(delay):
            return False
        self.attempts += 1
        return True


class _Gang:
    """Collects the answers of one gang's binds."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.results: list[BindResult] = []
        self._lock = threading.Lock()
        self.label = f"{uuid.uuid4().hex[:12]}/{expected}"
        """Written on each of its pods (`fairpool.io/gang-bind`): the gang repair tells
        a batch bound whole, since run, from one bound half way."""

    def add(self, result: BindResult) -> list[BindResult] | None:
        """Returns every result once the last one arrives."""
        with self._lock:
            self.results.append(result)
            return list(self.results) if len(self.results) == self.expected else None


def binding_annotations(bind: Bind, gang_bind: str = "") -> dict[str, str]:
    """`gang_bind`: the batch of a gang's binds the pod is in (`_Gang.label`)."""
    annotations = {L.MEMBER_ANNOTATION: bind.member}
    if bind.reclaimable and bind.owner:
        annotations[L.BORROWED_FROM_ANNOTATION] = bind.owner
    if gang_bind:
        annotations[L.GANG_BIND_ANNOTATION] = gang_bind
    return annotations


def binding_body(bind: Bind, pod: PodInfo, gang_bind: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "uid": pod.uid,
            "annotations": binding_annotations(bind, gang_bind),
        },
        "target": {"apiVersion": "v1", "kind": "Node", "name": bind.node},
    }


class Binder:
    def __init__(
        self,
        api: client.ApiClient,
        cache: ClusterCache,
        recorder: EventRecorder | None = None,
        workers: int = 16,
        retry_seconds: float = RETRY_SECONDS,
        base_backoff: float = 0.1,
        on_result: Callable[[BindResult], None] | None = None,
        scheduled_events: bool = True,
        before_binds: Callable[[Sequence[tuple[Bind, PodInfo]]], None] | None = None,
        may_bind: Callable[[], bool] | None = None,
    ) -> None:
        self._api = api
        self._core = client.CoreV1Api(api)
        self.may_bind = may_bind
        """Asked before every request (bind, retry, undo): a replica that lost the lease
        sends nothing more; its queued binds were decided on a view the new leader does
        not share, and a gang they leave partly bound is the new leader's to repair."""
        self.scheduled_events = scheduled_events
        self.cache = cache
        self.recorder = recorder
        self.retry_seconds = retry_seconds
        self.base_backoff = base_backoff
        self.on_result = on_result
        self.before_binds = before_binds
        """Called with the binds about to go out, after they were checked (tests use it to
        change the cluster in that window)."""
        self.undone = 0
        """Gangs undone because they could not be bound whole."""
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="binder")
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._idle = threading.Condition(self._lock)

    def submit(self, binds: Sequence[tuple[Bind, PodInfo]], gang: bool = False) -> int:
        """Bind these pods (one job's, or several jobs'; with `gang`, one gang's, bound
        whole or undone). Pods already in flight are skipped; returns how many requests
        were queued."""
        queued: list[tuple[Bind, PodInfo]] = []
        for bind, pod in binds:
            with self._lock:
                if pod.uid in self._in_flight:
                    continue
                self._in_flight.add(pod.uid)
            self.cache.assume(pod.uid, bind.node)
            queued.append((bind, pod))
        if self.before_binds is not None and queued:
            self.before_binds(queued)
        tracker = _Gang(len(queued)) if gang and len(queued) > 1 else None
        for bind, pod in queued:
            self._pool.submit(self._bind, bind, pod, time.monotonic(), tracker)
        return len(queued)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def in_flight_uids(self) -> frozenset[str]:
        """Pods with a bind or a deletion of this binder not answered yet."""
        with self._lock:
            return frozenset(self._in_flight)

    def undo_partial(self, gang: PartialGang) -> bool:
        """Delete, in the background, the bound pods of a gang found partly bound (see
        `gang_repair`); False when one of them is already in flight."""
        uids = {pod.uid for pod in gang.bound}
        with self._lock:
            if uids & self._in_flight:
                return False
            self._in_flight |= uids
            self.undone += 1
        log.warning("%s: deleting its %d bound pods", gang.describe(), len(gang.bound))
        self._pool.submit(self._undo_partial, gang)
        return True

    def _undo_partial(self, gang: PartialGang) -> None:
        try:
            for pod in gang.bound:
                self._delete_with_event(
                    pod,
                    f"{gang.describe()}; this pod, bound to {pod.node_name}, is deleted so "
                    "that no part of the gang runs alone: its controller recreates it and "
                    "the gang is scheduled whole again",
                )
        finally:
            with self._idle:
                self._in_flight -= {pod.uid for pod in gang.bound}
                self._idle.notify_all()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: not self._in_flight, timeout)

    def close(self) -> None:
        self._closing.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # --- one bind -----------------------------------------------------------------------

    def _bind(self, bind: Bind, pod: PodInfo, queued_at: float, gang: _Gang | None = None) -> None:
        try:
            outcome, detail, bound_node = self._attempt(bind, pod, gang)
        except Exception as exc:  # never lose the in-flight mark
            outcome, detail, bound_node = "failed", f"{type(exc).__name__}: {exc}", ""
        result = BindResult(
            bind,
            pod,
            outcome,
            detail,
            time.monotonic() - queued_at,
            bound_node,
        )
        ref = ObjectRef("Pod", pod.namespace, pod.name, pod.uid)
        if outcome == "bound":
            self.cache.settle(pod.uid)
            if self.recorder is not None:
                self.recorder.forget(pod.uid)
                if self.scheduled_events:
                    self.recorder.record(ref, "Normal", "Scheduled", detail)
        elif outcome == "assigned":
            # Forgotten, the pod would be pending again with its GPUs free on its node
            # until the watch, which an API server that cannot answer a read may not
            # bring for a while, shows it bound.
            self.cache.settle(pod.uid)
            log.warning("bind %s -> %s: %s", pod.key, bind.node, detail)
        else:
            self.cache.forget(pod.uid)
            if outcome == "failed":
                log.warning("bind %s -> %s failed: %s", pod.key, bind.node, detail)
                if self.recorder is not None:
                    self.recorder.failed_scheduling(
                        ref, f"binding to node {bind.node} failed: {detail}"
                    )
        if self.on_result is not None:
            self.on_result(result)
        results = gang.add(result) if gang is not None else None
        if results is not None:
            undo = gang_undo(results)
            # A closing binder gave up its retries early: the gang is the next leader's
            # to repair, as after a crash.
            if undo is not None and self._may_act() and not self._closing.is_set():
                self._undo(undo)
            elif undo is not None:
                log.warning("gang %s not bound whole; left to the leader's repair", undo.job_id)
        with self._idle:
            self._in_flight.discard(pod.uid)
            self._idle.notify_all()

    def _attempt(
        self, bind: Bind, pod: PodInfo, gang: _Gang | None = None
    ) -> tuple[Outcome, str, str]:
        body = binding_body(bind, pod, gang.label if gang is not None else "")
        path = namespaced_path(pod.namespace, "pods", pod.name, "binding")
        last = ""
        # Set once the API server said the pod is bound (409 "already assigned") to a
        # node not learned yet: from then on the pod is read instead of bound again, and
        # the answer is never "failed".
        assigned = False
        backoff = _Backoff(self.base_backoff, self.retry_seconds, self._closing)
        while True:
            asked: float | None = None
            if not self._may_act():
                return "gone", "not the leader any more; the new leader decides", ""
            if assigned:
                try:
                    found = self._found_on(bind, pod, self._current_node(pod))
                except Exception as exc:  # read again after the backoff, as a bind is
                    last = f"the pod could not be read: {_why(exc)}"
                else:
                    if found is not None:
                        return found
                    assigned = False
            else:
                try:
                    post_json(self._api, path, body, (5, 30))
                    return "bound", self._scheduled_message(bind, pod), bind.node
                except ApiException as exc:
                    last = f"{exc.status} {status_message(exc)}"
                    asked = retry_after(exc)
                    if exc.status == 404:
                        return "gone", "pod deleted before it was bound", ""
                    if "is being deleted" in status_message(exc):
                        # Deleted while its bind was on its way (its Job replaced it, a
                        # gang undo): no retry can bind it, whatever the status says.
                        return "gone", "pod being deleted", ""
                    if exc.status == 409:
                        text = status_message(exc)
                        if "precondition" in text.lower():
                            return "gone", "pod replaced before it was bound", ""
                        if "schedulinggates" in text.lower():
                            # Refused until its gates are removed: no retry can bind it,
                            # and the watch brings it back pending once they are.
                            return "gone", "pod held by a scheduling gate", ""
                        node = _assigned_node(text)
                        if node:
                            found = self._found_on(bind, pod, node)
                            if found is not None:
                                return found
                        assigned = "already assigned" in text
                        try:
                            found = self._found_on(bind, pod, self._current_node(pod))
                        except Exception as read:
                            last += f"; the pod could not be read: {_why(read)}"
                        else:
                            if found is not None:
                                return found
                            assigned = False
                    if exc.status not in RETRYABLE:
                        return "failed", last, ""
                except Exception as exc:  # connection refused/reset: the API server restarts
                    last = _why(exc)
            if not backoff.wait(asked):
                break
        if assigned:
            # Bound, most likely by an earlier attempt whose answer was lost: the pod
            # stays assumed on its node until the watch shows where it is.
            return "assigned", f"already bound, to a node not read: {last}", ""
        return "failed", f"gave up after {backoff.attempts} attempts: {last}", ""

    def _found_on(
        self, bind: Bind, pod: PodInfo, current: str | None
    ) -> tuple[Outcome, str, str] | None:
        """The outcome once the pod was found bound to `current` (as `_current_node`
        says); None when it is not bound."""
        if current == bind.node:
            return "bound", self._scheduled_message(bind, pod), bind.node
        if current is None:
            return "gone", "pod deleted before it was bound", ""
        if current:
            return "gone", f"pod already bound to {current}", current
        return None

    def _may_act(self) -> bool:
        return self.may_bind is None or self.may_bind()

    def _undo(self, undo: GangUndo) -> None:
        log.warning(
            "gang %s not bound whole (%s): deleting its %d bound pods",
            undo.job_id,
            undo.reason,
            len(undo.delete),
        )
        with self._lock:
            self.undone += 1
        for result in undo.delete:
            self._delete_with_event(
                result.pod,
                f"gang {undo.job_id} could not be bound whole ({undo.reason}); this pod, "
                f"bound to {result.bound_node or 'a node not read'}, is deleted so that no "
                "part of the gang runs alone: its controller recreates it and the gang is "
                "scheduled whole again",
            )

    def _delete_with_event(self, pod: PodInfo, message: str) -> None:
        if not self._may_act():
            # Queued behind binds while the lease was lost: the new leader may have
            # finished this gang since, and its pods must not be deleted under it.
            log.warning("not deleting %s of a gang: not the leader any more", pod.key)
            return
        self._mark_disrupted(pod, message)
        detail = self._delete(pod)
        if detail is not None:
            # Not deleted, so not the scheduler's disruption: the mark goes (as an evictor
            # puts a victim's annotations back), or a gang the next leader finishes runs
            # with it, and a real failure of its pod is ignored by its Job's
            # podFailurePolicy.
            detail += self._unmark(pod)
        if detail is not None and detail.startswith(NOT_LEADER):
            # Lost while the pod was marked: the event, like the deletion, is the new
            # leader's to write (an evictor that lost the lease posts none either).
            return
        if self.recorder is not None:
            self.recorder.record(
                ObjectRef("Pod", pod.namespace, pod.name, pod.uid),
                "Warning",
                "GangBindUndone",
                message if detail is None else f"{message}; the deletion failed: {detail}",
            )

    def _mark_disrupted(self, pod: PodInfo, message: str) -> None:
        """Say on the pod, before it is deleted, that its end is the scheduler's doing:
        the condition `DisruptionTarget`, as kube-scheduler writes it on a victim before
        deleting it and the API server on an evicted pod. A Job whose podFailurePolicy
        ignores that condition (docs/policy.md, "Workloads a reclaim puts back in the
        queue") then counts no failure, where a plain deletion counted one against its
        backoffLimit: a gang Job with backoffLimit 0 failed for good when fairpool undid
        its half-done bind. Best effort: the deletion goes ahead whatever the answer."""
        condition = {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "GangBindUndone",
            "message": message[:1024],
            "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        try:
            patch_pod_status(
                self._core, pod.name, pod.namespace, pod.uid, {"conditions": [condition]}
            )
        except ApiException as exc:
            if exc.status not in (404, 409, 422):  # gone, or replaced under its name
                log.warning(
                    "marking %s disrupted before its deletion failed: %s %s",
                    pod.key,
                    exc.status,
                    status_message(exc),
                )
        except Exception as exc:  # connection refused/reset: the deletion retries
            log.warning("marking %s disrupted before its deletion failed: %s", pod.key, _why(exc))

    def _unmark(self, pod: PodInfo) -> str:
        """Remove the `DisruptionTarget` condition `_mark_disrupted` wrote; "" when done
        (or the pod is gone), else why not."""
        try:
            patch_pod_status(
                self._core,
                pod.name,
                pod.namespace,
                pod.uid,
                {"conditions": [{"type": "DisruptionTarget", "$patch": "delete"}]},
            )
        except ApiException as exc:
            if exc.status in (404, 409, 422):  # gone, or replaced under its name
                return ""
            why = f"{exc.status} {status_message(exc)}"
        except Exception as exc:  # connection refused/reset
            why = _why(exc)
        else:
            return ""
        log.warning("removing the DisruptionTarget mark of %s failed: %s", pod.key, why)
        return f"; its DisruptionTarget condition could not be removed: {why}"

    def _delete(self, pod: PodInfo) -> str | None:
        """Delete the pod (this very one: UID precondition); None when it is deleted or
        already gone, else why not."""
        body = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=pod.uid))
        last = ""
        backoff = _Backoff(self.base_backoff, self.retry_seconds, self._closing)
        while True:
            asked: float | None = None
            if not self._may_act():
                # Lost during the retries: the new leader may have finished the gang.
                log.warning("not deleting %s of a gang: not the leader any more", pod.key)
                return NOT_LEADER
            try:
                read_body(
                    self._core.delete_namespaced_pod(
                        pod.name,
                        pod.namespace,
                        body=body,
                        _preload_content=False,
                        _request_timeout=(5, 30),
                    )
                )
                return None
            except ApiException as exc:
                if exc.status in (404, 409):  # gone, or replaced under the same name
                    return None
                last = f"{exc.status} {status_message(exc)}"
                asked = retry_after(exc)
                if exc.status not in RETRYABLE:
                    break
            except Exception as exc:  # connection refused/reset: the API server restarts
                last = f"{type(exc).__name__}: {exc}"
            if not backoff.wait(asked):
                break
        log.error("could not delete %s of a gang not bound whole: %s", pod.key, last)
        return last

    def _current_node(self, pod: PodInfo) -> str | None:
        """The node the pod is bound to now ("" if none); None when it no longer exists
        (or was replaced by a pod of the same name)."""
        try:
            current = self._core.read_namespaced_pod(
                pod.name, pod.namespace, _request_timeout=(5, 30)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        if current.metadata is None or current.metadata.uid != pod.uid:
            return None
        return (current.spec.node_name if current.spec else "") or ""

    @staticmethod
    def _scheduled_message(bind: Bind, pod: PodInfo) -> str:
        borrowing = f", borrowing from {bind.owner}" if bind.reclaimable and bind.owner else ""
        return f"Successfully assigned {pod.key} to {bind.node} (member {bind.member}{borrowing})"


def _why(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {status_message(exc)}"
    return f"{type(exc).__name__}: {exc}"


_ASSIGNED = re.compile(r'already assigned to node "([^"]+)"')


def _assigned_node(message: str) -> str:
    """The node a 409 "pod X is already assigned to node "N"" names, else ""."""
    found = _ASSIGNED.search(message)
    return found.group(1) if found else ""
