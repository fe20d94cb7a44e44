"""The gRPC server: PolicyService, ShareService and UsageService behind the bearer-token
interceptor, with TLS (optionally mutual), message size limits, health checking and
reflection. It serves any SchedulerView: the daemon's, or a standalone one."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from policies.errors import InputError
from policies.model import Policy
from proto.fairpool.v1 import (
    policy_pb2,
    policy_pb2_grpc,
    share_pb2,
    share_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)
from reports.ledger import Ledger
from scheduler.api.auth import Authenticator, AuthInterceptor, TokenTable
from scheduler.api.front import FrontSettings, ReadFront
from scheduler.api.guard import CallLimits, Guard
from scheduler.api.metrics import ApiCollector
from scheduler.api.policy_audit import AuditLog
from scheduler.api.policy_service import PolicyServicer
from scheduler.api.policy_store import PolicySource, PolicyStore, StoredPolicyBroken
from scheduler.api.share_service import PublishedShares, ShareServicer
from scheduler.api.tls import is_loopback, listen
from scheduler.api.usage_service import UsageServicer
from scheduler.api.whatif import WhatIf
from scheduler.engine.decisions import MemberShare
from scheduler.engine.snapshot import Snapshot
from scheduler.k8s.daemon import SchedulerView

log = logging.getLogger(__name__)

MIB = 1 << 20
SERVICE_NAMES = (
    policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name,
    share_pb2.DESCRIPTOR.services_by_name["ShareService"].full_name,
    usage_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name,
)


@dataclass(frozen=True)
class ApiConfig:
    tokens: TokenTable
    policy_source: PolicySource
    ledger_url: str
    """SQLAlchemy URL of the ledger database; the policy audit log lives there too."""
    address: str = "127.0.0.1:50051"
    """host:port; port 0 picks a free one (see ApiServer.port)."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    """Require client certificates signed by this CA (mutual TLS)."""
    max_receive_bytes: int = 4 * MIB
    max_send_bytes: int = 64 * MIB
    max_workers: int = 32
    """Worker threads; a quarter of them at most serve WatchPolicy streams, half of them
    at most parse policy documents (see CallLimits.for_workers)."""
    max_concurrent_rpcs: int = 256
    """Beyond this many calls in flight, new ones get RESOURCE_EXHAUSTED at once."""
    refresh_seconds: float = 5.0
    """How often the policy source is checked for changes made outside the API."""
    token_reload_seconds: float = TokenTable.RECHECK_SECONDS
    """How often the token file is re-read in the background: the longest a revoked
    token keeps working (an open WatchPolicy stream: up to a second more)."""
    policy_store: PolicyStore | None = None
    """The store of the daemon the API is hosted in, when it keeps one (the Policy
    object's): one store, so one audit history, for the watch and ApplyPolicy."""
    limits: CallLimits | None = None
    """Concurrent expensive calls per identity and in total (default: from max_workers)."""
    insecure_plaintext: bool = False
    """Serve without TLS on an address other hosts can reach (a loud warning)."""
    registry: CollectorRegistry | None = None
    """Where the API's own series go (the daemon's /metrics registry)."""
    read_front: bool = False
    """Serve `address` from a front process that answers GetEntitlements itself and
    forwards every other call to this one, which then listens on a private unix socket
    (scheduler/api/front.py). Needs a token file."""


def _check_transport(config: ApiConfig) -> None:
    """TLS is on outside loopback: an address other hosts can reach needs a certificate
    and key, or an explicit `insecure_plaintext` (bearer tokens then travel in clear)."""
    if (config.tls_cert is None) != (config.tls_key is None):
        raise InputError("TLS needs both a certificate and a key")
    if config.tls_cert is not None or is_loopback(config.address):
        return
    if not config.insecure_plaintext:
        raise InputError(
            f"refusing to serve the API on {config.address} without TLS: bearer tokens would "
            "travel in clear to any host that can reach it. Give --tls-cert and --tls-key, "
            "listen on loopback (127.0.0.1), or accept the risk with --insecure-plaintext"
        )
    log.warning(
        "INSECURE: the fairpool API serves %s in PLAINTEXT: bearer tokens and policies "
        "cross the network unencrypted (--insecure-plaintext)",
        config.address,
    )


def _engine_shares(snapshot: Snapshot, policy: Policy) -> tuple[MemberShare, ...]:
    from scheduler.engine import compute_shares

    return compute_shares(snapshot, policy)


class ApiServer:
    def __init__(
        self,
        view: SchedulerView,
        config: ApiConfig,
        compute_shares: Callable[[Snapshot, Policy], tuple[MemberShare, ...]] = _engine_shares,
        what_if: WhatIf | None = None,
    ) -> None:
        self.config = config
        _check_transport(config)
        auth = Authenticator(config.tokens)
        self.guard = Guard(config.limits or CallLimits.for_workers(config.max_workers))
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="fairpool-api"),
            interceptors=[AuthInterceptor(auth, self.guard)],
            options=[
                ("grpc.max_receive_message_length", config.max_receive_bytes),
                ("grpc.max_send_message_length", config.max_send_bytes),
                # gRPC listens with SO_REUSEPORT unless told not to: a second API on the
                # same port started without error and took half the calls.
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        )
        self.port = 0
        """Known once the front listens (`start`) when there is one."""
        if not config.read_front:
            # Before the store: its first read records the policy in the ledger's audit
            # history, which a start refused for a taken address must not leave behind.
            self.port = listen(
                self._server, config.address, config.tls_cert, config.tls_key, config.client_ca
            )
        try:
            self.store = config.policy_store or PolicyStore(
                config.policy_source, AuditLog(config.ledger_url), on_change=view.set_policy
            )
        except BaseException:
            # An unstarted gRPC server keeps its port until the process ends.
            self._server.start()
            self._server.stop(None).wait()
            raise
        if config.registry is not None:
            config.registry.register(ApiCollector(config.tokens, self.guard, self._front_restarts))
        policy_pb2_grpc.add_PolicyServiceServicer_to_server(
            PolicyServicer(self.store, view, auth, compute_shares),
            self._server,
        )
        self.shares = PublishedShares(view, compute_shares)
        share_pb2_grpc.add_ShareServiceServicer_to_server(
            ShareServicer(
                view,
                auth,
                self.shares,
                what_if or WhatIf(),
                self._policy_version,
                Ledger(config.ledger_url),
            ),
            self._server,
        )
        usage_pb2_grpc.add_UsageServiceServicer_to_server(
            UsageServicer(auth, config.ledger_url, view.policy, self.store.policies),
            self._server,
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self.front: ReadFront | None = None
        self._private: Path | None = None
        if config.read_front:
            self.front = self._front(config)
        self._stopping = threading.Event()
        self._refresher = threading.Thread(
            target=self._refresh_loop, name="fairpool-policy-refresh", daemon=True
        )

    def _front_restarts(self) -> int | None:
        front = getattr(self, "front", None)
        return front.restarts if front is not None else None

    def _policy_version(self) -> int:
        return self.store.current()[0].version

    def _front(self, config: ApiConfig) -> ReadFront:
        """This server on a unix socket in a folder only this user can enter, the front
        on the public address."""
        if config.tokens.path is None:
            raise InputError("the API front needs a token file to read")
        self._private = Path(tempfile.mkdtemp(prefix="fairpool-api-"))
        backend = f"unix:{self._private / 'api.sock'}"
        if self._server.add_insecure_port(backend) == 0:
            raise OSError(f"cannot listen on {backend}")
        settings = FrontSettings(
            address=config.address,
            backend=backend,
            tokens=config.tokens.path,
            keep_tokens_on_reload_error=config.tokens.keep_on_reload_error,
            token_reload_seconds=config.token_reload_seconds,
            tls_cert=config.tls_cert,
            tls_key=config.tls_key,
            client_ca=config.client_ca,
            max_receive_bytes=config.max_receive_bytes,
            max_send_bytes=config.max_send_bytes,
            max_workers=config.max_workers,
            max_concurrent_rpcs=config.max_concurrent_rpcs,
            log_level=logging.getLogger().getEffectiveLevel(),
        )
        return ReadFront(settings, self.shares, self._policy_version, self.guard)

    @property
    def secure(self) -> bool:
        return self.config.tls_cert is not None

    def start(self) -> ApiServer:
        self.config.tokens.watch(self._stopping, self.config.token_reload_seconds)
        self._server.start()
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.front is not None:
            self.port = self.front.start()
        self._refresher.start()
        log.info("fairpool API listening on port %d (tls=%s)", self.port, self.secure)
        return self

    def _refresh_loop(self) -> None:
        reported = ""
        shared = self.config.policy_store is not None
        while not self._stopping.wait(self.config.refresh_seconds):
            try:
                if shared:
                    # A shared store is kept by its daemon's watch: only what is not
                    # read from the source (`PolicyStore.upkeep`).
                    self.store.upkeep()
                elif self.store.refresh():
                    log.info(
                        "policy changed outside the API: version %d",
                        self.store.current()[0].version,
                    )
                reported = ""
            except StoredPolicyBroken as exc:
                # Once per distinct problem, not every few seconds.
                if str(exc) != reported:
                    log.error("%s: %s", self.config.policy_source.name, exc)
                    reported = str(exc)
            except Exception:  # a failing source must not stop the server
                log.exception("cannot refresh the policy from %s", self.config.policy_source.name)

    def wait(self) -> None:
        self._server.wait_for_termination()

    def stop(self, grace: float | None = 1.0) -> None:
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        if self.front is not None:
            self.front.stop()
        self._server.stop(grace).wait()
        self.store.audit.close()
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
