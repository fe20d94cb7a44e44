"""Who is calling and what they may do: bearer tokens mapped to roles.

Roles: `admin` (everything), `member:<name>` (its own usage, reports, queue and
explanations, the shared summary; no policy writes), `viewer` (entitlements and
summaries). The token file is YAML (`tokens: [{token, role, name}]` or `{token: role}`)
or CSV (`token,role[,name]`); it is re-read in the background every few seconds, so a
rotated Secret takes effect without a restart and a revoked token stops working without
waiting for a call.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn

import grpc
import yaml

from policies.errors import InputError
from scheduler.api.errors import abort
from scheduler.api.guard import Guard, pass_bytes
from scheduler.api.undecodable import refuse_undecodable

log = logging.getLogger(__name__)

MAX_NAME_CHARS = 253
"""A token's name is stored as the author of the versions it applies (253 characters)."""


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


def member_not_in_policy(principal: Principal, policy_version: int | None = None) -> str:
    """Why a `member:<name>` caller whose member the policy lacks is refused
    (PERMISSION_DENIED): its token file names a member the policy does not have, misspelt
    or since removed, which no request of the caller's can mend."""
    which = f"policy version {policy_version}" if policy_version else "the policy"
    return (
        f"role {principal.role}: {which} has no member {principal.member!r} (the token "
        "file gives this token a member the policy does not have)"
    )


def not_a_member(member: str, policy_version: int) -> str:
    return f"member: {member!r} is not a member of policy version {policy_version}"


def refuse_unknown_member(
    context: grpc.ServicerContext, principal: Principal, member: str, policy_version: int
) -> NoReturn:
    """A member the policy lacks: INVALID_ARGUMENT naming the field when the caller asked
    for it; PERMISSION_DENIED when its token's role speaks for it (the caller named no
    member, and exit code 2, "fix your input", would send it looking for a typo of its
    own)."""
    if principal.kind is RoleKind.MEMBER:
        abort(
            context,
            grpc.StatusCode.PERMISSION_DENIED,
            member_not_in_policy(principal, policy_version),
        )
    abort(context, grpc.StatusCode.INVALID_ARGUMENT, not_a_member(member, policy_version))


def parse_role(text: str, where: str) -> tuple[RoleKind, str | None]:
    role = text.strip()
    if role in (RoleKind.ADMIN, RoleKind.VIEWER):
        return RoleKind(role), None
    if role.startswith("member:") and role.removeprefix("member:").strip():
        return RoleKind.MEMBER, role.removeprefix("member:").strip()
    raise InputError(f"{where}: unknown role {text!r} (admin, viewer or member:<name>)")


MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 512
TOKEN_CHARS = re.compile(r"^[A-Za-z0-9._~+/=-]+$")
"""The characters of an RFC 6750 bearer token: nothing a header would mangle."""
_QUOTED = ("'", '"')


def _digest(token: str) -> bytes:
    # Tokens are looked up by hash so that the table never holds them in clear and a
    # lookup does not compare secrets byte by byte.
    return hashlib.sha256(token.encode()).digest()


class TokensUnavailable(Exception):
    """The token file could not be reloaded and the server is failing closed."""


