"""Starting, probing and stopping the control plane's processes.

Each process runs in its own session (so its process group is its pid) with its output
in a log file; stopping signals the whole group, so nothing a binary forked survives.
A process is remembered by pid and start time, so a reused pid is never signalled.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

TAIL_LINES = 30
_PR_SET_PDEATHSIG = 1


class StartError(RuntimeError):
    """A process that died or never became ready, with the end of its log."""

    def __init__(self, name: str, reason: str, log: Path) -> None:
        self.name = name
        self.log = log
        self.tail = log_tail(log)
        super().__init__(f"{name} {reason}; last lines of {log}:\n{self.tail}")

    @property
    def port_in_use(self) -> bool:
        return "address already in use" in self.tail.lower()


def log_tail(log: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty log)"


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the caller retries on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    create_time: float
    log: str
    command: tuple[str, ...]

    def process(self) -> psutil.Process | None:
        """The live process, or None if it ended (or its pid now belongs to another)."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.5:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.NoSuchProcess:
            return None
        return proc

    def alive(self) -> bool:
        return self.process() is not None


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies (Linux prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def spawn(
    name: str,
    command: Sequence[str],
    log: Path,
    *,
    die_with_parent: bool = False,
    env: Mapping[str, str] | None = None,
) -> ProcessRecord:
    """Start `command` in a new session, output appended to `log` (`env` is added to
    this process's environment).

    `die_with_parent` ties the process to this one (a test session that is killed takes
    its cluster along); a cluster started by `up` must outlive the command instead.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **env} if env else None,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    try:
        created = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:
        created = 0.0
    # The Popen object is dropped on purpose: the cluster outlives a `up` command, and
    # a process that exits while we still run is reaped by `_reap` below.
    return ProcessRecord(name, proc.pid, created, str(log), tuple(command))


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def wait_ready(
    record: ProcessRecord,
    probe: Callable[[], bool],
    timeout: float,
    what: str = "ready",
) -> None:
    """Poll `probe` until it is true; fail early, with the log's tail, if the process dies."""
    deadline = time.monotonic() + timeout
    while True:
        _reap(record.pid)
        if not record.alive():
            raise StartError(record.name, "exited during start", Path(record.log))
        if probe():
            return
        if time.monotonic() > deadline:
            raise StartError(record.name, f"not {what} after {timeout:.0f}s", Path(record.log))
        time.sleep(0.2)


def http_ok(
    url: str,
    *,
    token: str | None = None,
    ca_file: Path | None = None,
    expect: str | None = None,
) -> bool:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            body = response.read().decode(errors="replace")
            return response.status == 200 and (expect is None or expect in body)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def stop(record: ProcessRecord, grace: float = 10.0) -> bool:
    """SIGTERM the record's process group, SIGKILL it after `grace` s; True if it was running."""
    proc = record.process()
    if proc is None:
        _reap(record.pid)
        return False
    pgid = record.pid  # start_new_session made the process its group's leader
    members = [proc]
    with contextlib.suppress(psutil.Error):
        members += proc.children(recursive=True)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not any(_running(p) for p in members):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    for p in members:
        with contextlib.suppress(psutil.Error):
            p.kill()
    _reap(record.pid)
    psutil.wait_procs(members, timeout=5)
    return True


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
