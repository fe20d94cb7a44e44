"""Which hours of a month have data, per hour and per local day.

A report is never silently zero: an hour that the meter has not filled (pending, or
absent from the ledger) is *missing*, an hour with coverage below 1 is *partial*, and
both are flagged per day and in the month's totals. An hour an admin gave up on
(`fairpool meter --forget`, status "forgotten") is missing too, and said to be given up.
An "empty" hour (the cluster had no nodes yet) is metered, with nothing in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd

METERED = frozenset({"metered", "empty", "complete", "ok", "done"})
FORGOTTEN = "forgotten"
_EPSILON = 1e-9


@dataclass(frozen=True)
class Coverage:
    hourly: pd.DataFrame
    """`hour`, `day`, `missing` (bool), `coverage` (0..1, NaN when missing)."""
    daily: pd.DataFrame
    """`day`, `hours`, `hours_missing`, `hours_partial`, `min_coverage`, `message`."""
    flags: list[str]
    """The month's totals, then one message per day with missing or partial hours."""
    totals: int = 0
    """How many of `flags` are the month's totals (the rest are per-day messages)."""

    @property
    def month_flags(self) -> list[str]:
        return self.flags[: self.totals]

    @property
    def day_flags(self) -> list[str]:
        """One flag per day with missing or partial hours: also in the coverage table."""
        return self.flags[self.totals :]

    @property
    def hours_missing(self) -> int:
        return int(self.hourly["missing"].sum())

    @property
    def hours_partial(self) -> int:
        return int(((~self.hourly["missing"]) & (self.hourly["coverage"] < 1 - _EPSILON)).sum())

    @property
    def complete(self) -> bool:
        return self.hours_missing == 0 and self.hours_partial == 0


def partial_percent(coverage: float) -> str:
    """The coverage of a partial hour as a percentage, floored to a tenth and at most
    99.9 %: rounded, an hour at 99.6 % read "coverage down to 100%" beside the word
    partial. Whole percentages keep no decimal ("92%")."""
    # The small term: a ratio that is a whole tenth of a percent but lands a hair below
    # it in binary arithmetic is not floored a tenth lower.
    tenths = min(math.floor(float(coverage) * 1000 + 1e-6), 999)
    return f"{tenths // 10}%" if tenths % 10 == 0 else f"{tenths / 10:.1f}%"


def month_hour_index(start: datetime, end: datetime) -> pd.DatetimeIndex:
    count = int((end - start) / timedelta(hours=1))
    return pd.date_range(pd.Timestamp(start), periods=count, freq="h", tz="UTC")


def local_days(hours: pd.DatetimeIndex, tz: ZoneInfo) -> pd.Series:
    """Local calendar day of each UTC hour start, indexed by the hour."""
    return pd.Series(hours.tz_convert(tz).date, index=hours)


def _plural(count: int) -> str:
    return f"{count} hour" if count == 1 else f"{count} hours"


def measure_coverage(
    start: datetime,
    end: datetime,
    tz: ZoneInfo,
    usage: pd.DataFrame,
    capacity: pd.DataFrame,
    hour_status: pd.DataFrame | None,
) -> Coverage:
    hours = month_hour_index(start, end)
    data_coverage = pd.concat(
        [
            usage.groupby("hour")["coverage"].min(),
            capacity.groupby("hour")["coverage"].min(),
        ],
        axis=1,
        sort=True,
    ).min(axis=1)
    data_coverage = data_coverage.reindex(hours)
    given_up = pd.Series(False, index=hours)
    if hour_status is None:
        missing = data_coverage.isna()
        coverage = data_coverage
    else:
        status = hour_status.groupby("hour").agg(
            status=("status", "last"), coverage=("coverage", "min")
        )
        status = status.reindex(hours)
        metered = status["status"].isin(list(METERED))
        missing = ~metered
        given_up = status["status"] == FORGOTTEN
        coverage = pd.concat([status["coverage"], data_coverage], axis=1).min(axis=1)
        coverage = coverage.where(metered)
    coverage = coverage.fillna(1.0).where(~missing)
    hourly = pd.DataFrame(
        {
            "hour": hours,
            "day": local_days(hours, tz).values,
            "missing": missing.values.astype(bool),
            "coverage": coverage.values.astype("float64"),
        }
    )
    hourly["partial"] = (~hourly["missing"]) & (hourly["coverage"] < 1 - _EPSILON)
    daily = hourly.groupby("day", as_index=False).agg(
        hours=("hour", "count"),
        hours_missing=("missing", "sum"),
        hours_partial=("partial", "sum"),
        min_coverage=("coverage", "min"),
    )
    messages: list[str] = []
    for row in daily.itertuples(index=False):
        parts = []
        if row.hours_missing:
            parts.append(f"data missing for {_plural(int(row.hours_missing))} on {row.day}")
        if row.hours_partial:
            parts.append(
                f"partial data (coverage down to {partial_percent(row.min_coverage)}) for "
                f"{_plural(int(row.hours_partial))} on {row.day}"
            )
        messages.append("; ".join(parts))
    daily["message"] = messages
    flags: list[str] = []
    total_missing = int(hourly["missing"].sum())
    total_partial = int(hourly["partial"].sum())
    total_given_up = int(given_up.sum())
    if total_missing:
        flags.append(f"data missing for {_plural(total_missing)} of {len(hours)} this month")
    if total_given_up:
        flags.append(
            f"metering given up for {_plural(total_given_up)} of these "
            "(fairpool meter --forget): they will not be metered"
        )
    if total_partial:
        flags.append(f"partial data (coverage < 100%) for {_plural(total_partial)} this month")
    totals = len(flags)
    flags.extend(m for m in messages if m)
    return Coverage(hourly=hourly, daily=daily, flags=flags, totals=totals)
