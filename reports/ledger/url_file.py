"""A ledger URL kept in a file (a mounted Secret), read again for each new connection.

A password rotated in the file reaches a running scheduler or meter without a restart:
the engine's ``do_connect`` hook reads the file before it opens a connection and, when a
connection fails and the file has changed meanwhile (the Secret was refreshed between
the two), tries the new URL once. Connections already open keep the credentials they
were opened with, as the database server does; they are used until they are closed.

The URL travels through every layer as the string it was when the program started
(`LedgerUrlFile` is that string, carrying its file), so nothing between the command line
and the engine needs to know where it came from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Dialect, Engine, make_url
from sqlalchemy.exc import ArgumentError

from policies.errors import InputError

log = logging.getLogger(__name__)


class LedgerUrlFile(str):
    """The URL in `path` as it was read; `read_url_file` makes one."""

    path: Path
    flag: str

    def __new__(cls, url: str, path: Path, flag: str) -> LedgerUrlFile:
        made = super().__new__(cls, url)
        made.path = path
        made.flag = flag
        return made

    def __reduce__(self) -> tuple[Any, ...]:
        # A process started by spawn gets it with its file, not as the bare URL.
        return (LedgerUrlFile, (str(self), self.path, self.flag))


def read_url_file(path: Path, flag: str) -> LedgerUrlFile:
    """The URL in `path`, or an InputError naming `flag` and the path."""
    return LedgerUrlFile(_read(path, flag), path, flag)


def _read(path: Path, flag: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{flag}: {path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{flag}: {path}: is a folder; give the file holding the URL") from None
    except UnicodeDecodeError:
        raise InputError(f"{flag}: {path}: not text; it should hold the ledger's URL") from None
    except OSError as exc:
        raise InputError(f"{flag}: {path}: cannot read it ({exc.strerror})") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{flag}: {path}: is empty; it should hold the ledger's database URL")
    if len(lines) > 1:
        raise InputError(
            f"{flag}: {path}: holds {len(lines)} lines; it should hold one database URL"
        )
    return lines[0]


def follow(engine: Engine, url: LedgerUrlFile, connect_args: dict[str, Any]) -> None:
    """Open each new connection of `engine` with the URL its file holds then.
    `connect_args`: what the engine was made with, kept for every URL."""
    event.listen(engine, "do_connect", _Follower(engine.url, url, connect_args).connect)


class _Follower:
    def __init__(self, start: URL, url: LedgerUrlFile, connect_args: dict[str, Any]) -> None:
        self.path = url.path
        self.flag = url.flag
        self.connect_args = connect_args
        self.last_good = start

    def connect(
        self, dialect: Dialect, _record: Any, cargs: list[Any], cparams: dict[str, Any]
    ) -> Any:
        url = self._current()
        _use(dialect, url, self.connect_args, cargs, cparams)
        connect: Callable[..., Any] = dialect.connect
        try:
            return connect(*cargs, **cparams)
        except dialect.loaded_dbapi.OperationalError:
            newer = self._current()
            if newer == url:
                raise
            log.warning(
                "ledger %s: connecting failed and %s %s changed meanwhile; trying %s once",
                _shown(url),
                self.flag,
                self.path,
                _shown(newer),
            )
            _use(dialect, newer, self.connect_args, cargs, cparams)
            return connect(*cargs, **cparams)

    def _current(self) -> URL:
        """The file's URL now; the last good one when the file cannot be used (it is
        being rewritten by hand, or names another kind of database, which this engine
        cannot speak)."""
        try:
            url = make_url(_read(self.path, self.flag))
        except InputError as exc:
            log.warning("ledger: %s; connecting with the URL it held before", exc)
            return self.last_good
        except (ArgumentError, ValueError):
            log.warning(
                "ledger: %s %s: not a database URL; connecting with the URL it held before",
                self.flag,
                self.path,
            )
            return self.last_good
        if url.drivername != self.last_good.drivername:
            log.warning(
                "ledger: %s %s: names a %s database, not %s as when the program started "
                "(restart it for that); connecting with the URL it held before",
                self.flag,
                self.path,
                url.drivername,
                self.last_good.drivername,
            )
            return self.last_good
        if url != self.last_good:
            log.info(
                "ledger: %s %s changed: new connections use %s", self.flag, self.path, _shown(url)
            )
        self.last_good = url
        return url


def _use(
    dialect: Dialect,
    url: URL,
    connect_args: dict[str, Any],
    cargs: list[Any],
    cparams: dict[str, Any],
) -> None:
    # SQLAlchemy hands the hook the lists it connects with; they are changed in place, as
    # its do_connect documentation shows, so the pool's later connections start from them.
    new_args, new_params = dialect.create_connect_args(url)
    cargs[:] = new_args
    cparams.clear()
    cparams.update(new_params)
    cparams.update(connect_args)


def _shown(url: URL) -> str:
    return url.render_as_string(hide_password=True)
