"""Leader election on a `coordination.k8s.io/v1` Lease.

The stock `kubernetes.leaderelection` uses the process-wide default client and cannot be
stopped, so this is a small one with the same rules as client-go: a candidate takes the
Lease when it is free or when its holder has not renewed it for the holder's
`leaseDurationSeconds` (its `lease_seconds`) *as observed locally* (no clock comparison
between machines); the leader renews every
`retry_seconds` and steps down when it could not renew for `renew_deadline` seconds,
which is shorter than `lease_seconds`, so a deposed leader stops before another starts.
Updates carry the Lease's resourceVersion: of two candidates racing, one gets 409.

The deadline holds even while a request hangs (a half-open connection to an API server
that died, a request queued by API Priority and Fairness): `is_leading` is false once the
last renewal is `renew_deadline` old, whatever the loop is waiting for, and every request
gives up after `renew_deadline`. Before, only an answer cleared `leading`: a leader stuck
in a renewal went on binding and evicting, while a standby reaching another API server
could take the Lease `lease_seconds` later and do the same.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


def _now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: float = 10.0,
        renew_deadline: float = 7.0,
        retry_seconds: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        if not retry_seconds < renew_deadline < lease_seconds:
            raise ValueError("need retry_seconds < renew_deadline < lease_seconds")
        self._coordination = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_deadline = renew_deadline
        self.retry_seconds = retry_seconds
        self.on_change = on_change
        self.leading = threading.Event()
        self.transitions = 0
        self._observed: tuple[str, str] | None = None
        """(holder, renewTime) last seen, and when (monotonic) it last changed."""
        self._observed_at = 0.0
        self._last_renew = 0.0
        self._timeout = (min(retry_seconds, renew_deadline), renew_deadline)
        """(connect, read) seconds of each Lease request: none outlasts the deadline."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    @property
    def holder(self) -> str:
        return self._observed[0] if self._observed else ""

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def is_leading(self) -> bool:
        """This replica leads: it holds the Lease and renewed it within `renew_deadline`."""
        return self.leading.is_set() and time.monotonic() - self._last_renew <= self.renew_deadline

    def start(self) -> LeaderElector:
        self._thread.start()
        return self

    def stop(self, release: bool = True) -> None:
        """Stop campaigning; a leader gives the Lease up so a standby takes over at once."""
        self._stop.set()
        self._thread.join(timeout=self.retry_seconds + 10)
        if release and self.leading.is_set():
            self._release()
        self._set_leading(False)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ok = self._try_acquire_or_renew()
            except Exception as exc:  # API server unreachable: keep trying
                log.debug("lease %s/%s: %s", self.namespace, self.name, exc)
                ok = False
            now = time.monotonic()
            if ok:
                self._last_renew = now
                self._set_leading(True)
            elif self.leading.is_set() and now - self._last_renew > self.renew_deadline:
                log.warning("%s lost the lease %s/%s", self.identity, self.namespace, self.name)
                self._set_leading(False)
            self._stop.wait(self.retry_seconds)

    def _set_leading(self, leading: bool) -> None:
        if leading == self.leading.is_set():
            return
        if leading:
            self.leading.set()
            log.info("%s is now the leader", self.identity)
        else:
            self.leading.clear()
        if self.on_change is not None:
            self.on_change(leading)

    def _spec(self, transitions: int, acquire_time: str | None) -> dict[str, Any]:
        now = _now_micro()
        return {
            "holderIdentity": self.identity,
            # Rounded up: a standby waits this out, and the holder steps down after
            # renew_deadline < lease_seconds (4.5 s written as 4 let a standby lead while
            # a holder with a 4.2 s deadline still did).
            "leaseDurationSeconds": math.ceil(self.lease_seconds),
            "acquireTime": acquire_time or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    def _try_acquire_or_renew(self) -> bool:
        try:
            lease = self._coordination.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(0, None),
            }
            try:
                self._coordination.create_namespaced_lease(
                    self.namespace,
                    body,  # type: ignore[arg-type]
                    _request_timeout=self._timeout,
                )
            except ApiException as exc2:
                if exc2.status == 409:
                    return False
                raise
            self._observe(self.identity, "x")
            return True
        spec = lease.spec
        holder = (spec.holder_identity if spec else None) or ""
        renew = str(spec.renew_time) if spec and spec.renew_time else ""
        self._observe(holder, renew)
        mine = holder == self.identity
        expired = time.monotonic() - self._observed_at > self._holders_lease(spec)
        if holder and not mine and not expired:
            return False
        transitions = (spec.lease_transitions or 0) if spec else 0
        acquire_time = None
        if mine and spec and spec.acquire_time:
            acquire_time = spec.acquire_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        else:
            transitions += 1
        new_spec = self._spec(transitions, acquire_time)
        body = self._replacement(lease, new_spec)
        try:
            self._coordination.replace_namespaced_lease(
                self.name,
                self.namespace,
                body,  # type: ignore[arg-type]
                _request_timeout=self._timeout,
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        if not mine:
            self.transitions += 1
        self._observe(self.identity, str(new_spec["renewTime"]))
        return True

    def _holders_lease(self, spec: Any) -> float:
        """How long the holder's Lease lasts unrenewed: the duration it wrote, as
        client-go reads it, else this replica's own. Replicas given different
        --lease-seconds (a rolling change of the flag) judged it by their own: a standby
        with a shorter one took the Lease over from a holder that renewed well within its
        deadline, and both led."""
        written = getattr(spec, "lease_duration_seconds", None) if spec else None
        return float(written) if written and written > 0 else self.lease_seconds

    def _replacement(self, lease: Any, spec: dict[str, Any]) -> dict[str, Any]:
        """A Lease body that replaces `lease` only if nobody changed it meanwhile (its
        resourceVersion is the precondition)."""
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": lease.metadata.resource_version if lease.metadata else None,
            },
            "spec": spec,
        }

    def _observe(self, holder: str, renew: str) -> None:
        if self._observed != (holder, renew):
            self._observed = (holder, renew)
            self._observed_at = time.monotonic()

    def _release(self) -> None:
        try:
            lease = self._coordination.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self._timeout
            )
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            body = self._replacement(
                lease,
                {
                    "holderIdentity": "",
                    "leaseDurationSeconds": 1,
                    "leaseTransitions": lease.spec.lease_transitions or 0,
                    "renewTime": _now_micro(),
                },
            )
            self._coordination.replace_namespaced_lease(
                self.name,
                self.namespace,
                body,  # type: ignore[arg-type]
                _request_timeout=self._timeout,
            )
        except Exception as exc:
            log.debug("lease release failed: %s", exc)
