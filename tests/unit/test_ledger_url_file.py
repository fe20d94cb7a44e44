"""`--ledger-url-file PATH` in every command that takes a ledger URL: one of it and the
URL, a file that cannot be used refused naming the flag and the path (exit 2, nothing
created), and a file read again for each new connection, its last good URL kept while
it holds none. PostgreSQL and a rotated password: tests/integration/
test_ledger_rotation_postgresql.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import text

from reports.ledger import Ledger
from reports.ledger.url_file import read_url_file
from tests.unit.test_ledger_urls import COMMANDS, files_under, run

FLAG = "--ledger-url-file"


def with_file(command: str, folder: Path, path: Path) -> list[str]:
    argv = COMMANDS[command]("URL", folder)
    at = argv.index("URL")
    return [*argv[: at - 1], FLAG, str(path), *argv[at + 1 :]]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_url_and_a_url_file_are_refused_naming_both(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    secret = tmp_path / "inputs" / "url"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text(f"sqlite:///{tmp_path}/ledger.db\n")
    argv = [*COMMANDS[command](f"sqlite:///{tmp_path}/other.db", tmp_path), FLAG, str(secret)]
    url_flag = "--ledger-url" if "--ledger-url" in argv else "--ledger"
    assert run(argv) == 2
    assert f"{url_flag} and {FLAG}: give one of them" in capsys.readouterr().err
    monkeypatch.setenv("FAIRPOOL_LEDGER", f"sqlite:///{tmp_path}/other.db")
    assert run(with_file(command, tmp_path, secret)) == 2
    err = capsys.readouterr().err
    assert f"{url_flag} (from $FAIRPOOL_LEDGER) and {FLAG}: give one of them" in err
    assert files_under(tmp_path) == set()


BAD_FILES = {
    "missing": (None, "no such file"),
    "empty": ("\n  \n", "is empty"),
    "two lines": ("sqlite:///a.db\nsqlite:///b.db\n", "holds 2 lines"),
    "not text": (b"\xff\xfe\x00", "not text"),
    "a folder": ("folder", "is a folder"),
}


@pytest.mark.parametrize("command", ["meter", "run", "report"])
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_url_file_that_cannot_be_used_is_refused_naming_flag_and_path(
    command: str,
    case: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    secret = tmp_path / "inputs" / "url"
    secret.parent.mkdir(exist_ok=True)
    content, reason = BAD_FILES[case]
    if content == "folder":
        secret.mkdir()
    elif isinstance(content, bytes):
        secret.write_bytes(content)
    elif content is not None:
        secret.write_text(content)
    assert run(with_file(command, tmp_path, secret)) == 2
    err = capsys.readouterr().err
    assert f"{FLAG}: {secret}: {reason}" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert files_under(tmp_path) == set()


def test_an_unreadable_url_file_is_refused_naming_flag_and_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A link to itself: unreadable for root too (a file of mode 000 is not, and the
    # tests run as root in CI).
    secret = tmp_path / "url"
    secret.symlink_to(secret)
    assert run(["meter", "status", FLAG, str(secret)]) == 2
    err = capsys.readouterr().err
    assert f"{FLAG}: {secret}: cannot read it (Too many levels of symbolic links)" in err


def test_the_url_file_given_in_the_environment_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "url"
    secret.write_text(f"sqlite:///{tmp_path}/ledger.db\n")
    monkeypatch.setenv("FAIRPOOL_LEDGER_URL_FILE", str(secret))
    assert run(["ledger", "upgrade"]) == 0
    assert (tmp_path / "ledger.db").is_file()


def test_each_new_connection_reads_the_file_and_keeps_its_last_good_url(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "url"
    secret.write_text(f"sqlite:///{tmp_path}/first.db\n")
    ledger = Ledger(read_url_file(secret, FLAG))

    def database_file() -> str:
        # Closing the pooled connections, as an idle timeout would: the next is new.
        ledger.engine.dispose()
        with ledger.engine.connect() as conn:
            return str(conn.execute(text("PRAGMA database_list")).fetchall()[0][2])

    assert database_file() == str(tmp_path / "first.db")
    secret.write_text(f"sqlite:///{tmp_path}/second.db\n")
    assert database_file() == str(tmp_path / "second.db")
    with caplog.at_level(logging.WARNING, logger="reports.ledger.url_file"):
        for unusable in ("", "not a url", "postgresql+psycopg://u:s3cret@127.0.0.1/ledger"):
            secret.write_text(unusable)
            assert database_file() == str(tmp_path / "second.db")
    assert "is empty" in caplog.text
    assert "not a database URL" in caplog.text
    assert "names a postgresql+psycopg database, not sqlite" in caplog.text
    assert "s3cret" not in caplog.text
    ledger.close()
