"""Errors for bad policy, inventory or trace input: each names the field path and line."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldIssue:
    """One problem in an input document: where (field path, line) and what."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        # An issue of the whole document (unreadable, not YAML) is said of the file
        # alone: a "<document>" placeholder read as the name of a field.
        field = f"{self.path}: " if self.path else ""
        return f"{where}{field}{self.message}"


class InputError(ValueError):
    """Bad input from a user (policy, inventory, trace, annotation, request): the CLI
    prints it and exits 2; servers answer INVALID_ARGUMENT."""


class OutputError(InputError):
    """A file or folder named for output that cannot be written (a path through a file,
    a folder without write permission, a full disk): the path and the system's reason,
    instead of a traceback about a temporary file."""

    def __init__(self, path: object, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        if isinstance(exc, FileExistsError | NotADirectoryError) and exc.filename:
            reason = f"{exc.filename} is a file, not a folder"
        super().__init__(f"{path}: cannot write there ({reason})")


class ListenError(InputError):
    """An address given to listen on that cannot be listened on (taken by another
    process, not an address of this machine, not resolvable): the address and why."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot listen on {address}: {reason}")


def listen_error(address: str, exc: OSError) -> ListenError:
    """The ListenError of a failed bind, with the system's reason."""
    return ListenError(address, exc.strerror or str(exc))


GRPC_BIND_FAILED = "taken by another process, or not an address of this machine"
"""Why gRPC could not bind: it says no more than that it failed."""


class PolicyError(InputError):
    """A policy or inventory document that cannot be used, with every issue found."""

    def __init__(self, source: str, issues: list[FieldIssue]) -> None:
        self.source = source
        self.issues = issues
        if len(issues) == 1:
            # One problem reads best on one line: where, then what.
            super().__init__(f"{source}: {issues[0]}")
            return
        lines = "\n".join(f"  {i}" for i in issues)
        super().__init__(f"{source}: {len(issues)} error(s)\n{lines}")


class UnavailableError(RuntimeError):
    """Something the command needs (a database, a server) cannot be reached or is not
    there, though it was named correctly: the CLI prints it and exits 1."""
