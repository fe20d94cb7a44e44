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
        return f"{where}{self.path or '<document>'}: {self.message}"


class InputError(ValueError):
    """Bad input from a user (policy, inventory, trace, annotation, request): the CLI
    prints it and exits 2; servers answer INVALID_ARGUMENT."""


class PolicyError(InputError):
    """A policy or inventory document that cannot be used, with every issue found."""

    def __init__(self, source: str, issues: list[FieldIssue]) -> None:
        self.source = source
        self.issues = issues
        lines = "\n".join(f"  {i}" for i in issues)
        super().__init__(f"{source}: {len(issues)} error(s)\n{lines}")


class UnavailableError(RuntimeError):
    """Something the command needs (a database, a server) cannot be reached or is not
    there, though it was named correctly: the CLI prints it and exits 1."""
