"""The instants fairpool takes from a user (a trace's ISO times, a replay's start, the
hours to meter, a report's month, a usage range): from 1970, when epoch seconds and any
usage begin, to the end of 2200, so that a report's dates, with ten years of trace after
them, stay within what the tables' nanosecond timestamps hold (they end in 2262). Year 1
and year 9999 were overflow tracebacks."""

from __future__ import annotations

from datetime import UTC, datetime

FIRST_YEAR = 1970
LAST_YEAR = 2200
FIRST_INSTANT = datetime(FIRST_YEAR, 1, 1, tzinfo=UTC)
END_INSTANT = datetime(LAST_YEAR + 1, 1, 1, tzinfo=UTC)
"""The first instant after the last year (exclusive)."""
YEARS = f"the years {FIRST_YEAR} to {LAST_YEAR}"
"""How messages name the range."""


def within(moment: datetime) -> bool:
    """`moment` (timezone-aware) lies in the years fairpool takes."""
    return FIRST_INSTANT <= moment < END_INSTANT
