"""A private PostgreSQL server on loopback, in its own temporary folder.

`initdb` makes a cluster whose only role is `fairpool` with a password (so tests can also
try a wrong one); `postgres` listens on 127.0.0.1 at a free port with its socket in the
same folder, never the system's /var/run/postgresql. PostgreSQL refuses to run as root, so
when the caller is root the server runs as the package's `postgres` user and the folder
(under /tmp, which that user can reach) is handed to it.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psutil
import psycopg

ROLE = "fairpool"
_PR_SET_PDEATHSIG = 1
_START_TRIES = 3


class PostgresMissing(RuntimeError):
    """initdb/postgres are not installed (`make system-deps` installs them)."""


def bindir() -> Path:
    """The folder holding initdb and postgres: on PATH, else Debian's newest version."""
    found = shutil.which("initdb")
    if found is not None:
        return Path(os.path.realpath(found)).parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if not versions:
        raise PostgresMissing("initdb not found; run `make system-deps` (mk/postgresql.mk)")
    return Path(versions[-1]).parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # Runs in the child after it switched user: a test run that is killed takes its
    # server along.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)


class PostgresServer:
    """``with PostgresServer() as pg: url = pg.create_database("x")``.

    `durable=False` turns fsync off (tests: faster, and a crash only loses a temporary
    folder); benchmarks keep it on to measure what a real ledger pays.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.password = secrets.token_hex(12)
        self.port = 0
        self.folder: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._user: pwd.struct_passwd | None = None

    # ---- life cycle ----------------------------------------------------------------

    def start(self) -> PostgresServer:
        bin_ = bindir()
        self._user = _server_user()
        self.folder = Path(tempfile.mkdtemp(prefix="fairpool-pg-"))
        if self._user is not None:
            os.chown(self.folder, self._user.pw_uid, self._user.pw_gid)
        pwfile = self.folder / "pw"
        pwfile.write_text(self.password + "\n")
        self._chown(pwfile)
        self._run(
            [
                str(bin_ / "initdb"),
                "-D",
                str(self.folder / "data"),
                "-U",
                ROLE,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        pwfile.unlink()
        for attempt in range(_START_TRIES):
            self.port = _free_port()
            try:
                self._start_postgres(bin_)
                return self
            except RuntimeError:
                if attempt == _START_TRIES - 1 or "already in use" not in self.log_tail():
                    raise
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            # SIGINT: PostgreSQL's "fast" shutdown (rolls back open sessions, no waiting).
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- databases -----------------------------------------------------------------

    def url(self, database: str, *, password: str | None = None) -> str:
        """The SQLAlchemy URL of `database` on this server."""
        secret = self.password if password is None else password
        return f"postgresql+psycopg://{ROLE}:{secret}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its SQLAlchemy URL."""
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]

    def memory_bytes(self) -> int:
        """Memory of the server's processes (postmaster and backends): the sum of their
        proportional set sizes, so pages they share are counted once."""
        if self._proc is None:
            return 0
        try:
            main = psutil.Process(self._proc.pid)
            processes = [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                total += int(process.memory_full_info().pss)
        return total

    def log_tail(self, lines: int = 30) -> str:
        if self.folder is None:
            return ""
        try:
            text = (self.folder / "postgres.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.rstrip().splitlines()[-lines:])

    # ---- helpers -------------------------------------------------------------------

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=ROLE,
            password=self.password,
            dbname="postgres",
            autocommit=True,
        )

    def _start_postgres(self, bin_: Path) -> None:
        assert self.folder is not None
        settings = ["-c", "fsync=off", "-c", "full_page_writes=off"] if not self.durable else []
        log = self.folder / "postgres.log"
        with log.open("ab") as out:
            self._chown(log)
            self._proc = subprocess.Popen(
                [
                    str(bin_ / "postgres"),
                    "-D",
                    str(self.folder / "data"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.folder),
                    *settings,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                start_new_session=True,
                user=self._user.pw_uid if self._user else None,
                group=self._user.pw_gid if self._user else None,
                extra_groups=[] if self._user else None,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + 60
        while True:
            if self._proc.poll() is not None:
                self._proc = None
                raise RuntimeError(f"postgres exited; last lines:\n{self.log_tail()}")
            with contextlib.suppress(psycopg.OperationalError), self._admin():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgres not ready in 60 s; last lines:\n{self.log_tail()}")
            time.sleep(0.1)

    def _run(self, command: list[str]) -> None:
        assert self.folder is not None
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            cwd=self.folder,
            user=self._user.pw_uid if self._user else None,
            group=self._user.pw_gid if self._user else None,
            extra_groups=[] if self._user else None,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {result.stderr.strip()[-2000:]}")

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)


def _server_user() -> pwd.struct_passwd | None:
    """None when not root; else the package's `postgres` user (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError as exc:
        raise PostgresMissing(
            "running as root needs the `postgres` user of Debian's postgresql package; "
            "run `make system-deps` (mk/postgresql.mk)"
        ) from exc
