"""Who is calling and what they may do: bearer tokens mapped to roles.

Roles: `admin` (everything), `member:<name>` (its own usage, reports, queue and
explanations, the shared summary; no policy writes), `viewer` (entitlements and
summaries). The token file is YAML (`tokens: [{token, role, name}]` or `{token: role}`)
or CSV (`token,role[,name]`); it is re-read when it changes, so a rotated Secret takes
effect without a restart.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import grpc
import yaml

from policies.errors import InputError


class RoleKind(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    name: str
    """Shown as the author in the policy audit log."""
    kind: RoleKind
    member: str | None = None
    """The member a `member:<name>` caller speaks for."""

    @property
    def role(self) -> str:
        return f"member:{self.member}" if self.kind is RoleKind.MEMBER else str(self.kind)

    def may_see_member(self, member: str) -> bool:
        return self.kind is RoleKind.ADMIN or (
            self.kind is RoleKind.MEMBER and self.member == member
        )


def parse_role(text: str, where: str) -> tuple[RoleKind, str | None]:
    role = text.strip()
    if role in (RoleKind.ADMIN, RoleKind.VIEWER):
        return RoleKind(role), None
    if role.startswith("member:") and role.removeprefix("member:").strip():
        return RoleKind.MEMBER, role.removeprefix("member:").strip()
    raise InputError(f"{where}: unknown role {text!r} (admin, viewer or member:<name>)")


def _digest(token: str) -> bytes:
    # Tokens are looked up by hash so that the table never holds them in clear and a
    # lookup does not compare secrets byte by byte.
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    """Bearer token -> Principal, from a file, re-read when the file changes."""

    RECHECK_SECONDS = 2.0

    def __init__(self, path: Path | None = None, entries: Mapping[str, Principal] | None = None):
        self._path = path
        self._lock = threading.Lock()
        self._by_digest: dict[bytes, Principal] = {}
        self._mtime: float | None = None
        self._checked = 0.0
        if entries is not None:
            self._by_digest = {_digest(t): p for t, p in entries.items()}
        if path is not None:
            self._load()

    def _load(self) -> None:
        assert self._path is not None
        try:
            stat = self._path.stat()
            text = self._path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{self._path}: cannot read token file: {exc.strerror}") from exc
        self._by_digest = {_digest(t): p for t, p in parse_tokens(text, str(self._path))}
        self._mtime = stat.st_mtime

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if self._path is None or now - self._checked < self.RECHECK_SECONDS:
            return
        self._checked = now
        try:
            mtime = self._path.stat().st_mtime
        except OSError:
            return  # keep the last good table while a Secret is being swapped
        if mtime != self._mtime:
            # A half-written or bad file: keep serving with the last good table.
            with contextlib.suppress(InputError):
                self._load()

    def lookup(self, token: str) -> Principal | None:
        with self._lock:
            self._maybe_reload()
            return self._by_digest.get(_digest(token))


def parse_tokens(text: str, source: str) -> list[tuple[str, Principal]]:
    """Token entries from YAML or CSV text; every bad entry is an InputError with its line."""
    stripped = text.lstrip()
    first = stripped.splitlines()[0] if stripped else ""
    looks_csv = "," in first and ":" not in first.split(",")[0]
    rows = _csv_rows(text, source) if looks_csv else _yaml_rows(text, source)
    out: list[tuple[str, Principal]] = []
    seen: set[str] = set()
    for where, token, role, name in rows:
        if not token:
            raise InputError(f"{where}: empty token")
        if token in seen:
            raise InputError(f"{where}: duplicate token")
        seen.add(token)
        kind, member = parse_role(role, where)
        default_name = f"member:{member}" if member else str(kind)
        out.append((token, Principal(name or default_name, kind, member)))
    return out


def _csv_rows(text: str, source: str) -> Iterable[tuple[str, str, str, str]]:
    reader = csv.reader(io.StringIO(text))
    for row in reader:
        where = f"{source}: line {reader.line_num}"
        cells = [c.strip() for c in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if reader.line_num == 1 and cells[:2] == ["token", "role"]:
            continue
        if len(cells) not in (2, 3):
            raise InputError(f"{where}: expected token,role[,name], got {len(cells)} fields")
        yield where, cells[0], cells[1], cells[2] if len(cells) == 3 else ""


def _yaml_rows(text: str, source: str) -> Iterable[tuple[str, str, str, str]]:
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: not valid YAML or CSV: {exc}") from exc
    if isinstance(data, dict) and "tokens" in data:
        data = data["tokens"]
    if isinstance(data, dict):
        for token, role in data.items():
            yield f"{source}: token for {role!r}", str(token), str(role), ""
        return
    if not isinstance(data, list):
        raise InputError(f"{source}: expected `tokens:` with a list of {{token, role, name}}")
    for i, entry in enumerate(data):
        where = f"{source}: tokens[{i}]"
        if not isinstance(entry, dict) or "token" not in entry or "role" not in entry:
            raise InputError(f"{where}: needs `token` and `role`")
        unknown = set(entry) - {"token", "role", "name"}
        if unknown:
            raise InputError(f"{where}: unknown field(s) {sorted(unknown)}")
        yield where, str(entry["token"]), str(entry["role"]), str(entry.get("name") or "")


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


_ALL = frozenset(RoleKind)
_ADMIN = frozenset({RoleKind.ADMIN})

# Full method name -> roles that may call it. Methods missing here are refused, so a new
# RPC is closed until someone decides who may call it. Per-member scoping (a member sees
# only its own rows) is done by the services themselves.
METHOD_ROLES: dict[str, frozenset[RoleKind]] = {
    "/fairpool.v1.PolicyService/GetPolicy": _ALL,
    "/fairpool.v1.PolicyService/ValidatePolicy": _ALL,
    "/fairpool.v1.PolicyService/ApplyPolicy": _ADMIN,
    "/fairpool.v1.PolicyService/ListPolicyVersions": _ALL,
    "/fairpool.v1.PolicyService/WatchPolicy": _ALL,
    "/fairpool.v1.ShareService/GetEntitlements": _ALL,
    "/fairpool.v1.ShareService/ListPending": frozenset({RoleKind.ADMIN, RoleKind.MEMBER}),
    "/fairpool.v1.ShareService/ExplainPending": frozenset({RoleKind.ADMIN, RoleKind.MEMBER}),
    "/fairpool.v1.ShareService/Simulate": frozenset({RoleKind.ADMIN, RoleKind.VIEWER}),
    "/fairpool.v1.UsageService/GetUsage": frozenset({RoleKind.ADMIN, RoleKind.MEMBER}),
    "/fairpool.v1.UsageService/GetReport": _ALL,
}

# Probes and tooling need these without a token; they reveal no member data.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class Authenticator:
    """Finds the caller of an RPC from its metadata."""

    def __init__(self, tokens: TokenTable) -> None:
        self.tokens = tokens

    def principal(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal | None:
        token = bearer_token(metadata)
        return self.tokens.lookup(token) if token is not None else None

    def caller(self, context: grpc.ServicerContext) -> Principal:
        """The caller of the current RPC (the interceptor has already let it in)."""
        principal = self.principal(context.invocation_metadata())
        if principal is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or unknown bearer token")
        assert principal is not None
        return principal


def _refusal(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, details: str
) -> grpc.RpcMethodHandler:
    # No request deserializer: a refused caller's bytes are never parsed.
    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, details)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


class AuthInterceptor(grpc.ServerInterceptor):
    """UNAUTHENTICATED without a known bearer token; PERMISSION_DENIED for a role the
    method's entry in METHOD_ROLES does not list."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._auth = authenticator

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method  # type: ignore[attr-defined]
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        principal = self._auth.principal(
            handler_call_details.invocation_metadata  # type: ignore[attr-defined]
        )
        if principal is None:
            return _refusal(
                handler, grpc.StatusCode.UNAUTHENTICATED, "missing or unknown bearer token"
            )
        if principal.kind not in METHOD_ROLES.get(method, frozenset()):
            return _refusal(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                f"role {principal.role} may not call {method.rsplit('/', 1)[-1]}",
            )
        return handler
