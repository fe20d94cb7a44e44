"""The usage ledger's schema: its tables, their columns, and the one UTC column type.

Every ``hour`` is the start of a UTC hour, stored as UTC and always returned
timezone-aware UTC (`UTCDateTime`, on every backend).

==============  ===========================  ==============================================
table           key                          columns
==============  ===========================  ==============================================
usage           (hour, pod_uid)              namespace, pod, job_id, member, owner,
                                             gpu_model, node, gpu_seconds (float),
                                             utilization (float 0..1, NULL = unknown),
                                             coverage (0..1), policy_version (int),
                                             source ("fairpool" | "kube-state-metrics" |
                                             "simulation")
capacity        (hour, node)                 owner, gpu_model, gpu_seconds_available,
                                             coverage
reclaim_lost    (hour, member, gpu_model,    gpu_seconds_lost
                cause)                       (cause: "entitlement" | "fair_share" |
                                             "consolidation" | "queue", "" = not
                                             recorded)
hours           hour                         status ("metered" | "empty" | "pending" |
                                             "forgotten"), coverage, attempts,
                                             last_error, metered_at
node_coverage   (hour, node)                 allocation, capacity, utilization: share of
                                             the expected samples found, 0..1 (NULL: no
                                             samples were expected)
forgotten_ranges id                          range_start, range_end, hours, forgotten_by,
                                             forgotten_at, reason
metering_runs   id                           started_at, finished_at, range_start,
                                             range_end, hours_ok, hours_pending,
                                             mean_coverage, error
policy_versions version                      author, applied_at, origin, comment,
                                             document (YAML), diff, sha256
==============  ===========================  ==============================================
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Column, DateTime, Dialect, Float, Integer, MetaData, String, Table, Text
from sqlalchemy.types import TypeDecorator, TypeEngine

from policies.errors import InputError
from reports.costmodel.usage_row import (
    USAGE_ROW,
    UsageField,
)

HOUR = timedelta(hours=1)

METERED = "metered"
EMPTY = "empty"
"""Metered, and zero: Prometheus answered and the cluster had no nodes yet."""
PENDING = "pending"
FORGOTTEN = "forgotten"
"""Given up by an admin (`fairpool meter --forget`): no longer retried."""
DONE = (METERED, EMPTY)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite keeps naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise InputError(f"naive datetime {value.isoformat()} given to a UTC column; use UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = MetaData()


def _usage_column(field: UsageField) -> Column[Any]:
    sql_type: dict[type, TypeEngine[Any]] = {
        datetime: UTCDateTime(),
        str: String(field.max_length),
        float: Float(),
        int: Integer(),
    }
    return Column(
        field.name,
        sql_type[field.kind],
        primary_key=field.key,
        nullable=field.default is None,
        default=None if field.required else field.default,
    )


usage_table = Table("usage", metadata, *(_usage_column(f) for f in USAGE_ROW))

capacity_table = Table(
    "capacity",
    metadata,
    Column("hour", UTCDateTime, primary_key=True),
    Column("node", String(253), primary_key=True),
    Column("owner", String(253), nullable=False),
    Column("gpu_model", String(253), nullable=False),
    Column("gpu_seconds_available", Float, nullable=False),
    Column("coverage", Float, nullable=False),
)

reclaim_lost_table = Table(
    "reclaim_lost",
    metadata,
    Column("hour", UTCDateTime, primary_key=True),
    Column("member", String(253), primary_key=True),
    Column("gpu_model", String(253), primary_key=True),
    # Who preempted the work (docs/glossary.md, "cause"); "" for rows metered before
    # fairpool recorded it (migration 0003).
    Column("cause", String(32), primary_key=True, server_default=""),
    Column("gpu_seconds_lost", Float, nullable=False),
)

hours_table = Table(
    "hours",
    metadata,
    Column("hour", UTCDateTime, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("coverage", Float, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("metered_at", UTCDateTime, nullable=True),
)

metering_runs_table = Table(
    "metering_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("range_start", UTCDateTime, nullable=False),
    Column("range_end", UTCDateTime, nullable=False),
    Column("hours_ok", Integer, nullable=False, default=0),
    Column("hours_pending", Integer, nullable=False, default=0),
    Column("mean_coverage", Float, nullable=True),
    Column("error", Text, nullable=True),
)

node_coverage_table = Table(
    "node_coverage",
    metadata,
    Column("hour", UTCDateTime, primary_key=True),
    Column("node", String(253), primary_key=True),
    Column("allocation", Float, nullable=True),
    Column("capacity", Float, nullable=True),
    Column("utilization", Float, nullable=True),
)

FORGOTTEN_BY_LENGTH = 253
"""The longest name of who gave hours up (`Ledger.forget`) that the ledger holds."""

forgotten_ranges_table = Table(
    "forgotten_ranges",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("range_start", UTCDateTime, nullable=False),
    Column("range_end", UTCDateTime, nullable=False),
    Column("hours", Integer, nullable=False),
    Column("forgotten_by", String(FORGOTTEN_BY_LENGTH), nullable=False),
    Column("forgotten_at", UTCDateTime, nullable=False),
    Column("reason", Text, nullable=False),
)

CAPACITY_COLUMNS = [c.name for c in capacity_table.columns]
NODE_COVERAGE_COLUMNS = [c.name for c in node_coverage_table.columns]
RECLAIM_LOST_COLUMNS = [c.name for c in reclaim_lost_table.columns]
HOURS_COLUMNS = [c.name for c in hours_table.columns]


def hour_start(value: datetime) -> datetime:
    """`value` as a tz-aware UTC datetime, checked to be the start of an hour."""
    if value.tzinfo is None:
        raise InputError(f"hour {value.isoformat()} has no time zone; the ledger keeps UTC")
    value = value.astimezone(UTC)
    if value.minute or value.second or value.microsecond:
        raise InputError(f"hour {value.isoformat()} is not the start of an hour")
    return value


def hours_between(start: datetime, end: datetime) -> list[datetime]:
    """Every hour start h with start <= h < end (both bounds on the hour, UTC)."""
    first, last = hour_start(start), hour_start(end)
    out: list[datetime] = []
    hour = first
    while hour < last:
        out.append(hour)
        hour += HOUR
    return out


# The audit log of every policy version (written by the gRPC API's policy store): in the
# ledger's schema so that a month's prices can be read next to its usage.
policy_versions = Table(
    "policy_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("author", String(253), nullable=False),
    Column("applied_at", UTCDateTime, nullable=False),
    Column("origin", String(16), nullable=False),
    Column("comment", Text, nullable=False, default=""),
    Column("document", Text, nullable=False),
    Column("diff", Text, nullable=False, default=""),
    Column("sha256", String(64), nullable=False),
)
