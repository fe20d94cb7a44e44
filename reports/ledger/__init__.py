"""The usage ledger (`store.Ledger`) and its schema (`schema`: tables, columns, and the
one UTC column type every datetime in it uses)."""

from reports.costmodel.usage_row import USAGE_COLUMNS
from reports.ledger.schema import (
    CAPACITY_COLUMNS,
    HOURS_COLUMNS,
    RECLAIM_LOST_COLUMNS,
    UTCDateTime,
    hour_start,
    hours_between,
)
from reports.ledger.store import HourWrite, Ledger, MeteringRun

__all__ = [
    "CAPACITY_COLUMNS",
    "HOURS_COLUMNS",
    "RECLAIM_LOST_COLUMNS",
    "USAGE_COLUMNS",
    "HourWrite",
    "Ledger",
    "MeteringRun",
    "UTCDateTime",
    "hour_start",
    "hours_between",
]
