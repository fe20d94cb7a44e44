"""Kubernetes Events about pods and the policy (its ConfigMap or Policy object):
`Scheduled`, `FailedScheduling`, `Preempted`, `PolicyRejected`, `PolicyRefused`, ...

Events are best effort, as in client-go's broadcaster: they are posted by two background
workers and dropped (counted) when more than `queue_limit` wait. Binds come first: each
event costs the API server about what a bind costs, so while `busy()` says binds are in
flight the workers hold their events back (up to `defer_seconds` each), and a burst of
5,000 binds goes out at the API server's rate with its `Scheduled` events after it (those
beyond `queue_limit` dropped). `FailedScheduling` is rate-limited per pod: repeated only
when the explanation changes or after `repeat_seconds`.

`level` chooses what is posted at all: `all`, `warnings` (no `Scheduled` or other
Normal events: what a large cluster with a busy API server may prefer), or `none`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from scheduler.k8s.client import namespaced_path, post_json

log = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]
EventLevel = Literal["all", "warnings", "none"]
EVENT_LEVELS: tuple[EventLevel, ...] = ("all", "warnings", "none")


MESSAGE_LIMIT = 1024
"""Characters of an event's message kept, as before: the limit Kubernetes' event
validation puts on a note (`NoteLengthLimit`), to which kube-scheduler cuts its own
FailedScheduling messages (ending them in " ...", wherever the cut falls)."""


@dataclass(frozen=True, slots=True)
class ObjectRef:
    kind: str
    namespace: str
    name: str
    uid: str = ""
    api_version: str = "v1"


def fitted(message: str, ref: ObjectRef, limit: int = MESSAGE_LIMIT) -> str:
    """The message cut to `limit` characters at the end of a clause, saying where the
    rest is. A waiting job's sentence on a large cluster (what reclaim and consolidation
    found, node by node) can run past the limit, and a sentence cut mid-word reads as
    the whole of it; for a pod, `fairpool explain` gives the rest."""
    if len(message) <= limit:
        return message
    rest = (
        f"; … (the whole sentence: fairpool explain {ref.namespace}/{ref.name})"
        if ref.kind == "Pod"
        else " …"
    )
    room = max(0, limit - len(rest))
    cut = message.rfind("; ", 0, room + 1)
    if cut <= 0:
        cut = message.rfind(" ", 0, room + 1)
    return message[: cut if cut > 0 else room] + rest


class EventRecorder:
    def __init__(
        self,
        api: client.ApiClient,
        component: str = "fairpool",
        instance: str = "",
        workers: int = 2,
        queue_limit: int = 1000,
        repeat_seconds: float = 60.0,
        level: EventLevel = "all",
        busy: Callable[[], bool] | None = None,
        defer_seconds: float = 30.0,
    ) -> None:
        if level not in EVENT_LEVELS:
            raise ValueError(f"events: expected one of {', '.join(EVENT_LEVELS)}, got {level!r}")
        self._api = api
        self.component = component
        self.instance = instance
        self.queue_limit = queue_limit
        self.repeat_seconds = repeat_seconds
        self.level = level
        self.busy = busy
        """True while binds are in flight: events wait (they would slow the binds down)."""
        self.defer_seconds = defer_seconds
        self._closed = threading.Event()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="events")
        self._lock = threading.Lock()
        self._queued = 0
        self.dropped = 0
        self.posted = 0
        self._last_failed: dict[str, tuple[float, str]] = {}
        self._kept_at_prune = 0

    def wanted(self, event_type: EventType) -> bool:
        """Whether events of this type are posted at this level."""
        return self.level == "all" or (self.level == "warnings" and event_type == "Warning")

    def record(self, ref: ObjectRef, event_type: EventType, reason: str, message: str) -> None:
        if not self.wanted(event_type):
            return
        with self._lock:
            if self._queued >= self.queue_limit:
                self.dropped += 1
                return
            self._queued += 1
        self._pool.submit(self._post, ref, event_type, reason, message)

    def failed_scheduling(self, ref: ObjectRef, message: str, now: float | None = None) -> bool:
        """A `FailedScheduling` warning unless the same one went out recently."""
        if not self.wanted("Warning"):
            return False
        now = time.time() if now is None else now
        if not self.due(ref.uid or f"{ref.namespace}/{ref.name}", message, now):
            return False
        self.record(ref, "Warning", "FailedScheduling", message)
        return True

    def due(self, key: str, message: str, now: float) -> bool:
        """A `FailedScheduling` warning saying `message` is due for the pod `key` (its
        uid): the same one did not go out within `repeat_seconds`. Counted as sent.
        Checked before the event is built: at 50,000 waiting pods a cycle asks for
        each of them, and almost every answer is no."""
        with self._lock:
            last = self._last_failed.get(key)
            if last is not None and last[1] == message and now - last[0] < self.repeat_seconds:
                return False
            self._last_failed[key] = (now, message)
            if len(self._last_failed) > 2 * self._kept_at_prune + 1024:
                self._prune(now)
        return True

    def _prune(self, now: float) -> None:
        """Drop what no longer rate-limits anything (older than `repeat_seconds`): the
        entries of pods deleted while they waited (cancelled work) were never dropped
        otherwise, each with its whole sentence. Run when the table doubled since the
        last prune, so its cost per call stays constant."""
        repeat = self.repeat_seconds
        self._last_failed = {k: v for k, v in self._last_failed.items() if now - v[0] < repeat}
        self._kept_at_prune = len(self._last_failed)

    def forget(self, uid: str) -> None:
        """The pod is scheduled or gone: no rate-limit memory needed any more."""
        with self._lock:
            self._last_failed.pop(uid, None)

    def flush(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._queued == 0:
                    return
            time.sleep(0.05)

    def close(self) -> None:
        self._closed.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _yield_to_binds(self) -> None:
        """Wait while binds are in flight (at most `defer_seconds`)."""
        if self.busy is None:
            return
        deadline = time.monotonic() + self.defer_seconds
        while self.busy() and time.monotonic() < deadline:
            if self._closed.wait(0.02):
                return

    def _post(self, ref: ObjectRef, event_type: EventType, reason: str, message: str) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        # Events about a cluster-scoped object (the Policy) live in "default", as the
        # events about nodes do.
        namespace = ref.namespace or "default"
        body: dict[str, Any] = {
            "metadata": {"generateName": f"{ref.name}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "namespace": ref.namespace or None,
                "name": ref.name,
                "uid": ref.uid or None,
            },
            "type": event_type,
            "reason": reason,
            "message": fitted(message, ref),
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.instance or self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._yield_to_binds()
            post_json(self._api, namespaced_path(namespace, "events"), body, (5, 10))
            self.posted += 1
        except (ApiException, OSError, ValueError) as exc:
            log.debug("event %s on %s/%s not posted: %s", reason, ref.namespace, ref.name, exc)
        except Exception as exc:  # connection errors from urllib3
            log.debug("event %s not posted: %s", reason, exc)
        finally:
            with self._lock:
                self._queued -= 1
