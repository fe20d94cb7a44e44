"""The read front: the API's public address served by a process of its own, so that
GetEntitlements never waits for the scheduling cycle's hold on the daemon's interpreter.

The daemon's process keeps the whole API (every service, the policy store, the guard's
per-identity limits) on a private unix socket. The front process listens on the public
address with the same TLS, token file and limits on message size and calls in flight:

- GetEntitlements is answered in the front from the shares of the latest publication,
  which the daemon's process sends it (`ReadAnswers`: a few hundred bytes per
  publication or policy change) over a pipe; the same bearer-token roles and member
  scoping apply, through the same interceptor and guard code.
- ListPending and ExplainPending are answered in the front from its copy of the pending
  queue, which each `ReadAnswers` brings up to date with what changed
  (`queue_copy`), through the same functions as in the daemon's process
  (`pending_queue`). A standby works out its sentences only when asked, so through
  its front ExplainPending is forwarded.
- Every other call (writes, streams, health checking, reflection) is forwarded as bytes
  to the daemon's process with the caller's metadata and deadline, and its answer or
  status comes back unchanged: the daemon's process authenticates it and applies its
  limits exactly as when it listens itself.

An ApplyPolicy forwarded through the front returns once the front answers with the
applied policy's shares (or after `APPLY_VISIBLE_SECONDS`), so whoever applied a policy
reads its effect at once, as before.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from policies.errors import GRPC_BIND_FAILED, ListenError
from proto.fairpool.v1 import policy_pb2, share_pb2, share_pb2_grpc, usage_pb2
from scheduler.api.auth import Authenticator, AuthInterceptor, TokenTable, refuse_unknown_member
from scheduler.api.errors import abort
from scheduler.api.guard import CallLimits, Guard
from scheduler.api.pending_queue import caller_scope, explain_pending, list_pending
from scheduler.api.policy_service import validate_policy
from scheduler.api.queue_copy import QueueChange, QueueCopy, QueueSender
from scheduler.api.share_service import (
    Book,
    PublishedShares,
    entitlements_response,
    not_a_gpu_model,
)
from scheduler.api.tls import listen
from scheduler.engine.decisions import MemberShare
from scheduler.k8s.published import Rejected

log = logging.getLogger(__name__)

EXPLAIN_METHOD = "/fairpool.v1.ShareService/ExplainPending"
LOCAL_METHODS = frozenset(
    {
        "/fairpool.v1.ShareService/GetEntitlements",
        "/fairpool.v1.ShareService/ListPending",
        EXPLAIN_METHOD,
        "/fairpool.v1.PolicyService/ValidatePolicy",
    }
)
"""Answered by the front itself; everything else is forwarded. ValidatePolicy needs no
daemon state, and its parsing is the heaviest read a caller can ask for. ExplainPending
is forwarded while the daemon's process works out its sentences only when asked (a
standby)."""
APPLY_METHOD = "/fairpool.v1.PolicyService/ApplyPolicy"
PUBLISH_POLL_SECONDS = 0.02
"""How often the daemon's process looks for a new publication or policy to send: two
attribute reads when nothing changed."""
APPLY_VISIBLE_SECONDS = 2.0
"""Longest an ApplyPolicy answer waits for the front to hold the applied policy's shares
(a policy applied to a Policy object reaches the daemon through its own reload)."""
STATS_SECONDS = 2.0
START_SECONDS = 60.0
RESTART_PAUSE_SECONDS = 1.0
NOT_FORWARDED_METADATA = frozenset(
    {"grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "user-agent", "te", "content-type"}
)
"""Transport headers the forwarding channel sets itself."""


@dataclass(frozen=True, slots=True)
class ReadAnswers:
    """What the front needs from one publication under one policy."""

    published_version: int
    policy_version: int
    now: float
    shares: tuple[MemberShare, ...]
    members: tuple[str, ...]
    capacity: Mapping[str, int]
    gpu_models: frozenset[str]
    queue: QueueChange | None = None
    """The publication's pending queue, as a change to the one sent before (None: the
    same publication, under a new policy)."""


@dataclass(frozen=True, slots=True)
class FrontBook:
    """One publication's queue under one policy, as ListPending and ExplainPending read
    it in the front (`pending_queue.QueueBook`)."""

    answers: ReadAnswers
    queue: QueueCopy

    @property
    def members(self) -> tuple[str, ...]:
        return self.answers.members

    @property
    def now(self) -> float:
        return self.answers.now

    @property
    def rejected(self) -> tuple[Rejected, ...]:
        return self.queue.rejected

    @property
    def explanations(self) -> Mapping[str, str]:
        return self.queue.sentences or {}

    def bound(self, job_id: str) -> list[str]:
        return self.queue.bound(job_id)


@dataclass(frozen=True)
class FrontSettings:
    """How the front listens and whom it lets in: the public side of an ApiConfig."""

    address: str
    backend: str
    """The daemon's process's private address (a unix socket) calls are forwarded to."""
    tokens: Path
    keep_tokens_on_reload_error: bool
    token_reload_seconds: float
    tls_cert: Path | None
    tls_key: Path | None
    client_ca: Path | None
    max_receive_bytes: int
    max_send_bytes: int
    max_workers: int
    max_concurrent_rpcs: int
    log_level: int = logging.WARNING


class FrontAnswers:
    """The front's copy of the latest ReadAnswers, with each GetEntitlements answer
    serialized once per scope (as the daemon's book does)."""

    def __init__(self) -> None:
        self._state: tuple[ReadAnswers | None, dict[tuple[str | None, str], bytes], QueueCopy] = (
            None,
            {},
            QueueCopy(),
        )
        """The answers, their serialized replies and the queue, replaced together in one
        assignment: as two attributes, a reader between the two stores paired old answers
        with the new cache and kept a stale reply in it for the whole publication."""
        self._changed = threading.Condition()

    def update(self, answers: ReadAnswers) -> None:
        queue = self._state[2]
        if answers.queue is not None:
            queue = queue.apply(answers.queue)
        with self._changed:
            self._state = (answers, {}, queue)
            self._changed.notify_all()

    @property
    def current(self) -> ReadAnswers | None:
        return self._state[0]

    def book(self) -> FrontBook:
        answers, _, queue = self._state
        if answers is None:
            raise RuntimeError("no answers received from the daemon's process")
        return FrontBook(answers, queue)

    def entitlements(self, member: str | None, gpu_model: str) -> bytes:
        answers, cache, _ = self._state
        if answers is None:
            # The daemon's process sends its first answers before the front listens.
            raise RuntimeError("no answers received from the daemon's process")
        key = (member, gpu_model)
        answer = cache.get(key)
        if answer is None:
            answer = entitlements_response(
                answers.shares,
                member,
                gpu_model,
                answers.policy_version,
                answers.now,
                answers.capacity,
            ).SerializeToString()
            # Only scopes that exist are kept, so names made up by callers cannot fill it.
            if (member is None or member in answers.members) and (
                not gpu_model or any(s.gpu_model == gpu_model for s in answers.shares)
            ):
                cache[key] = answer
        return answer

    def wait_policy(self, version: int, timeout: float) -> bool:
        """Until the answers are those of policy `version` or newer."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._state[0] is not None and self._state[0].policy_version >= version,
                timeout,
            )


class FrontShareServicer(share_pb2_grpc.ShareServiceServicer):
    def __init__(
        self,
        auth: Authenticator,
        answers: FrontAnswers,
        forward_explain: Callable[[bytes, grpc.ServicerContext], bytes],
    ) -> None:
        self._auth = auth
        self._answers = answers
        self._forward_explain = forward_explain

    def ListPending(
        self, request: share_pb2.ListPendingRequest, context: grpc.ServicerContext
    ) -> share_pb2.ListPendingResponse:
        book = self._answers.book()
        return list_pending(
            book.queue.index,
            book,
            request,
            self._auth.caller(context),
            context,
            book.answers.policy_version,
        )

    def ExplainPending(
        self, request: share_pb2.ExplainPendingRequest, context: grpc.ServicerContext
    ) -> share_pb2.ExplainPendingResponse | bytes:
        book = self._answers.book()
        if book.queue.sentences is None:
            return self._forward_explain(request.SerializeToString(), context)
        principal = self._auth.caller(context)
        return explain_pending(book.queue.index, book, request, principal, context)

    def GetEntitlements(
        self, request: share_pb2.GetEntitlementsRequest, context: grpc.ServicerContext
    ) -> bytes:
        principal = self._auth.caller(context)
        member = caller_scope(principal, request.member, context, everyone=True)
        answers = self._answers.current
        if member is not None and answers is not None and member not in answers.members:
            refuse_unknown_member(context, principal, member, answers.policy_version)
        if (
            answers is not None
            and request.gpu_model
            and request.gpu_model not in answers.gpu_models
        ):
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                not_a_gpu_model(request.gpu_model, answers.policy_version),
            )
        return self._answers.entitlements(member, request.gpu_model)


def method_kinds() -> dict[str, tuple[bool, bool]]:
    """Full method name -> (client streaming, server streaming), for every method the
    daemon's server has: the fairpool services, health checking and reflection."""
    kinds: dict[str, tuple[bool, bool]] = {}
    for file in (
        policy_pb2.DESCRIPTOR,
        share_pb2.DESCRIPTOR,
        usage_pb2.DESCRIPTOR,
        health_pb2.DESCRIPTOR,
        reflection_pb2.DESCRIPTOR,
    ):
        for service in file.services_by_name.values():
            for method in service.methods:
                kinds[f"/{service.full_name}/{method.name}"] = (
                    method.client_streaming,
                    method.server_streaming,
                )
    return kinds


def _identity(data: bytes) -> bytes:
    return data


def _metadata(context: grpc.ServicerContext) -> list[tuple[str, str | bytes]]:
    return [
        (key, value)
        for key, value in context.invocation_metadata()
        if key.lower() not in NOT_FORWARDED_METADATA and not key.startswith(":")
    ]


def _timeout(context: grpc.ServicerContext) -> float | None:
    # Without a deadline, grpc reports about 9e18 seconds remaining.
    remaining = context.time_remaining()
    return None if remaining is None or remaining > 1e9 else max(remaining, 0.0)


class Forward(grpc.GenericRpcHandler):
    """Every method not answered in the front, forwarded as bytes to the daemon's
    process: the caller's metadata (its bearer token) and deadline go with it; the
    answer, the status, its details and the trailing metadata come back as they are."""

    def __init__(self, channel: grpc.Channel, answers: FrontAnswers) -> None:
        self._channel = channel
        self._answers = answers
        self._kinds = method_kinds()

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        kind = self._kinds.get(method)
        if kind is None or method in LOCAL_METHODS:
            return None
        client_streaming, server_streaming = kind
        if client_streaming and server_streaming:
            return self._stream_stream(method)
        if server_streaming:
            return self._unary_stream(method)
        if client_streaming:
            return None  # none in the daemon's server
        return self._unary_unary(method)

    def _unary_unary(self, method: str) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(self.unary(method))

    def unary(self, method: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        """The forwarding of a unary call's bytes, answered with the answer's bytes."""
        call = self._channel.unary_unary(
            method, request_serializer=_identity, response_deserializer=_identity
        )

        def forward(request: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                response, answered = call.with_call(
                    request, metadata=_metadata(context), timeout=_timeout(context)
                )
            except grpc.RpcError as exc:
                context.set_trailing_metadata(exc.trailing_metadata() or ())  # type: ignore[attr-defined]
                context.abort(exc.code(), exc.details())  # type: ignore[attr-defined]
            context.set_trailing_metadata(answered.trailing_metadata() or ())
            if method == APPLY_METHOD:
                applied = policy_pb2.ApplyPolicyResponse.FromString(response).applied.version
                if applied:
                    self._answers.wait_policy(applied, APPLY_VISIBLE_SECONDS)
            return response  # type: ignore[no-any-return]

        return forward

    def _unary_stream(self, method: str) -> grpc.RpcMethodHandler:
        call = self._channel.unary_stream(
            method, request_serializer=_identity, response_deserializer=_identity
        )

        def forward(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            responses = call(request, metadata=_metadata(context), timeout=_timeout(context))
            context.add_callback(responses.cancel)
            yield from _relay(responses, context)

        return grpc.unary_stream_rpc_method_handler(forward)

    def _stream_stream(self, method: str) -> grpc.RpcMethodHandler:
        call = self._channel.stream_stream(
            method, request_serializer=_identity, response_deserializer=_identity
        )

        def forward(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            responses = call(requests, metadata=_metadata(context), timeout=_timeout(context))
            context.add_callback(responses.cancel)
            yield from _relay(responses, context)

        return grpc.stream_stream_rpc_method_handler(forward)


def _relay(responses: Any, context: grpc.ServicerContext) -> Iterator[bytes]:
    try:
        yield from responses
    except grpc.RpcError as exc:
        if context.is_active():
            context.set_trailing_metadata(exc.trailing_metadata() or ())  # type: ignore[attr-defined]
            context.abort(exc.code(), exc.details())  # type: ignore[attr-defined]


class LocalAuthInterceptor(AuthInterceptor):
    """The daemon's interceptor, for the calls the front answers; forwarded calls pass
    untouched, to be authenticated and limited by the daemon's process."""

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        if handler_call_details.method not in LOCAL_METHODS:
            return continuation(handler_call_details)
        return super().intercept_service(continuation, handler_call_details)


def serve_front(conn: Connection, settings: FrontSettings) -> None:
    """The front process: listen, tell the daemon's process the port, then take its
    answers until it says stop or goes away."""
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s front %(name)s: %(message)s"
    )
    answers = FrontAnswers()
    first = conn.recv()
    answers.update(first)
    tokens = TokenTable(settings.tokens, keep_on_reload_error=settings.keep_tokens_on_reload_error)
    auth = Authenticator(tokens)
    guard = Guard(CallLimits.for_workers(settings.max_workers))
    # Forwarded calls hold a front thread while the daemon's process works on them: twice
    # the daemon's workers, so that its own limits, not the front's, decide.
    server = grpc.server(
        ThreadPoolExecutor(
            max_workers=2 * settings.max_workers, thread_name_prefix="fairpool-front"
        ),
        interceptors=[LocalAuthInterceptor(auth, guard)],
        options=[
            ("grpc.max_receive_message_length", settings.max_receive_bytes),
            ("grpc.max_send_message_length", settings.max_send_bytes),
            # gRPC listens with SO_REUSEPORT unless told not to: a second API on the
            # same port started without error and took half the calls.
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    channel = grpc.insecure_channel(
        settings.backend,
        options=[
            ("grpc.max_receive_message_length", settings.max_send_bytes),
            ("grpc.max_send_message_length", settings.max_receive_bytes),
        ],
    )
    forward = Forward(channel, answers)
    local = FrontShareServicer(auth, answers, forward.unary(EXPLAIN_METHOD))
    answered = grpc.method_handlers_generic_handler(
        "fairpool.v1.ShareService",
        {
            "GetEntitlements": grpc.unary_unary_rpc_method_handler(
                local.GetEntitlements,
                request_deserializer=share_pb2.GetEntitlementsRequest.FromString,
                response_serializer=share_pb2.GetEntitlementsResponse.SerializeToString,
            ),
            "ListPending": grpc.unary_unary_rpc_method_handler(
                local.ListPending,
                request_deserializer=share_pb2.ListPendingRequest.FromString,
                response_serializer=share_pb2.ListPendingResponse.SerializeToString,
            ),
            "ExplainPending": grpc.unary_unary_rpc_method_handler(
                local.ExplainPending,
                request_deserializer=share_pb2.ExplainPendingRequest.FromString,
                response_serializer=share_pb2.ExplainPendingResponse.SerializeToString,
            ),
        },
    )
    validated = grpc.method_handlers_generic_handler(
        "fairpool.v1.PolicyService",
        {
            "ValidatePolicy": grpc.unary_unary_rpc_method_handler(
                validate_policy,
                request_deserializer=policy_pb2.ValidatePolicyRequest.FromString,
                response_serializer=policy_pb2.ValidatePolicyResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((answered, validated, forward))
    try:
        port = listen(
            server, settings.address, settings.tls_cert, settings.tls_key, settings.client_ca
        )
    except ListenError:
        conn.send(("listen", GRPC_BIND_FAILED))
        return
    stopping = threading.Event()
    tokens.watch(stopping, settings.token_reload_seconds)
    server.start()
    conn.send(("port", port))
    sending = threading.Lock()

    def report() -> None:
        sent = 0
        while not stopping.wait(STATS_SECONDS):
            if guard.incidents != sent:
                with sending:
                    conn.send(("incidents", guard.incidents - sent))
                sent = guard.incidents

    threading.Thread(target=report, name="fairpool-front-stats", daemon=True).start()
    try:
        while True:
            message = conn.recv()
            if message == "stop":
                break
            answers.update(message)
    except (EOFError, OSError):
        log.error("the daemon's process went away: the API front stops")
    finally:
        stopping.set()
        server.stop(1.0).wait()
        channel.close()


class ReadFront:
    """The daemon's side: starts the front process, sends it the answers of each new
    publication or policy, adds its incidents to the daemon's, stops it."""

    def __init__(
        self,
        settings: FrontSettings,
        shares: PublishedShares,
        policy_version: Any,
        guard: Guard,
    ) -> None:
        self.settings = settings
        self._shares = shares
        self._policy_version = policy_version
        self._guard = guard
        self._stopping = threading.Event()
        self._conn: Connection | None = None
        self._process: BaseProcess | None = None
        self._publisher: threading.Thread | None = None
        self._restart_settings = settings
        self._queue = QueueSender()
        self.sent = 0
        """ReadAnswers sent so far."""
        self.restarts = 0
        """Fronts started again after the one before ended."""

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def _answers(self, book: Book) -> ReadAnswers:
        """The book's answers, with the change of the queue since the answers sent last
        (made only to be sent)."""
        return ReadAnswers(
            published_version=book.published.version,
            policy_version=book.policy.version or self._policy_version(),
            now=book.snapshot.now,
            shares=book.shares,
            members=book.members,
            capacity=book.capacity,
            gpu_models=book.gpu_models,
            queue=self._queue.change(book.published),
        )

    def start(self) -> int:
        """Start the front; its port once it listens."""
        book, port = self._launch(self.settings)
        # A restarted front must take the same port, also when the address asked for any.
        host = self.settings.address.rsplit(":", 1)[0]
        self._restart_settings = replace(self.settings, address=f"{host}:{port}")
        self._publisher = threading.Thread(
            target=self._publish_loop, args=(book,), name="fairpool-front-publisher", daemon=True
        )
        self._publisher.start()
        return port

    def _launch(self, settings: FrontSettings) -> tuple[object, int]:
        """A front process listening on `settings.address`, sent the latest answers: the
        book those came from and the port."""
        context = mp.get_context("spawn")  # never fork a process that runs grpc threads
        ours, theirs = context.Pipe()
        process = context.Process(
            target=serve_front, args=(theirs, settings), name="fairpool-api-front", daemon=True
        )
        process.start()
        theirs.close()
        self._conn, self._process = ours, process
        self._queue = QueueSender()  # a new front holds no queue yet
        book = self._shares.current()
        ours.send(self._answers(book))
        self.sent += 1
        if not ours.poll(START_SECONDS):
            process.kill()
            raise OSError(f"the API front did not start listening on {settings.address}")
        try:
            kind, value = ours.recv()
        except EOFError:
            kind, value = "error", "the API front process ended before it listened"
        if kind != "port":
            process.join(5.0)
            if kind == "listen":
                raise ListenError(settings.address, str(value))
            raise OSError(str(value))
        return book, int(value)

    def _publish_loop(self, sent_book: object) -> None:
        while not self._stopping.wait(PUBLISH_POLL_SECONDS):
            assert self._conn is not None and self._process is not None
            try:
                if not self._process.is_alive():
                    raise EOFError
                book = self._shares.current()
                if book is not sent_book:
                    self._conn.send(self._answers(book))
                    self.sent += 1
                    sent_book = book
                while self._conn.poll():
                    kind, value = self._conn.recv()
                    if kind == "incidents":
                        self._guard.incidents += int(value)
            except (EOFError, OSError):
                if self._stopping.is_set():
                    return
                sent_book = self._relaunch()
            except Exception:  # a failing book must not end the front's updates
                log.exception("cannot send the latest answers to the API front")
                # Whatever of the queue's change it got, the next answers send it whole.
                self._queue = QueueSender()

    def _relaunch(self) -> object:
        """A new front in place of one that ended (killed, out of memory, crashed): the
        API's address is unanswered only while it starts. Tried again after a pause while
        it cannot listen (the old socket not yet released)."""
        assert self._process is not None and self._conn is not None
        log.error(
            "the API front process ended (exit code %s): starting another",
            self._process.exitcode,
        )
        self._process.join(1.0)
        self._conn.close()
        while not self._stopping.is_set():
            try:
                book, _ = self._launch(self._restart_settings)
            except (OSError, ListenError) as exc:
                log.error("cannot restart the API front: %s", exc)
                self._stopping.wait(RESTART_PAUSE_SECONDS)
                continue
            self.restarts += 1
            return book
        return None

    def stop(self) -> None:
        self._stopping.set()
        if self._publisher is not None:
            self._publisher.join(5.0)
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send("stop")
        if self._process is not None:
            self._process.join(5.0)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5.0)
        if self._conn is not None:
            self._conn.close()
