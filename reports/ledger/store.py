"""The usage ledger: metered GPU usage per hour and pod, durable in SQL.

A SQLite file by default, or a PostgreSQL database (``postgresql+psycopg://...``); the
URL is checked, and a bad one said in one line, by `reports.ledger.connect`.
Opening it upgrades the database to the newest schema (`reports.ledger.migrate`), creating
the tables (`reports.ledger.schema`) in an empty one.

``usage_frame``, ``capacity_frame`` and ``reclaim_lost_frame`` return the same columns as
the simulator's ``usage.parquet`` / ``capacity.parquet`` / ``reclaim_lost.parquet`` (plus
``pod``, ``source`` for usage and ``node``, ``coverage`` for capacity), so the cost model
bills simulated and metered usage alike. Capacity is per node; group by (hour, owner,
gpu_model) to match the simulator's aggregation.

An hour's rows are only ever replaced as a whole, in one transaction (``replace_hour``):
rerunning an hour never duplicates, and a failed run leaves the previous rows intact. Two
meters writing the same hour at once take turns (a lock per hour), so the hour ends up with
exactly one of their copies.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Table, delete, func, insert, select, text, update
from sqlalchemy.engine import Connection, Engine

from policies.errors import InputError
from reports.costmodel.frames import LOST_CAUSES, unknown_causes
from reports.costmodel.usage_row import USAGE_COLUMNS, USAGE_DEFAULTS, USAGE_SOURCES
from reports.ledger.connect import open_engine
from reports.ledger.database import SQLITE_BEGIN
from reports.ledger.schema import (
    CAPACITY_COLUMNS,
    DONE,
    FORGOTTEN,
    FORGOTTEN_BY_LENGTH,
    HOUR,
    HOURS_COLUMNS,
    METERED,
    NODE_COVERAGE_COLUMNS,
    PENDING,
    RECLAIM_LOST_COLUMNS,
    capacity_table,
    forgotten_ranges_table,
    hour_start,
    hours_between,
    hours_table,
    metering_runs_table,
    node_coverage_table,
    policy_versions,
    reclaim_lost_table,
    usage_table,
)

# First key of the PostgreSQL advisory locks taken per hour (the second is the hour's
# number since 1970): any fixed 32-bit number no other lock in the database uses.
_HOUR_LOCKS = 0x0FA1_1ED6


@dataclass(frozen=True)
class MeteringRun:
    """One metering run as recorded in `metering_runs`."""

    started_at: datetime
    finished_at: datetime
    range_start: datetime
    range_end: datetime
    hours_ok: int
    hours_pending: int
    mean_coverage: float | None
    error: str | None = None


class Ledger:
    """The usage ledger at `url` (upgraded to the newest schema when opened)."""

    def __init__(
        self,
        url: str = "sqlite:///fairpool-ledger.db",
        *,
        echo: bool = False,
        readonly: bool = False,
    ) -> None:
        """`readonly`: the caller only reads, so a ledger that is not there is an error
        (`policies.errors.UnavailableError`) instead of a new, empty one."""
        self.url = url
        self.engine: Engine = open_engine(url, create=not readonly, echo=echo)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writing -------------------------------------------------------------------

    def replace_hour(
        self,
        hour: datetime,
        usage: pd.DataFrame,
        capacity: pd.DataFrame,
        reclaim_lost: pd.DataFrame | None,
        coverage: float,
        *,
        node_coverage: pd.DataFrame | None = None,
        status: str = METERED,
    ) -> None:
        """Replace everything stored for `hour` by these rows and mark it metered (or
        `empty`: metered, and the cluster had no nodes), in one transaction."""
        self.replace_hours(
            [HourWrite(hour, usage, capacity, reclaim_lost, coverage, node_coverage, status)]
        )

    def replace_hours(
        self, writes: list[HourWrite], pending: Sequence[tuple[datetime, str]] = ()
    ) -> None:
        """`replace_hour` for several hours in one transaction (a meter's chunk): each
        hour's rows are replaced as a whole, and all the hours are written or none.
        `pending`: the chunk's other hours and why they failed (`mark_pending`), in the
        same transaction: marked apart after the rows, a run that stopped in between
        (the process killed, the connection lost) left such an hour with no row before
        hours written after it, and the hourly job, which takes the pending hours and
        those after the latest one attempted, never metered it again."""
        if not writes and not pending:
            return
        rows = _HourRows.of(writes)
        hours = [hour_start(w.hour) for w in writes]
        failed = [(hour_start(h), error) for h, error in pending]
        if len({*hours, *(h for h, _ in failed)}) != len(hours) + len(failed):
            raise InputError("replace_hours: an hour is given twice")
        now = datetime.now(UTC)
        with self._writing(*hours, *(h for h, _ in failed)) as conn:
            for hour, error in failed:
                _mark_pending(conn, hour, error)
            if not writes:
                return
            for table in (usage_table, capacity_table, reclaim_lost_table, node_coverage_table):
                conn.execute(delete(table).where(table.c.hour.in_(hours)))
            for table, values in (
                (node_coverage_table, rows.node_coverage),
                (usage_table, rows.usage),
                (capacity_table, rows.capacity),
                (reclaim_lost_table, rows.lost),
            ):
                if values:
                    conn.execute(insert(table), values)
            attempts = _attempts(conn, hours)
            conn.execute(delete(hours_table).where(hours_table.c.hour.in_(hours)))
            conn.execute(
                insert(hours_table),
                [
                    {
                        "hour": hour,
                        "status": write.status,
                        "coverage": float(write.coverage),
                        "attempts": attempts.get(hour, 0) + 1,
                        "last_error": None,
                        "metered_at": now,
                    }
                    for hour, write in zip(hours, writes, strict=True)
                ],
            )

    def mark_pending(self, hour: datetime, error: str) -> None:
        """Record a failed attempt at `hour`. An hour never metered becomes pending; an
        hour already metered keeps its rows and status (they are still the best data) and
        only records the error."""
        hour = hour_start(hour)
        with self._writing(hour) as conn:
            _mark_pending(conn, hour, error)

    def record_run(self, run: MeteringRun) -> int:
        """Store a metering run; returns its id."""
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(metering_runs_table).values(
                    started_at=run.started_at,
                    finished_at=run.finished_at,
                    range_start=run.range_start,
                    range_end=run.range_end,
                    hours_ok=run.hours_ok,
                    hours_pending=run.hours_pending,
                    mean_coverage=run.mean_coverage,
                    error=run.error,
                )
            )
            key = result.inserted_primary_key
            return int(key[0]) if key is not None else 0

    @contextmanager
    def _writing(self, *hours: datetime) -> Iterator[Connection]:
        """A transaction that alone may write `hours`: two meters metering the same hour
        at once take turns (the second then replaces the first's rows, never adds to them)
        instead of colliding on the keys. The hours are locked in time order, so two
        writers of overlapping hours cannot wait for each other. SQLite has one writer at
        a time anyway; taking the write lock at BEGIN keeps a read-then-write from meeting
        a newer snapshot."""
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    for number in sorted({int(h.timestamp()) // 3600 for h in hours}):
                        conn.execute(
                            text("SELECT pg_advisory_xact_lock(:space, :hour)"),
                            {"space": _HOUR_LOCKS, "hour": number},
                        )
                yield conn

    def forget(
        self, start: datetime, end: datetime, forgotten_by: str, reason: str
    ) -> list[datetime]:
        """Give up on every hour in [start, end) that is not metered: it becomes
        "forgotten", is no longer retried, and the report says it was given up. Who, when
        and why are recorded in `forgotten_ranges`. Returns the hours given up."""
        if not forgotten_by.strip():
            raise InputError("forget: who gives the hours up must be named")
        if len(forgotten_by) > FORGOTTEN_BY_LENGTH:
            # PostgreSQL refused it with a DataError (a traceback), SQLite kept it whole.
            raise InputError(
                f"forget: who gives the hours up is at most {FORGOTTEN_BY_LENGTH} characters "
                f"({len(forgotten_by)} given)"
            )
        if not reason.strip():
            raise InputError("forget: a reason is required (it is kept in the ledger)")
        hours = hours_between(start, end)
        if not hours:
            raise InputError(f"forget: {end.isoformat()} is not after {start.isoformat()}")
        now = datetime.now(UTC)
        # Every hour of the range: a meter writing one of them meanwhile (its row not yet
        # committed, so not seen done) made the insert below fail on PostgreSQL with a
        # duplicate key; holding them, the range waits for it and keeps what it metered.
        with self._writing(*hours) as conn:
            done = {
                _utc(r.hour)
                for r in conn.execute(
                    select(hours_table.c.hour).where(
                        hours_table.c.hour >= hours[0],
                        hours_table.c.hour <= hours[-1],
                        hours_table.c.status.in_(DONE),
                    )
                )
            }
            given_up = [h for h in hours if h not in done]
            if given_up:
                conn.execute(
                    update(hours_table)
                    .where(hours_table.c.hour.in_(given_up))
                    .values(status=FORGOTTEN)
                )
                known = {
                    _utc(r.hour)
                    for r in conn.execute(
                        select(hours_table.c.hour).where(hours_table.c.hour.in_(given_up))
                    )
                }
                fresh = [h for h in given_up if h not in known]
                if fresh:
                    conn.execute(
                        insert(hours_table),
                        [
                            {
                                "hour": h,
                                "status": FORGOTTEN,
                                "coverage": None,
                                "attempts": 0,
                                "last_error": None,
                                "metered_at": None,
                            }
                            for h in fresh
                        ],
                    )
            conn.execute(
                insert(forgotten_ranges_table).values(
                    range_start=hours[0],
                    range_end=hours[-1] + HOUR,
                    hours=len(given_up),
                    forgotten_by=forgotten_by,
                    forgotten_at=now,
                    reason=reason,
                )
            )
        return given_up

    # ---- reading -------------------------------------------------------------------

    def last_hour(self, statuses: tuple[str, ...]) -> datetime | None:
        """The newest hour with one of `statuses`, None when there is none."""
        with self.engine.connect() as conn:
            value = conn.execute(
                select(func.max(hours_table.c.hour)).where(hours_table.c.status.in_(statuses))
            ).scalar_one_or_none()
        return _utc(value) if value is not None else None

    def pending_detail(self) -> pd.DataFrame:
        """Every pending hour with its attempts and the reason of the last failure."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(hours_table.c.hour, hours_table.c.attempts, hours_table.c.last_error)
                .where(hours_table.c.status == PENDING)
                .order_by(hours_table.c.hour)
            )
            frame = pd.DataFrame(
                [tuple(r) for r in rows], columns=["hour", "attempts", "last_error"]
            )
        frame["hour"] = pd.to_datetime(frame["hour"], utc=True)
        return frame

    def forgotten_ranges(self) -> pd.DataFrame:
        """Every `forget`: range_start, range_end, hours, forgotten_by, forgotten_at, reason."""
        columns = [c.name for c in forgotten_ranges_table.columns]
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(forgotten_ranges_table).order_by(forgotten_ranges_table.c.id)
            )
            frame = pd.DataFrame([tuple(r) for r in rows], columns=columns)
        for column in ("range_start", "range_end", "forgotten_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame

    def node_coverage_frame(self, start: datetime, end: datetime) -> pd.DataFrame:
        return self._frame(node_coverage_table, NODE_COVERAGE_COLUMNS, start, end)

    def pending_hours(self) -> list[datetime]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(hours_table.c.hour)
                .where(hours_table.c.status == PENDING)
                .order_by(hours_table.c.hour)
            )
            return [r.hour for r in rows]

    def policy_records(self) -> list[tuple[int, datetime, str]]:
        """(version, applied_at, document) of every policy version the audit log
        recorded, oldest first; empty when the API never applied one here."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    policy_versions.c.version,
                    policy_versions.c.applied_at,
                    policy_versions.c.document,
                ).order_by(policy_versions.c.applied_at, policy_versions.c.version)
            )
            return [(int(r.version), r.applied_at, str(r.document)) for r in rows]

    def recorded_hours(self, hours: list[datetime]) -> set[datetime]:
        """Of `hours`, those the ledger holds as metered or pending: the cluster had
        nodes then (an hour is pending only when nodes existed before it)."""
        if not hours:
            return set()
        starts = [hour_start(h) for h in hours]
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(hours_table.c.hour).where(
                    hours_table.c.hour.in_(starts), hours_table.c.status.in_(("metered", "pending"))
                )
            )
            return {hour_start(r.hour) for r in rows}

    def earliest_metered_hour(self) -> datetime | None:
        """The first hour metered with data; None when there is none."""
        with self.engine.connect() as conn:
            first = conn.execute(
                select(func.min(hours_table.c.hour)).where(hours_table.c.status == "metered")
            ).scalar()
        return hour_start(first) if first is not None else None

    def latest_attempted_hour(self) -> datetime | None:
        """The latest hour ever attempted, whatever its status; None for a new ledger."""
        with self.engine.connect() as conn:
            latest = conn.execute(select(func.max(hours_table.c.hour))).scalar()
        return hour_start(latest) if latest is not None else None

    def hour_status(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Status rows of the hours in [start, end) that were ever attempted."""
        return self._frame(hours_table, HOURS_COLUMNS, start, end)

    def usage_frame(self, start: datetime, end: datetime) -> pd.DataFrame:
        return self._frame(usage_table, USAGE_COLUMNS, start, end)

    def capacity_frame(self, start: datetime, end: datetime) -> pd.DataFrame:
        return self._frame(capacity_table, CAPACITY_COLUMNS, start, end)

    def reclaim_lost_frame(self, start: datetime, end: datetime) -> pd.DataFrame:
        return self._frame(reclaim_lost_table, RECLAIM_LOST_COLUMNS, start, end)

    def metering_runs(self) -> pd.DataFrame:
        columns = [c.name for c in metering_runs_table.columns]
        with self.engine.connect() as conn:
            rows = conn.execute(select(metering_runs_table).order_by(metering_runs_table.c.id))
            frame = pd.DataFrame([tuple(r) for r in rows], columns=columns)
        for column in ("started_at", "finished_at", "range_start", "range_end"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame

    def _frame(
        self, table: Table, columns: list[str], start: datetime, end: datetime
    ) -> pd.DataFrame:
        start, end = _aware(start, "start"), _aware(end, "end")
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(table)
                .where(table.c.hour >= start, table.c.hour < end)
                .order_by(*table.primary_key.columns)
            )
            frame = pd.DataFrame([tuple(r) for r in rows], columns=columns)
        frame["hour"] = pd.to_datetime(frame["hour"], utc=True)
        if "metered_at" in frame:
            frame["metered_at"] = pd.to_datetime(frame["metered_at"], utc=True)
        for column in (
            "gpu_seconds",
            "utilization",
            "coverage",
            "gpu_seconds_available",
            "allocation",
            "capacity",
        ):
            if column in frame:
                frame[column] = frame[column].astype("float64")
        return frame


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise InputError(f"{name} {value.isoformat()} has no time zone; the ledger keeps UTC")
    return value.astimezone(UTC)


