"""An informer: list one resource, then watch it from the list's resourceVersion.

One thread per resource. The objects stay plain JSON dicts (no model deserialization:
it costs more than the scheduling itself at 5,000 pods), decoded by orjson: with the
standard library's decoder, decoding was a tenth of the daemon's time while it bound a
backlog of 5,000 pods. A `410 Gone` (the version fell out of the API server's watch
window) re-lists; so does every `resync_seconds`, which heals any event that was lost.
A broken connection (API server restart) resumes the watch from the last version seen
after a short backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import orjson
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from scheduler.k8s.objects import Obj

log = logging.getLogger(__name__)

ListFunction = Callable[..., Any]


class Sink(Protocol):
    def replace(self, kind: str, objects: list[Obj]) -> None: ...
    def apply(self, kind: str, event_type: str, obj: Obj) -> None: ...


class _DictWatch(watch.Watch):
    """`watch.Watch` that yields the API's JSON dicts and tracks resourceVersion on
    them (the stock `deserialize=False` path forgets the version and mishandles ERROR)."""

    def unmarshal_event(self, data: str, return_type: Any) -> dict[str, Any] | None:
        if not data or data.isspace():
            return None
        event: dict[str, Any] = orjson.loads(data)
        obj = event.get("object")
        event["raw_object"] = obj
        if event.get("type") != "ERROR" and isinstance(obj, dict):
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if version:
                self.resource_version = version
        return event


class Gone(Exception):
    """The watch's resourceVersion is too old: re-list."""


class Informer:
    def __init__(
        self,
        kind: str,
        list_function: ListFunction,
        sink: Sink,
        stop: threading.Event,
        *,
        resync_seconds: float = 300.0,
        watch_seconds: int = 60,
        page_size: int = 500,
        on_error: Callable[[str, BaseException], None] | None = None,
        optional: bool = False,
        on_unavailable: Callable[[str], None] | None = None,
        **list_kwargs: Any,
    ) -> None:
        self.kind = kind
        self.list_function = list_function
        self.sink = sink
        self.stop = stop
        self.resync_seconds = resync_seconds
        self.watch_seconds = watch_seconds
        self.page_size = page_size
        self.list_kwargs = list_kwargs
        self.on_error = on_error
        self.optional = optional
        """A resource the cluster may not have or fairpool may not read (PodGroups): a
        list refused with 401/403/404 counts as empty. For any other resource such an
        answer is an error, retried, and the cache keeps what it had: a kube-apiserver
        that just restarted refuses requests until its RBAC is loaded, and reading that
        as "no pods" would hand out GPUs that running pods hold."""
        self.on_unavailable = on_unavailable
        """Told the kind when an optional resource cannot be listed (the integration it
        serves is off until a later list succeeds)."""
        self.synced = threading.Event()
        """Set once the first full list is in the sink."""
        self.relists = 0
        self.forbidden = False
        """True when the identity may not list this resource (optional resources)."""
        self.last_error: str | None = None
        """The latest failure to list or watch (for a daemon that cannot start)."""
        self._thread = threading.Thread(target=self._run, name=f"informer-{kind}", daemon=True)
        self._watch: _DictWatch | None = None

    def start(self) -> Informer:
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        if self._watch is not None:
            self._watch.stop()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- the loop -----------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.5
        version: str | None = None
        while not self.stop.is_set():
            try:
                if version is None:
                    version = self._list()
                    self.relists += 1
                    self.synced.set()
                version = self._watch_until_resync(version)
                backoff = 0.5
            except Gone:
                log.info("%s: resourceVersion %s is gone, re-listing", self.kind, version)
                version = None
            except ApiException as exc:
                if exc.status == 410:
                    version = None
                    continue
                version = self._seen(version)
                if exc.status in (401, 403, 404) and version is None and self.optional:
                    # The resource is optional (PodGroups) and not readable: say so once,
                    # count as synced (empty), and look again much later.
                    if not self.forbidden:
                        log.warning(
                            "%s: cannot list (%s), treating as empty; tried again every %.0fs",
                            self.kind,
                            exc.status,
                            self.resync_seconds,
                        )
                    self.forbidden = True
                    self.sink.replace(self.kind, [])
                    if self.on_unavailable is not None:
                        self.on_unavailable(self.kind)
                    self.synced.set()
                    self.stop.wait(self.resync_seconds)
                    continue
                self._report(exc)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:  # the connection broke: the API server may restart
                version = self._seen(version)
                self._report(exc)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _seen(self, version: str | None) -> str | None:
        """Where a broken watch resumes: the last version it delivered (an event or a
        bookmark), not the list's. From the list's, the API server replays every event
        since (up to `resync_seconds` of them), and until the replay caught up the
        cache went back in time: pods bound minutes ago pending again, their GPUs free
        to a cycle."""
        if version is None or self._watch is None:
            return version
        return self._watch.resource_version or version

    def _report(self, exc: BaseException) -> None:
        if self.stop.is_set():
            return  # the connection was closed by join()
        log.warning("%s informer: %s: %s", self.kind, type(exc).__name__, exc)
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        if self.on_error is not None:
            self.on_error(self.kind, exc)

    def _list(self) -> str:
        items: list[Obj] = []
        token: str | None = None
        version = ""
        while True:
            kwargs: dict[str, Any] = dict(self.list_kwargs, limit=self.page_size)
            if token:
                kwargs["_continue"] = token
            response = self.list_function(
                _preload_content=False, _request_timeout=(5, 60), **kwargs
            )
            body = orjson.loads(response.data)
            items.extend(body.get("items") or ())
            meta = body.get("metadata") or {}
            version = meta.get("resourceVersion", version)
            token = meta.get("continue")
            if not token:
                break
        self.sink.replace(self.kind, items)
        return version

    def _watch_until_resync(self, version: str) -> str | None:
        """Watch from `version`; return the version to continue from, or None to re-list
        (resync due)."""
        deadline = time.monotonic() + self.resync_seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            self._watch = _DictWatch()
            self._watch.resource_version = version
            for event in self._events(self._watch, version):
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.sink.apply(self.kind, kind, obj)
                if self.stop.is_set():
                    break
            version = self._watch.resource_version or version
        return None if not self.stop.is_set() else version

    def _events(self, w: _DictWatch, version: str) -> Iterator[dict[str, Any]]:
        return w.stream(  # type: ignore[no-any-return]
            self.list_function,
            resource_version=version,
            timeout_seconds=self.watch_seconds,
            allow_watch_bookmarks=True,
            _request_timeout=(5, self.watch_seconds + 15),
            **self.list_kwargs,
        )