class TokenTable:
    """Bearer token -> Principal, from a file that is re-read in the background.

    `reload()` reads the file again; the server calls it every `RECHECK_SECONDS` from a
    thread of its own (`watch`), so a token removed from the file stops working within
    that time whether or not calls arrive, and no call ever waits for the file. A reload
    that fails (the file deleted, unreadable or invalid) is logged and counted, and by
    default ends every old token's access (fail closed): a revoked token must not keep
    working because the file that revoked it has a typo. With `keep_on_reload_error`
    the last good table stays in force instead."""

    RECHECK_SECONDS = 2.0

    def __init__(
        self,
        path: Path | None = None,
        entries: Mapping[str, Principal] | None = None,
        *,
        keep_on_reload_error: bool = False,
    ):
        self._path = path
        self.keep_on_reload_error = keep_on_reload_error
        self._lock = threading.Lock()
        self._by_digest: dict[bytes, Principal] = {}
        self._content: bytes | None = None
        self._failure: str | None = None
        self.reloads: collections.Counter[str] = collections.Counter()
        """Reloads after the first load, by result (`ok`, `error`), for /metrics."""
        self.generation = 0
        """Counts the changes of what is in force (a new table, or failing closed), so a
        long call can tell cheaply whether to check its caller again."""
        if entries is not None:
            self._by_digest = {_digest(t): p for t, p in entries.items()}
        if path is not None:
            content = self._read()
            self._by_digest = self._parse(content)
            self._content = content

    @property
    def path(self) -> Path | None:
        """The token file (None for a table given in code)."""
        return self._path

    @property
    def failure(self) -> str | None:
        """Why the last reload failed, while it stays failed; None when in order."""
        return self._failure

    def _read(self) -> bytes:
        assert self._path is not None
        try:
            return self._path.read_bytes()
        except OSError as exc:
            raise InputError(f"{self._path}: cannot read token file: {exc.strerror}") from exc

    def _parse(self, content: bytes) -> dict[bytes, Principal]:
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{self._path}: not UTF-8 text (byte {exc.start})") from exc
        return {_digest(t): p for t, p in parse_tokens(text, str(self._path))}

    def reload(self) -> None:
        """Read the file again; a new content takes effect at once, a broken one is
        handled as the class says. Never raises for the file's sake."""
        if self._path is None:
            return
        try:
            content = self._read()
            if content == self._content and self._failure is None:
                return
            table = self._parse(content)
        except InputError as exc:
            with self._lock:
                self._reload_failed(str(exc))
            return
        with self._lock:
            self._by_digest, self._content = table, content
            self.generation += 1
            self.reloads["ok"] += 1
            if self._failure is not None:
                log.warning(
                    "token file %s is valid again: serving its %d tokens", self._path, len(table)
                )
            else:
                log.info("token file %s reloaded: %d tokens", self._path, len(table))
            self._failure = None

    def watch(self, stop: threading.Event, every: float | None = None) -> threading.Thread | None:
        """Start re-reading the file every `every` seconds (default RECHECK_SECONDS) in a
        daemon thread, until `stop` is set; None for a table without a file."""
        if self._path is None:
            return None
        period = self.RECHECK_SECONDS if every is None else every

        def loop() -> None:
            while not stop.wait(period):
                try:
                    self.reload()
                except Exception:  # the reloader must outlive any surprise
                    log.exception("token file %s: reload failed", self._path)

        thread = threading.Thread(target=loop, name="fairpool-token-reload", daemon=True)
        thread.start()
        return thread

    def _reload_failed(self, reason: str) -> None:
        self.reloads["error"] += 1
        if reason != self._failure:
            # Logged once per distinct failure, not at every recheck.
            outcome = (
                "keeping the previous tokens (--keep-tokens-on-reload-error)"
                if self.keep_on_reload_error
                else "refusing every call until it is fixed"
            )
            log.error("cannot reload the token file: %s; %s", reason, outcome)
            self.generation += 1
        self._failure = reason

    def lookup(self, token: str) -> Principal | None:
        """The token's principal; raises TokensUnavailable while failing closed. Reads
        only what the last reload left: no file access on a call's path."""
        if self._failure is not None and not self.keep_on_reload_error:
            raise TokensUnavailable(self._failure)
        return self._by_digest.get(_digest(token))