def _mark_pending(conn: Connection, hour: datetime, error: str) -> None:
    """`Ledger.mark_pending` in the transaction of `conn`."""
    existing = conn.execute(
        select(hours_table.c.status, hours_table.c.attempts).where(hours_table.c.hour == hour)
    ).first()
    if existing is None:
        conn.execute(
            insert(hours_table),
            [
                {
                    "hour": hour,
                    "status": PENDING,
                    "coverage": None,
                    "attempts": 1,
                    "last_error": error,
                    "metered_at": None,
                }
            ],
        )
    else:
        conn.execute(
            update(hours_table)
            .where(hours_table.c.hour == hour)
            .values(attempts=existing.attempts + 1, last_error=error)
        )


def _attempts(conn: Connection, hours: list[datetime]) -> dict[datetime, int]:
    """Attempts recorded so far for each of `hours` that has a row."""
    found = conn.execute(
        select(hours_table.c.hour, hours_table.c.attempts).where(hours_table.c.hour.in_(hours))
    )
    return {_utc(r.hour): int(r.attempts) for r in found}


@dataclass(frozen=True)
class HourWrite:
    """One hour's rows for `Ledger.replace_hours`."""

    hour: datetime
    usage: pd.DataFrame
    capacity: pd.DataFrame
    reclaim_lost: pd.DataFrame | None
    coverage: float
    node_coverage: pd.DataFrame | None = None
    status: str = METERED


