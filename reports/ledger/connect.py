"""Opening the ledger's database: check the URL, connect, upgrade to the newest schema.

What goes wrong is said in one line naming the URL (password masked): a malformed URL is an
`InputError` (exit 2 in the CLI); a server that cannot be reached or refuses the password,
or a ledger that is not there when a command only reads, is an `UnavailableError` (exit 1).
Nothing is created when opening fails, and a command that only reads creates nothing.
"""

from __future__ import annotations

from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, DBAPIError, OperationalError

from policies.errors import UnavailableError
from reports.ledger import migrate
from reports.ledger.database import check_url, make_engine, masked, sqlite_path


def open_engine(url: str, *, create: bool, echo: bool = False) -> Engine:
    """An engine on the ledger at `url`, its database upgraded to the newest schema.

    `create=False` (reading only) never creates anything: a missing SQLite file or a
    database without the ledger's tables is an UnavailableError.
    """
    return _open(url, create=create, echo=echo)[0]


def upgrade(url: str) -> tuple[str, str]:
    """Create or upgrade the ledger at `url`: (revision it was at, "" when new or made
    before migrations; the newest revision, where it is now)."""
    engine, before = _open(url, create=True, echo=False)
    engine.dispose()
    return before, migrate.head_revision()


def _open(url: str, *, create: bool, echo: bool) -> tuple[Engine, str]:
    parsed = check_url(url)
    name = masked(url)
    path = sqlite_path(parsed) if parsed.get_backend_name() == "sqlite" else None
    if not create and path is not None and not path.is_file():
        raise UnavailableError(f"ledger {name}: no ledger file {path} (nothing metered yet?)")
    engine = make_engine(url, echo=echo)
    try:
        try:
            conn = engine.connect()
        except DatabaseError as exc:
            # OperationalError: not reachable; else, as for sqlite's "file is not a
            # database", something that is no database (was a traceback).
            raise UnavailableError(f"ledger {name}: cannot connect: {_reason(exc)}") from None
        try:
            with conn:
                empty = not create and not inspect(conn).get_table_names()
            if empty:
                raise UnavailableError(f"ledger {name}: the database holds no ledger tables")
            before = migrate.upgrade(engine)
        except migrate.UnknownRevision as exc:
            raise UnavailableError(f"ledger {name}: {exc}") from None
        except DatabaseError as exc:
            # A file that is not a database (sqlite: "file is not a database") was a
            # traceback; the database is left as it was.
            raise UnavailableError(f"ledger {name}: cannot use it: {_reason(exc)}") from None
    except BaseException:
        engine.dispose()
        raise
    return engine, before


def _reason(exc: DBAPIError) -> str:
    text = str(exc.orig).strip() or type(exc.orig).__name__
    return " ".join(text.split())


def probe(url: str) -> None:
    """Check `url` and, for a database server, that it answers and takes the password;
    creates nothing. Commands that open the ledger later (a server once it is up, the
    monthly job on its day) call it first, so a bad URL fails them at once."""
    parsed = check_url(url)
    if parsed.get_backend_name() == "sqlite":
        return
    engine = make_engine(url)
    try:
        engine.connect().close()
    except OperationalError as exc:
        raise UnavailableError(f"ledger {masked(url)}: cannot connect: {_reason(exc)}") from None
    finally:
        engine.dispose()
