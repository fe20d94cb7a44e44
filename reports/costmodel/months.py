"""Billing months cut at local midnight in the policy's time zone.

Inside, every time is UTC; an hour belongs to the month in which its UTC start falls,
once the month's bounds are converted to UTC. A month therefore has 743, 744 or 745
hours around a DST change (October in Europe/Paris has 745).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from policies.errors import InputError
from policies.instants import FIRST_YEAR, LAST_YEAR, YEARS

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


class MonthError(InputError):
    """A month that is not `YYYY-MM`."""


def parse_month(month: str) -> tuple[int, int]:
    match = _MONTH.match(month.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise MonthError(f"--month: expected YYYY-MM (e.g. 2026-10), got {month!r}")
    if not FIRST_YEAR <= int(match.group(1)) <= LAST_YEAR:
        raise MonthError(f"--month: {month!r} is not in {YEARS}")
    return int(match.group(1)), int(match.group(2))


def canonical_month(month: str) -> str:
    """`month` as YYYY-MM, checked (`parse_month`): without the spaces or other digits
    it may have been given with (" 2026-10" was checked stripped, then kept as given in
    the report and the name of its folder)."""
    year, number = parse_month(month)
    return f"{year:04d}-{number:02d}"


def month_bounds(month: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """UTC start (inclusive) and end (exclusive) of `month`: the first UTC hour that
    starts at or after local midnight in `tz`, as an hour belongs to the month its start
    falls in. In a zone whose offset is not whole hours (Asia/Kolkata, +05:30) local
    midnight is half past a UTC hour; cut there, the month's hours matched none of the
    ledger's, and every report of the month failed."""
    year, number = parse_month(month)
    next_year, next_number = (year + 1, 1) if number == 12 else (year, number + 1)
    start = datetime(year, number, 1, tzinfo=tz).astimezone(UTC)
    end = datetime(next_year, next_number, 1, tzinfo=tz).astimezone(UTC)
    return _next_hour(start), _next_hour(end)


def _next_hour(instant: datetime) -> datetime:
    """The first UTC hour start at or after `instant`."""
    floor = instant.replace(minute=0, second=0, microsecond=0)
    return floor if floor == instant else floor + timedelta(hours=1)


def month_hours(month: str, tz: ZoneInfo) -> list[datetime]:
    """Every UTC hour start in the month."""
    start, end = month_bounds(month, tz)
    count = int((end - start) / timedelta(hours=1))
    return [start + timedelta(hours=i) for i in range(count)]


def month_of(instant: datetime, tz: ZoneInfo) -> str:
    """The billing month (`YYYY-MM`) that an instant falls in."""
    if instant.tzinfo is None:
        raise ValueError("naive datetime: times are timezone-aware UTC")
    local = instant.astimezone(tz)
    return f"{local.year:04d}-{local.month:02d}"


def previous_month(instant: datetime, tz: ZoneInfo) -> str:
    """The month before the one `instant` falls in (what the monthly job reports)."""
    local = instant.astimezone(tz).date()
    last_day = date(local.year, local.month, 1) - timedelta(days=1)
    return f"{last_day.year:04d}-{last_day.month:02d}"


def local_day(instant: datetime, tz: ZoneInfo) -> date:
    return instant.astimezone(tz).date()
