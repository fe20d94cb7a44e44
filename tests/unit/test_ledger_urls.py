"""A bad `--ledger` URL, in every command that takes one: one line naming the URL (password
masked) and what is wrong, exit 2 for a malformed URL and 1 for a server that cannot be
reached or a ledger that is not there, no traceback, and nothing created."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from policies.errors import InputError, UnavailableError
from policies.loader import DEFAULT_POLICY
from reports.ledger import Ledger
from reports.ledger.connect import probe
from reports.ledger.database import masked
from scheduler.cli.main import main

Command = Callable[[str, Path], list[str]]


def closed_port() -> int:
    """A loopback port nobody listens on (connecting to it is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tokens(folder: Path) -> Path:
    path = folder / "inputs" / "tokens.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text("tokens:\n  - {token: t0ken-admin-0123456789, identity: admin, role: admin}\n")
    return path


COMMANDS: dict[str, Command] = {
    "meter": lambda url, _d: ["meter", "--ledger", url, "--prometheus", "http://127.0.0.1:1"],
    "meter status": lambda url, _d: ["meter", "status", "--ledger", url],
    "report": lambda url, _d: ["report", "--month", "2026-10", "--ledger", url],
    "report monthly": lambda url, _d: ["report", "monthly", "--ledger", url],
    "ledger upgrade": lambda url, _d: ["ledger", "upgrade", "--ledger", url],
    "serve-api": lambda url, d: [
        "serve-api",
        "--ledger-url",
        url,
        "--tokens",
        str(_tokens(d)),
        "--policy",
        str(d / "policy.yaml"),
        "--listen",
        "127.0.0.1:0",
    ],
    "run": lambda url, d: [
        "run",
        "--ledger-url",
        url,
        "--tokens",
        str(_tokens(d)),
        "--kubeconfig",
        str(d / "kubeconfig"),
        "--policy",
        str(d / "policy.yaml"),
    ],
}

MALFORMED = {
    "missing folder": ("sqlite:///{tmp}/no-such-folder/ledger.db", "folder"),
    "unknown scheme": ("mysql://meter:s3cret@127.0.0.1/ledger", "unknown scheme 'mysql'"),
    "no driver": ("postgresql://meter:s3cret@127.0.0.1/ledger", "name the driver"),
    "other driver": ("postgresql+psycopg2://meter:s3cret@127.0.0.1/ledger", "psycopg2"),
    "no host": ("postgresql+psycopg://meter:s3cret@/ledger", "no host"),
    "no database": ("postgresql+psycopg://meter:s3cret@127.0.0.1", "no database name"),
    "not a URL": ("fairpool ledger please", "not a database URL"),
    "port not a number": (
        "postgresql+psycopg://meter:s3cret@127.0.0.1:54x2/ledger",
        "not a database URL",
    ),
    # Kept nothing: a meter run reported its hours metered, `--forget` its hours given up.
    "in memory": ("sqlite://", "an in-memory database keeps nothing"),
    "in memory, named": ("sqlite:///:memory:", "an in-memory database keeps nothing"),
}


def run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)
    return int(exit_info.value.code or 0)


def files_under(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*") if "inputs" not in p.parts}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_url_exits_2_creating_nothing(
    command: str,
    case: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    template, reason = MALFORMED[case]
    url = template.format(tmp=tmp_path)
    assert run(COMMANDS[command](url, tmp_path)) == 2
    err = capsys.readouterr().err
    assert reason in err
    assert masked(url) in err
    assert "s3cret" not in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert files_under(tmp_path) == set()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unreachable_server_exits_1_creating_nothing(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    port = closed_port()
    url = f"postgresql+psycopg://meter:s3cret@127.0.0.1:{port}/ledger"
    assert run(COMMANDS[command](url, tmp_path)) == 1
    err = capsys.readouterr().err
    assert f"ledger postgresql+psycopg://meter:***@127.0.0.1:{port}/ledger: cannot connect" in err
    assert "refused" in err
    assert "s3cret" not in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert files_under(tmp_path) == set()


def test_reading_a_missing_sqlite_ledger_is_an_error_not_a_new_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    # Without --policy the report would take it from the ledger's history: none either.
    assert run(["report", "--month", "2026-10"]) == 2
    assert "--policy: required" in capsys.readouterr().err
    assert run(["report", "--month", "2026-10", "--policy", str(DEFAULT_POLICY)]) == 1
    err = capsys.readouterr().err
    assert "ledger sqlite:///fairpool-ledger.db: no ledger file fairpool-ledger.db" in err
    assert files_under(tmp_path) == set()
    # As every command that only reads (it was exit 2, and an empty PostgreSQL database
    # got the ledger's tables).
    assert run(["meter", "status"]) == 1
    assert "no ledger file fairpool-ledger.db" in capsys.readouterr().err
    assert files_under(tmp_path) == set()
    with pytest.raises(UnavailableError, match="no ledger file"):
        Ledger(f"sqlite:///{tmp_path / 'other.db'}", readonly=True)
    assert files_under(tmp_path) == set()


def test_reading_an_existing_ledger_works_and_writing_creates_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger(url).close()
    assert (tmp_path / "ledger.db").is_file()
    with Ledger(url, readonly=True) as ledger:
        assert ledger.pending_hours() == []


def test_probe_checks_without_creating(tmp_path: Path) -> None:
    probe(f"sqlite:///{tmp_path / 'ledger.db'}")
    assert not (tmp_path / "ledger.db").exists()
    with pytest.raises(InputError, match="does not exist"):
        probe(f"sqlite:///{tmp_path / 'nope' / 'ledger.db'}")


def test_masked_hides_the_password_even_when_the_url_does_not_parse() -> None:
    assert masked("postgresql+psycopg://u:pw@h/d") == "postgresql+psycopg://u:***@h/d"
    assert "pw" not in masked("post gres://u:pw@h/d")


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "--month", "2026-10", "--policy", str(DEFAULT_POLICY)],
        ["ledger", "upgrade"],
        ["meter", "status"],
    ],
    ids=["report", "ledger upgrade", "meter status"],
)
def test_a_file_that_is_no_database_exits_1_in_one_line_and_is_left_alone(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # sqlite's "file is not a database" was a traceback.
    path = tmp_path / "ledger.db"
    path.write_text("not a database\n")
    assert run([*argv, "--ledger", f"sqlite:///{path}"]) == 1
    err = capsys.readouterr().err
    assert f"ledger sqlite:///{path}: cannot connect: file is not a database" in err
    assert len(err.strip().splitlines()) == 1, err
    assert path.read_text() == "not a database\n"
