"""A `--ledger` URL naming a real PostgreSQL server that says no: wrong password, no such
database, a database without the ledger in it. One line, exit 1, nothing created; and a
good URL gives the same report as SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, inspect

from policies.loader import DEFAULT_POLICY
from tests.pgtest import PostgresServer
from tests.unit.test_ledger_urls import COMMANDS, files_under, run
from tests.unit.test_report_cli import fill_ledger

pytestmark = pytest.mark.integration


def databases(postgres: PostgresServer) -> set[str]:
    engine = create_engine(postgres.url("postgres"))
    with engine.connect() as conn:
        names = {row[0] for row in conn.exec_driver_sql("SELECT datname FROM pg_database")}
    engine.dispose()
    return names


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_wrong_password_exits_1_naming_the_reason(
    command: str,
    postgres: PostgresServer,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    database = postgres_url.rsplit("/", 1)[1]
    url = postgres.url(database, password="not-the-password")
    assert run(COMMANDS[command](url, tmp_path)) == 1
    line = one_line(capsys.readouterr().err)
    assert "password authentication failed" in line
    assert f"fairpool:***@127.0.0.1:{postgres.port}/{database}" in line
    assert "not-the-password" not in line
    assert files_under(tmp_path) == set()
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        assert inspect(conn).get_table_names() == []
    engine.dispose()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_missing_database_is_not_created(
    command: str,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    before = databases(postgres)
    assert run(COMMANDS[command](postgres.url("no_such_ledger"), tmp_path)) == 1
    line = one_line(capsys.readouterr().err)
    assert 'database "no_such_ledger" does not exist' in line
    assert databases(postgres) == before
    assert files_under(tmp_path) == set()


def test_reading_an_empty_database_creates_no_tables(
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    policy = ["--policy", str(DEFAULT_POLICY)]
    assert run(["report", "--month", "2026-10", "--ledger", postgres_url, *policy]) == 1
    assert "holds no ledger tables" in one_line(capsys.readouterr().err)
    # It made every table and said "no pending hours".
    assert run(["meter", "status", "--ledger", postgres_url]) == 1
    assert "holds no ledger tables" in one_line(capsys.readouterr().err)
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        assert inspect(conn).get_table_names() == []
    engine.dispose()


def test_a_postgresql_ledger_bills_like_a_sqlite_one(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    hours = [pd.Timestamp("2026-10-05T10:00Z"), pd.Timestamp("2026-10-05T11:00Z")]
    sqlite_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    fill_ledger(postgres_url, hours)
    fill_ledger(sqlite_url, hours)
    for name, url in (("pg", postgres_url), ("sqlite", sqlite_url)):
        report = ["report", "--month", "2026-10", "--ledger", url, "--out", name]
        assert run([*report, "--policy", str(DEFAULT_POLICY)]) == 0
    for path in sorted((tmp_path / "sqlite").rglob("*.csv")):
        twin = tmp_path / "pg" / path.relative_to(tmp_path / "sqlite")
        assert twin.read_text() == path.read_text(), path.name
    assert sorted((tmp_path / "sqlite").rglob("*.csv"))


@pytest.mark.parametrize("command", ["meter", "report monthly"])
def test_no_policy_and_no_policy_history_is_said_with_the_password_masked(
    command: str,
    postgres: PostgresServer,
    postgres_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(COMMANDS[command](postgres_url, tmp_path)) == 2
    # Not one_line: the logging an earlier test's `run` set up may add its own lines.
    err = capsys.readouterr().err
    assert "has no policy history" in err
    assert ":***@127.0.0.1" in err
    assert postgres.password not in err


def test_the_hourly_meter_names_its_ledger_with_the_password_masked(
    postgres: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    # Its first line goes to the pod's log, which more people read than the Secret.
    meter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scheduler.cli.main",
            "meter",
            "--watch",
            "--ledger",
            postgres_url,
            "--prometheus",
            "http://127.0.0.1:1",
            "--policy",
            str(DEFAULT_POLICY),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "COLUMNS": "400", "PYTHONPATH": str(Path(__file__).parents[2])},
        cwd=tmp_path,
    )
    try:
        assert meter.stdout is not None
        line = meter.stdout.readline()
    finally:
        meter.terminate()
        meter.wait(timeout=30)
    assert "every hour" in line, line
    assert ":***@127.0.0.1" in line
    assert postgres.password not in line
