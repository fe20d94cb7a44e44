"""Bring a ledger database to the newest schema revision (Alembic, `migrations/`).

`upgrade` runs under a lock held for the whole migration: a PostgreSQL advisory lock, or an
exclusive SQLite transaction. Two processes opening the same ledger at once therefore do
not race: the second waits, then finds the database at head and does nothing. The
revisions run inside that same transaction, so a failed migration leaves the database at
its previous revision (SQLite and PostgreSQL both roll DDL back).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from reports.ledger.database import SQLITE_BEGIN

MIGRATIONS = Path(__file__).with_name("migrations")

# Key of the PostgreSQL advisory lock the migration holds (any fixed 64-bit number that no
# other lock in the database uses; the digits spell "fairpool ledger").
_MIGRATION_LOCK = 0x0FA1_2F00_1ED6_E200


def config() -> Config:
    """Alembic's configuration for the ledger's revisions (no ini file needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(config()).get_current_head()
    assert head is not None, "the ledger has no migrations"
    return head


def current_revision(conn: Connection) -> str | None:
    """The revision the database is at; None when it was never migrated (empty, or made
    before migrations existed)."""
    return MigrationContext.configure(conn).get_current_revision()


def begin_exclusive(conn: Connection) -> None:
    """Start `conn`'s transaction holding the ledger's migration lock."""
    if conn.dialect.name == "sqlite":
        conn.execution_options(**{SQLITE_BEGIN: "EXCLUSIVE"})
        conn.begin()
    else:
        conn.begin()
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})


class UnknownRevision(Exception):
    """The database is at a revision this version does not have: a newer fairpool wrote
    it. Nothing is changed (a downgrade would need that version's migrations)."""

    def __init__(self, found: str, head: str) -> None:
        super().__init__(
            f"its tables are at revision {found!r}, which this version of fairpool does not "
            f"know (its newest is {head!r}): a newer fairpool wrote it; use that version"
        )


def upgrade(engine: Engine) -> str:
    """Upgrade the database behind `engine` to head; returns the revision it was at
    before ("" for an empty or pre-migration database)."""
    head = head_revision()
    known = ScriptDirectory.from_config(config())
    with engine.connect() as conn:
        begin_exclusive(conn)
        before = current_revision(conn)
        if before is not None and before not in {r.revision for r in known.walk_revisions()}:
            conn.rollback()  # Alembic's "Can't locate revision" traceback before
            raise UnknownRevision(before, head)
        if before != head:
            cfg = config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        conn.commit()
    return before or ""