@dataclass
class _HourRows:
    """The rows of several hours as dicts for the database, checked before any is
    written."""

    usage: list[dict[str, Any]] = field(default_factory=list)
    capacity: list[dict[str, Any]] = field(default_factory=list)
    lost: list[dict[str, Any]] = field(default_factory=list)
    node_coverage: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, writes: list[HourWrite]) -> _HourRows:
        for write in writes:
            if not 0.0 <= write.coverage <= 1.0:
                raise InputError(f"coverage {write.coverage} is outside 0..1")
            if write.status not in DONE:
                raise InputError(f"hour status {write.status!r} is not one of {DONE}")
        usage = _rows([(w.hour, w.usage) for w in writes], USAGE_COLUMNS, USAGE_DEFAULTS, "usage")
        unknown = {row["source"] for row in usage} - set(USAGE_SOURCES)
        if unknown:
            raise InputError(f"usage source {sorted(unknown)[0]!r} is not one of {USAGE_SOURCES}")
        return cls(
            usage=usage,
            capacity=_rows(
                [(w.hour, w.capacity) for w in writes], CAPACITY_COLUMNS, {}, "capacity"
            ),
            lost=_lost_rows(writes),
            node_coverage=_rows(
                [(w.hour, w.node_coverage) for w in writes if w.node_coverage is not None],
                NODE_COVERAGE_COLUMNS,
                {},
                "node_coverage",
            ),
        )


