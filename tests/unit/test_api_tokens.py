"""Token files: only quoted strings of at least 16 characters become tokens (an empty
`token:` must never become the admin token "None"), a bad file is refused with its line,
and a reload that fails ends the old tokens' access (fail closed) unless the server was
told to keep them; either way the failure is logged and counted in /metrics."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from policies.errors import InputError
from proto.fairpool.v1 import policy_pb2
from scheduler.api.auth import RoleKind, TokenTable, parse_tokens
from tests.unit.test_api_support import (
    MEMBER_A,
    TOKEN_FILE,
    TOKENS,
    metadata,
    running_server,
)

GOOD = "k8Hd9s-Qm2xV7pLr"
OTHER = "Zq0-wE4rT6yU8iO2"


def test_token_files_in_yaml_and_csv() -> None:
    from_yaml = parse_tokens(f"tokens:\n  - {{token: '{GOOD}', role: admin, name: alice}}\n", "f")
    assert from_yaml[0][1].name == "alice" and from_yaml[0][1].kind is RoleKind.ADMIN
    plain = parse_tokens(f"'{GOOD}': viewer\n\"{OTHER}\": 'member:lab-bio'\n", "f")
    assert [(t, p.role) for t, p in plain] == [(GOOD, "viewer"), (OTHER, "member:lab-bio")]
    from_csv = parse_tokens(f"token,role,name\n{GOOD},member:physics,bob\n{OTHER},viewer\n", "f")
    assert [(t, p.role, p.name) for t, p in from_csv] == [
        (GOOD, "member:physics", "bob"),
        (OTHER, "viewer", "viewer"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tokens:\n  - {token: , role: admin}\n", "f: line 2: the token must be a quoted string"),
        ("tokens:\n  - token: ~\n    role: admin\n", "line 2: .* YAML read null"),
        ("tokens:\n  - role: admin\n    token:\n", "line 3: .* YAML read null"),
        ("tokens:\n  - {token: 012345, role: admin}\n", "line 2: .* YAML read int"),
        ("tokens:\n  - {token: 0123456789012345678, role: admin}\n", "quoted string"),
        ("tokens:\n  - {token: yes, role: admin}\n", "YAML read bool"),
        (f"tokens:\n  - {{token: {GOOD}, role: admin}}\n", "YAML read an unquoted string"),
        ("tokens:\n  - {token: [a], role: admin}\n", "YAML read a sequence"),
        ("tokens:\n  - {token: '', role: admin}\n", "line 2: token shorter than 16"),
        ("tokens:\n  - {token: 'short', role: admin}\n", "line 2: token shorter than 16"),
        ("tokens:\n  - {token: 'has a space in it', role: admin}\n", "characters other than"),
        # `$` matched before a final newline: a token that ends in one was taken.
        (f'tokens:\n  - {{token: "{GOOD}\\n", role: admin}}\n', "characters other than"),
        (f"{GOOD},root\n", "line 1: unknown role 'root'"),
        (f"{GOOD},admin\n{GOOD},viewer\n", "line 2: duplicate token"),
        ("x,admin\n", "line 1: token shorter than 16"),
        (f"tokens:\n  - {{token: '{GOOD}'}}\n", "line 2: needs `token` and `role`"),
        (f"tokens:\n  - {{token: '{GOOD}', role: 'member:'}}\n", "unknown role"),
        (f"tokens:\n  - {{token: '{GOOD}', role: 7}}\n", "role must be a string"),
        (f"012345: admin\n'{GOOD}': viewer\n", "line 1: .* YAML read int"),
        (f"{GOOD},admin,{'n' * 254}\n", "line 1: name: at most 253 characters"),
        (f"tokens:\n  - {{token: '{GOOD}', role: admin, name: \"a\\0b\"}}\n", "no NUL"),
        ("tokens: []\n", "no tokens"),
        ("", "expected `tokens:`"),
    ],
)
def test_bad_token_files_are_refused_with_the_line(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_tokens(text, "f")


def test_a_bad_token_file_is_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens:\n  - {token: , role: admin}\n")
    with pytest.raises(InputError, match=f"{path}: line 2"):
        TokenTable(path)
    with pytest.raises(InputError, match="cannot read"):
        TokenTable(tmp_path / "missing.yaml")


def _table(tmp_path: Path, keep: bool = False) -> tuple[Path, TokenTable]:
    path = tmp_path / "tokens.csv"
    path.write_text(f"{GOOD},admin\n")
    return path, TokenTable(path, keep_on_reload_error=keep)


def test_a_rotated_token_file_takes_effect(tmp_path: Path) -> None:
    path, table = _table(tmp_path)
    assert table.lookup(GOOD) is not None
    path.write_text(f"{OTHER},viewer\n")  # same size and maybe same mtime: content counts
    assert table.lookup(GOOD) is not None, "no file access on a call's path"
    table.reload()
    assert table.lookup(GOOD) is None
    found = table.lookup(OTHER)
    assert found is not None and found.kind is RoleKind.VIEWER
    assert table.reloads["ok"] == 1


@pytest.mark.parametrize("breakage", ["typo", "deleted"])
def test_a_failed_reload_fails_closed_and_is_logged(
    tmp_path: Path, breakage: str, caplog: pytest.LogCaptureFixture
) -> None:
    from scheduler.api.auth import TokensUnavailable

    path, table = _table(tmp_path)
    if breakage == "typo":
        path.write_text(f"{GOOD},admn\n")
    else:
        path.unlink()
    with caplog.at_level(logging.ERROR):
        table.reload()
        with pytest.raises(TokensUnavailable):
            table.lookup(GOOD)
        table.reload()
        with pytest.raises(TokensUnavailable):
            table.lookup(GOOD)
    assert table.reloads["error"] == 2 and table.failure is not None
    errors = [r for r in caplog.records if "cannot reload the token file" in r.getMessage()]
    assert len(errors) == 1, "logged once per distinct failure"
    path.write_text(f"{OTHER},viewer\n")
    table.reload()
    assert table.lookup(GOOD) is None and table.lookup(OTHER) is not None
    assert table.failure is None


def test_keep_tokens_on_reload_error_keeps_serving_the_last_good_table(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, table = _table(tmp_path, keep=True)
    path.write_text("garbage,nobody\n")
    with caplog.at_level(logging.ERROR):
        table.reload()
        assert table.lookup(GOOD) is not None
    assert table.reloads["error"] == 1
    assert any("keeping the previous tokens" in r.getMessage() for r in caplog.records)


def _until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_the_api_refuses_every_call_while_the_token_file_is_broken(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    with running_server(tmp_path, registry=registry, token_reload_seconds=0.05) as api:
        tokens = api.server.config.tokens
        request = policy_pb2.GetPolicyRequest()
        api.policy.GetPolicy(request, metadata=metadata("admin"), timeout=10)
        (tmp_path / "tokens.yaml").write_text("tokens:\n  - {token: ~, role: admin}\n")
        assert _until(lambda: tokens.reloads["error"] >= 2), "no reload in the background"
        for bearer in (TOKENS["admin"], "None"):
            with pytest.raises(grpc.RpcError) as info:
                api.policy.GetPolicy(
                    request, metadata=(("authorization", f"Bearer {bearer}"),), timeout=10
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "token file" in (info.value.details() or "")
            assert str(tmp_path) not in (info.value.details() or "")
        scraped = generate_latest(registry).decode()
        assert 'fairpool_api_token_reloads_total{result="error"}' in scraped
        assert "fairpool_api_token_file_valid 0.0" in scraped
        (tmp_path / "tokens.yaml").write_text(TOKEN_FILE)
        assert _until(lambda: tokens.failure is None)
        api.policy.GetPolicy(request, metadata=metadata("admin"), timeout=10)
        assert 'fairpool_api_token_reloads_total{result="ok"} 1.0' in (
            generate_latest(registry).decode()
        )
        assert "fairpool_api_token_file_valid 1.0" in generate_latest(registry).decode()


def test_a_revoked_token_stops_working_without_any_call(tmp_path: Path) -> None:
    """The file is re-read in the background: the revocation is in force before the
    revoked token's next call, and its open watch ends."""
    member = f"member:{MEMBER_A}"
    with running_server(tmp_path, token_reload_seconds=0.05) as api:
        tokens = api.server.config.tokens
        watch = api.policy.WatchPolicy(
            policy_pb2.WatchPolicyRequest(), metadata=metadata(member), timeout=30
        )
        assert next(watch).version >= 1
        kept = [line for line in TOKEN_FILE.splitlines() if TOKENS[member] not in line]
        assert len(kept) < len(TOKEN_FILE.splitlines())
        (tmp_path / "tokens.yaml").write_text("\n".join(kept) + "\n")
        assert _until(lambda: tokens.reloads["ok"] == 1), "no reload in the background"
        assert tokens.lookup(TOKENS[member]) is None
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            next(watch)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert time.monotonic() - started < 5, "the watch outlived its token"
        with pytest.raises(grpc.RpcError) as refused:
            api.policy.GetPolicy(policy_pb2.GetPolicyRequest(), metadata=metadata(member))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        api.policy.GetPolicy(policy_pb2.GetPolicyRequest(), metadata=metadata("admin"))


def test_the_reloader_stops_with_the_server(tmp_path: Path) -> None:
    with running_server(tmp_path, token_reload_seconds=0.05):
        assert _until(lambda: any(t.name == "fairpool-token-reload" for t in threading.enumerate()))
    assert _until(lambda: not any(t.name == "fairpool-token-reload" for t in threading.enumerate()))
