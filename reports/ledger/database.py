"""The ledger's database URL and engine, for the usage ledger and the policy audit log.

A URL is checked before anything is connected or created: a malformed one (unknown
scheme, no driver or host, a SQLite file in a folder that does not exist) is an
`InputError` naming the URL, its password masked, and what is wrong, in one line.

On SQLite, SQLAlchemy (not the sqlite3 driver) starts every transaction, so a writer can
ask for ``BEGIN IMMEDIATE`` (take the write lock first, then read) and the migration for
``BEGIN EXCLUSIVE``: the driver's own habit of starting transactions late, at the first
INSERT, would let two writers read the same state and then collide.
"""

from __future__ import annotations

import importlib.util
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError

from policies.errors import InputError
from reports.ledger.url_file import LedgerUrlFile, follow

# Execution option naming how a SQLite transaction begins: DEFERRED (reads), IMMEDIATE
# (writes), EXCLUSIVE (migrations).
SQLITE_BEGIN = "fairpool_sqlite_begin"

FORMS = "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST[:PORT]/DATABASE"
# A server that does not answer fails the command in this many seconds, not minutes.
CONNECT_TIMEOUT_S = 10
# Two SQLite writers meeting: the second waits this long before it fails.
SQLITE_BUSY_TIMEOUT_S = 30


def masked(url: str) -> str:
    """`url` with its password replaced by ***, even when it does not parse."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def check_url(url: str) -> URL:
    """The parsed ledger URL, or an InputError saying what is wrong with it."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # ValueError: a port that is not a number (`...@db:54x2/ledger`), a traceback.
        raise InputError(f"ledger {masked(url)}: not a database URL; use {FORMS}") from None
    name = masked(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        _check_sqlite(parsed, name)
    elif backend == "postgresql":
        _check_postgresql(parsed, name)
    else:
        raise InputError(f"ledger {name}: unknown scheme {backend!r}; use {FORMS}")
    return parsed


def _check_sqlite(parsed: URL, name: str) -> None:
    database = parsed.database or ""
    if database in ("", ":memory:") or "mode=memory" in database:
        # Every command that takes a ledger keeps something in it: in memory, a meter
        # run said its hours were metered and `--forget` its hours given up, and all of
        # it was gone when the command ended.
        raise InputError(
            f"ledger {name}: an in-memory database keeps nothing; give a file "
            "(sqlite:///path/to/ledger.db)"
        )
    path = sqlite_path(parsed)
    if path is not None and not path.parent.is_dir():
        raise InputError(f"ledger {name}: folder {path.parent} does not exist")


def sqlite_path(parsed: URL) -> Path | None:
    """The file of a SQLite URL; None for an in-memory database."""
    database = parsed.database or ""
    if database in ("", ":memory:") or parsed.query.get("uri"):
        return None
    return Path(database)


def _check_postgresql(parsed: URL, name: str) -> None:
    driver = parsed.get_driver_name()
    if "+" not in parsed.drivername:
        raise InputError(
            f"ledger {name}: name the driver, postgresql+psycopg://...; "
            "it comes with pip install 'fairpool[postgres]'"
        )
    if driver != "psycopg":
        raise InputError(f"ledger {name}: driver {driver!r} is not supported; use psycopg")
    if importlib.util.find_spec("psycopg") is None:
        raise InputError(
            f"ledger {name}: the psycopg driver is not installed; pip install 'fairpool[postgres]'"
        )
    if not parsed.host:
        raise InputError(f"ledger {name}: no host; use {FORMS}")
    if not parsed.database:
        raise InputError(f"ledger {name}: no database name; use {FORMS}")


def make_engine(url: str, *, echo: bool = False) -> Engine:
    parsed = check_url(url)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    # A server's restart, failover or a proxy's idle timeout ends pooled connections the
    # pool still holds: each is tried before use (a round trip), so a meter or scheduler
    # kept running opens a new one instead of failing its next statement. SQLite's are
    # files, never ended from outside.
    engine = create_engine(
        parsed,
        echo=echo,
        connect_args=connect_args,
        pool_pre_ping=parsed.get_backend_name() == "postgresql",
    )
    if isinstance(url, LedgerUrlFile):
        follow(engine, url, connect_args)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver leaves transactions to SQLAlchemy (see _sqlite_begin).
    dbapi_connection.isolation_level = None
    # WAL lets a report read the ledger while the hourly job writes; waiting beats
    # failing when two writers meet.
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    _switch_to_wal(cursor)
    cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    # Two connections switching a new file to WAL at once both hold a shared lock and both
    # want the exclusive one; SQLite answers one of them "database is locked" at once,
    # without its busy handler (waiting would deadlock). So that one tries again.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")
