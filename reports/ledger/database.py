"""The ledger's database engine: one place that makes it, for the usage ledger and the
policy audit log alike.

On SQLite, SQLAlchemy (not the sqlite3 driver) starts every transaction, so a writer can
ask for ``BEGIN IMMEDIATE`` (take the write lock first, then read) and the migration for
``BEGIN EXCLUSIVE``: the driver's own habit of starting transactions late, at the first
INSERT, would let two writers read the same state and then collide.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine

# Execution option naming how a SQLite transaction begins: DEFERRED (reads), IMMEDIATE
# (writes), EXCLUSIVE (migrations).
SQLITE_BEGIN = "fairpool_sqlite_begin"


def make_engine(url: str, *, echo: bool = False) -> Engine:
    engine = create_engine(url, echo=echo)
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
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")
