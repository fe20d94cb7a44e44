"""Files and folders written for a user (traces, reports, policies, simulation tables):
whole or not at all, and readable as any file the user makes.

Each is written beside its target under a temporary name and renamed over it, so a
reader never sees half a file and a failure leaves what was there. Temporary files and
folders are private (`mkstemp` makes files 0600, `mkdtemp` folders 0700): before the
rename they get the mode the file had, or the one a new file gets under the user's umask,
or a cost report meant for every member would reach them as a folder only its writer
can open.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from policies.errors import OutputError

__all__ = [
    "mode_of",
    "new_mode",
    "open_whole",
    "remove_staging",
    "staging_folder",
    "write_whole",
]


def _umask() -> int:
    """The process's umask, read without changing it: setting it to learn it (the only
    portable way) would, for that instant, give every other thread's new files 0666."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def new_mode(folder: bool = False) -> int:
    """The permission bits a new file (or folder) gets under the umask."""
    return (0o777 if folder else 0o666) & ~_umask()


def mode_of(path: Path) -> int:
    """The permission bits of `path`, or those a new file gets under the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return new_mode()


def open_whole(
    path: Path, newline: str | None = None
) -> contextlib.AbstractContextManager[IO[str]]:
    """A text handle whose content replaces `path` when the block ends without error
    (created with its parent folders; its mode kept), and is discarded otherwise. A
    system error (a path through a file, no permission, a full disk) is an `OutputError`
    naming `path`."""
    return _whole(Path(path), False, newline)


@contextlib.contextmanager
def _whole(path: Path, binary: bool, newline: str | None) -> Iterator[IO[Any]]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(path, exc) from exc
    handle: IO[Any] = (
        os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline=newline)
    )
    try:
        with handle:
            os.fchmod(handle.fileno(), mode_of(path))
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
        sync_folder(path.parent)
    except BaseException as exc:
        Path(temp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(path, exc) from exc
        raise


def sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (its entry on disk), where the system allows
    opening a folder (POSIX)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder: the rename stands as it is
    finally:
        os.close(fd)


def write_whole(path: Path, data: str | bytes) -> None:
    """`data` as the whole content of `path` (see `open_whole`)."""
    with _whole(Path(path), isinstance(data, bytes), None) as handle:
        handle.write(data)


def staging_folder(out_dir: Path) -> Path:
    """A new empty folder beside `out_dir` to write its files in before they are moved
    there (or it is renamed to `out_dir`), with a new folder's usual mode. The caller
    removes it (`remove_staging`)."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        os.chmod(staging, new_mode(folder=True))
    except OSError as exc:
        raise OutputError(out_dir, exc) from exc
    return staging


def remove_staging(staging: Path) -> None:
    """Whatever of a staging folder is left (nothing, once its files were moved)."""
    if staging.exists():
        shutil.rmtree(staging, ignore_errors=True)
