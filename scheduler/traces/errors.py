"""Errors for bad trace input: each problem names the file, the line and the column."""

from __future__ import annotations

from dataclasses import dataclass

from policies.errors import InputError

MAX_REPORTED = 20
"""Problems listed in one error; the rest are only counted, so a broken 100k-row file
gives a readable message rather than 100k lines."""


@dataclass(frozen=True, slots=True)
class TraceIssue:
    """One problem in a trace file: where (1-based line, column name) and what."""

    line: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column:
            where.append(f"column {self.column}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class TraceError(InputError):
    """A trace that cannot be used, with the first problems found and a count of all."""

    def __init__(self, source: str, issues: list[TraceIssue], total: int | None = None) -> None:
        self.source = source
        self.issues = issues
        self.total = max(total or len(issues), len(issues))
        lines = "\n".join(f"  {i}" for i in issues)
        more = self.total - len(issues)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{source}: {self.total} error(s)\n{lines}{tail}")


class IssueCollector:
    """Gathers problems while a file is read, keeping the first MAX_REPORTED in full."""

    def __init__(self, source: str, limit: int = MAX_REPORTED) -> None:
        self.source = source
        self.limit = limit
        self.issues: list[TraceIssue] = []
        self.total = 0

    def add(self, line: int | None, column: str | None, message: str) -> None:
        self.total += 1
        if len(self.issues) < self.limit:
            self.issues.append(TraceIssue(line, column, message))

    def __bool__(self) -> bool:
        return self.total > 0

    def raise_if_any(self) -> None:
        if self.total:
            raise TraceError(self.source, self.issues, self.total)
