"""What stands around every API call once its caller is known: bounds on how many
expensive calls one identity (and everyone) may have in flight, so that one caller cannot
take every worker thread, and a catch-all that turns an unexpected exception into
INTERNAL with a short incident id (logged once, with the traceback) instead of UNKNOWN."""

from __future__ import annotations

import collections
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

log = logging.getLogger(__name__)

POLICY_WORK = "policy documents"
SIMULATIONS = "simulations"
WATCHERS = "policy watchers"
REPORTS = "report builds"
LIMITED_METHODS: dict[str, str] = {
    "/fairpool.v1.PolicyService/ValidatePolicy": POLICY_WORK,
    "/fairpool.v1.PolicyService/ApplyPolicy": POLICY_WORK,
    "/fairpool.v1.ShareService/Simulate": SIMULATIONS,
    "/fairpool.v1.PolicyService/WatchPolicy": WATCHERS,
    "/fairpool.v1.UsageService/GetReport": REPORTS,
}
"""Method -> the kind of work it is bounded as. Each kind has its own slots."""


@dataclass(frozen=True)
class CallLimits:
    """Concurrent calls of each kind: per identity (a Principal) and in total."""

    policy_per_identity: int = 2
    policy_total: int = 4
    """Parsing is CPU-bound (one core, the GIL): more at once adds no throughput, only
    memory (a policy of the largest size peaks near 80 MiB while it is parsed)."""
    simulations_per_identity: int = 1
    simulations_total: int = 2
    """Each simulation runs two child processes."""
    watchers_per_identity: int = 2
    watchers_total: int = 4
    """A watcher holds a worker thread for as long as it watches."""
    reports_per_identity: int = 1
    reports_total: int = 2
    """A report build reads a month of the ledger and every policy version of the month
    into pandas, then writes the report's files: CPU and memory for seconds."""

    @classmethod
    def for_workers(cls, workers: int) -> CallLimits:
        """Limits that always leave threads for the cheap calls (policy work at most four
        and a quarter of the workers, watchers a quarter, simulations two, report builds
        two from 16 workers) and never let one identity take all the slots of a kind."""
        policy = max(1, min(4, workers // 4))
        watchers = max(1, workers // 4)
        simulations = max(1, min(2, workers // 4))
        reports = max(1, min(2, workers // 8))
        return cls(
            policy_per_identity=max(1, min(2, policy // 2)),
            policy_total=policy,
            simulations_per_identity=1,
            simulations_total=simulations,
            watchers_per_identity=max(1, min(2, watchers // 2)),
            watchers_total=watchers,
            reports_per_identity=1,
            reports_total=reports,
        )

    def of(self, kind: str) -> tuple[int, int]:
        if kind == POLICY_WORK:
            return self.policy_per_identity, self.policy_total
        if kind == SIMULATIONS:
            return self.simulations_per_identity, self.simulations_total
        if kind == REPORTS:
            return self.reports_per_identity, self.reports_total
        return self.watchers_per_identity, self.watchers_total


class Slots:
    """Counting slots of one kind of work, per identity and in total."""

    def __init__(self, kind: str, per_identity: int, total: int) -> None:
        self.kind = kind
        self.per_identity = per_identity
        self.total = total
        self._lock = threading.Lock()
        self._held: collections.Counter[object] = collections.Counter()
        self._in_use = 0

    def acquire(self, identity: object, who: str) -> str | None:
        """None when a slot was taken, else why not (for RESOURCE_EXHAUSTED)."""
        with self._lock:
            if self._held[identity] >= self.per_identity:
                return (
                    f"{who} already has {self._held[identity]} {self.kind} in progress "
                    f"(at most {self.per_identity} at once): wait for them to finish"
                )
            if self._in_use >= self.total:
                return f"the server has {self._in_use} {self.kind} in progress: try again later"
            self._held[identity] += 1
            self._in_use += 1
            return None

    def release(self, identity: object) -> None:
        with self._lock:
            self._held[identity] -= 1
            if self._held[identity] <= 0:
                del self._held[identity]
            self._in_use -= 1

    @property
    def in_use(self) -> int:
        return self._in_use


def pass_bytes(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """The handler with a response serializer that sends bytes as they are: a method may
    answer with a response it serialized once and keeps (GetEntitlements), instead of a
    message serialized again at every call."""
    serialize = handler.response_serializer
    if serialize is None:
        return handler

    def serializer(response: Any) -> bytes:
        return response if isinstance(response, bytes) else serialize(response)  # type: ignore[no-any-return]

    return handler._replace(response_serializer=serializer)  # type: ignore[attr-defined,no-any-return]


class Guard:
    """Wraps the behavior of a method handler with the slots of its kind and the
    catch-all; counts what it refused and the incidents, for /metrics."""

    def __init__(self, limits: CallLimits) -> None:
        self.slots = {
            kind: Slots(kind, *limits.of(kind))
            for kind in (POLICY_WORK, SIMULATIONS, WATCHERS, REPORTS)
        }
        self.refused: collections.Counter[str] = collections.Counter()
        """Calls refused with RESOURCE_EXHAUSTED, by method name."""
        self.incidents = 0
        """Unexpected exceptions answered with INTERNAL."""

    def wrap(
        self, handler: grpc.RpcMethodHandler, method: str, identity: object, who: str
    ) -> grpc.RpcMethodHandler:
        handler = pass_bytes(handler)
        kind = LIMITED_METHODS.get(method)
        slots = self.slots[kind] if kind is not None else None
        name = method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                with self._slot(slots, identity, who, name, context):
                    try:
                        return behavior(request, context)
                    except Exception as exc:
                        self._internal(exc, name, context)

            return handler._replace(unary_unary=unary)  # type: ignore[attr-defined,no-any-return]
        if handler.unary_stream is not None:
            stream_behavior = handler.unary_stream

            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                with self._slot(slots, identity, who, name, context):
                    try:
                        yield from stream_behavior(request, context)
                    except Exception as exc:
                        self._internal(exc, name, context)

            return handler._replace(unary_stream=stream)  # type: ignore[attr-defined,no-any-return]
        return handler  # no client-streaming methods in fairpool.v1

    def _slot(
        self,
        slots: Slots | None,
        identity: object,
        who: str,
        name: str,
        context: grpc.ServicerContext,
    ) -> _Held:
        if slots is None:
            return _Held(None, identity)
        refused = slots.acquire(identity, who)
        if refused is not None:
            self.refused[name] += 1
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{name}: {refused}")
        return _Held(slots, identity)

    def _internal(self, exc: Exception, name: str, context: grpc.ServicerContext) -> None:
        code: Callable[[], grpc.StatusCode | None] | None = getattr(context, "code", None)
        if code is not None and code() is not None:
            raise exc  # context.abort() already chose the status: not an incident
        incident = secrets.token_hex(4)
        self.incidents += 1
        log.error("internal error %s in %s", incident, name, exc_info=exc)
        context.abort(
            grpc.StatusCode.INTERNAL,
            f"internal error (incident {incident}): the server's log has the details",
        )


class _Held:
    """A taken slot, given back when the call ends however it ends."""

    def __init__(self, slots: Slots | None, identity: object) -> None:
        self._slots = slots
        self._identity = identity

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        if self._slots is not None:
            self._slots.release(self._identity)