def _lost_rows(writes: list[HourWrite]) -> list[dict[str, Any]]:
    """Lost work per cause; without a `cause` column its cause was not recorded ("")."""
    lost = _rows(
        [(w.hour, w.reclaim_lost) for w in writes if w.reclaim_lost is not None],
        RECLAIM_LOST_COLUMNS,
        {"cause": ""},
        "reclaim_lost",
    )
    unknown = unknown_causes(row["cause"] for row in lost)
    if unknown:
        raise InputError(
            f"reclaim_lost cause {unknown[0]!r} is not one of {LOST_CAUSES} (or empty)"
        )
    return lost


def _rows(
    parts: list[tuple[datetime, pd.DataFrame]],
    columns: list[str],
    defaults: dict[str, Any],
    name: str,
) -> list[dict[str, Any]]:
    """The rows of each (hour, frame) as dicts for `columns`, every row forced onto its
    hour."""
    hours: list[datetime] = []
    frames: list[pd.DataFrame] = []
    for hour, frame in parts:
        hour = hour_start(hour)
        missing = [c for c in columns if c != "hour" and c not in frame and c not in defaults]
        if missing:
            raise InputError(f"{name} rows lack column(s) {', '.join(missing)}")
        if "hour" in frame and len(frame):
            stamped = pd.to_datetime(frame["hour"], utc=True)
            if (stamped != pd.Timestamp(hour)).any():
                raise InputError(f"{name} rows for {hour.isoformat()} include other hours")
        if len(frame):
            hours += [hour] * len(frame)
            frames.append(frame)
    # Column by column, all hours at once: per-value conversion costs more than the
    # database insert.
    values: dict[str, list[Any]] = {}
    for column in columns[1:]:
        values[column] = _column_values(frames, column, defaults.get(column))
    names = list(values)
    return [
        {"hour": hour, **dict(zip(names, row, strict=True))}
        for hour, row in zip(hours, zip(*values.values(), strict=True), strict=True)
    ]


def _column_values(frames: list[pd.DataFrame], column: str, default: Any) -> list[Any]:
    """`column` of every frame in turn as Python values (`default` where a frame lacks it)."""
    kinds = {str(f[column].dtype) if column in f else None for f in frames}
    if len(kinds) == 1 and None not in kinds:
        return _plain_list(pd.concat([f[column] for f in frames], ignore_index=True))
    out: list[Any] = []
    for frame in frames:
        if column in frame:
            out += _plain_list(frame[column])
        else:
            out += [_plain(default)] * len(frame)
    return out


def _plain_list(series: pd.Series) -> list[Any]:
    """A column as Python values; NaN/NA -> None (unknown, never zero)."""
    missing = series.isna().to_numpy()
    items = series.astype(object).tolist()
    if missing.any():
        return [None if m else _plain(v) for v, m in zip(items, missing, strict=True)]
    return [v.item() if hasattr(v, "item") else v for v in items]


def _plain(value: Any) -> Any:
    """numpy/pandas scalars -> Python; NaN/NA -> None (unknown, never zero)."""
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(value, "item"):
        return value.item()
    return value