def check_token(token: str | None, where: str, read_as: str = "") -> str:
    """`token` when it is a usable bearer token, else an InputError saying why (never
    quoting the token). In YAML it must be a quoted string: unquoted, `~` is null and
    `012345` an octal number; `read_as` says what YAML read when it was not."""
    if token is None or read_as:
        raise InputError(
            f"{where}: the token must be a quoted string, YAML read {read_as or 'nothing'}: "
            'write token: "..."'
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise InputError(f"{where}: token shorter than {MIN_TOKEN_CHARS} characters")
    if len(token) > MAX_TOKEN_CHARS:
        raise InputError(f"{where}: token longer than {MAX_TOKEN_CHARS} characters")
    if not TOKEN_CHARS.fullmatch(token):
        raise InputError(f"{where}: token has characters other than A-Z a-z 0-9 . _ ~ + / = -")
    return token


def parse_tokens(text: str, source: str) -> list[tuple[str, Principal]]:
    """Token entries from YAML or CSV text; every bad entry is an InputError with its line."""
    stripped = text.lstrip()
    first = stripped.splitlines()[0] if stripped else ""
    looks_csv = "," in first and ":" not in first.split(",")[0]
    rows = _csv_rows(text, source) if looks_csv else _yaml_rows(text, source)
    out: list[tuple[str, Principal]] = []
    seen: set[str] = set()
    for where, token, role, name in rows:
        if token in seen:
            raise InputError(f"{where}: duplicate token")
        seen.add(token)
        kind, member = parse_role(role, where)
        default_name = f"member:{member}" if member else str(kind)
        if len(name) > MAX_NAME_CHARS or "\x00" in name:
            # The name is the author of every policy version the token applies: the
            # audit history keeps at most 253 characters and PostgreSQL no NUL, and an
            # apply it cannot record blocks every later one.
            raise InputError(
                f"{where}: name: at most {MAX_NAME_CHARS} characters and no NUL character"
            )
        out.append((token, Principal(name or default_name, kind, member)))
    if not out:
        raise InputError(f"{source}: no tokens: the API would refuse every call")
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
        yield where, check_token(cells[0], where), cells[1], cells[2] if len(cells) == 3 else ""


_STR_TAG = "tag:yaml.org,2002:str"


def _scalar(node: yaml.Node | None) -> tuple[str | None, str]:
    """(text, "") of a quoted string scalar, else (None or the text, what YAML read
    instead: "null", "int", "an unquoted string", a list...)."""
    if node is None:
        return None, "nothing"
    if not isinstance(node, yaml.ScalarNode):
        return None, "a " + type(node).__name__.removesuffix("Node").lower()
    if node.tag != _STR_TAG:
        return None, node.tag.rsplit(":", 1)[-1]
    return node.value, "" if node.style in _QUOTED else "an unquoted string"


def _text(node: yaml.Node | None, where: str, what: str) -> str:
    if node is None:
        return ""
    value, read_as = _scalar(node)
    if value is None:
        raise InputError(f"{where}: {what} must be a string, YAML read {read_as}")
    return value


def _yaml_rows(text: str, source: str) -> Iterable[tuple[str, str, str, str]]:
    # The node tree, not the loaded data: an unquoted `token: 012345` or `token: ~`
    # would load as a number or None, and must be refused with its line, not converted.
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError) as exc:
        raise InputError(f"{source}: not valid YAML or CSV: {exc}") from exc
    if isinstance(root, yaml.MappingNode):
        keys = {k.value: v for k, v in root.value if isinstance(k, yaml.ScalarNode)}
        if "tokens" in keys:
            root = keys["tokens"]
        else:
            for key, role in root.value:
                where = f"{source}: line {key.start_mark.line + 1}"
                token, read_as = _scalar(key)
                yield where, check_token(token, where, read_as), _text(role, where, "role"), ""
            return
    if not isinstance(root, yaml.SequenceNode):
        raise InputError(f"{source}: expected `tokens:` with a list of {{token, role, name}}")
    for entry in root.value:
        where = f"{source}: line {entry.start_mark.line + 1}"
        if not isinstance(entry, yaml.MappingNode):
            raise InputError(f"{where}: needs `token` and `role`")
        fields = {k.value: v for k, v in entry.value if isinstance(k, yaml.ScalarNode)}
        if "token" not in fields or "role" not in fields:
            raise InputError(f"{where}: needs `token` and `role`")
        unknown = set(fields) - {"token", "role", "name"}
        if unknown:
            raise InputError(f"{where}: unknown field(s) {sorted(unknown)}")
        token_where = f"{source}: line {fields['token'].start_mark.line + 1}"
        token, read_as = _scalar(fields["token"])
        yield (
            where,
            check_token(token, token_where, read_as),
            _text(fields["role"], where, "role"),
            _text(fields.get("name"), where, "name"),
        )


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

TOKENS_UNAVAILABLE = (
    "the server cannot reload its token file: every call is refused until an "
    "administrator repairs it"
)

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
        try:
            principal = self.principal(context.invocation_metadata())
        except TokensUnavailable:
            context.abort(grpc.StatusCode.UNAVAILABLE, TOKENS_UNAVAILABLE)
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
    method's entry in METHOD_ROLES does not list; UNAVAILABLE while the token file cannot
    be reloaded (failing closed). A call let in runs inside the guard: its identity's
    slots and the catch-all."""

    def __init__(self, authenticator: Authenticator, guard: Guard | None = None) -> None:
        self._auth = authenticator
        self._guard = guard

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method  # type: ignore[attr-defined]
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        try:
            principal = self._auth.principal(
                handler_call_details.invocation_metadata  # type: ignore[attr-defined]
            )
        except TokensUnavailable:
            return _refusal(handler, grpc.StatusCode.UNAVAILABLE, TOKENS_UNAVAILABLE)
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
        handler = refuse_undecodable(handler)
        if self._guard is None:
            return pass_bytes(handler)
        return self._guard.wrap(handler, method, principal, principal.name)
