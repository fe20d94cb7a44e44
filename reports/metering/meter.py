"""Metering: closed hours from Prometheus into the usage ledger.

An hour [h, h+1h) is *closed* once `max_gap` has passed after its end (the look-ahead
that bridges missing scrapes needs those samples). Hours are fetched in chunks of
consecutive hours (one range query per expression, one point per hour and series, well
under Prometheus' 11,000 points per series; the live grid points a few hours per query;
pod attributes by one instant query per chunk, and then the Running samples of the pods
kube-state-metrics bills), turned into the rows of all the chunk's hours at once by
`reports.metering.rows.build_chunk`, and written with `Ledger.replace_hours`, one
transaction per chunk (each hour's rows replaced as a whole). Queries run a few at a
time, and the next chunk's while the current one is built and stored. Prometheus
unreachable, no series at all for an hour, or a figure that is no GPU count (NaN,
infinite, negative, absurd: `implausible`): the hour is marked pending with the reason,
and the next run retries it. Missing data is never zero.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from policies.model import Policy
from reports.costmodel.policy_history import PolicyHistory
from reports.ledger import HourWrite, Ledger, MeteringRun, hour_start, hours_between
from reports.ledger.schema import DONE, EMPTY
from reports.metering import grid, promql
from reports.metering.prom_source import PrometheusUnavailable, PromSource, concat_answers
from reports.metering.remote_read import RemoteReadUnsupported
from reports.metering.rows import (
    HOURLY,
    ChunkInputs,
    HourRows,
    LostKey,
    build_chunk,
    counter_increase,
    kube_state_uids,
)

log = logging.getLogger(__name__)

HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class MeterConfig:
    interval: float = 30.0
    """Scrape interval of the metered series, seconds (must divide an hour)."""
    max_gap: float = 300.0
    """Missing scrapes up to this long are bridged when the series resumes."""
    chunk_hours: int = 24
    """Consecutive hours fetched per query (bounds memory and the points per series)."""
    parallel_queries: int = 4
    """Queries of one chunk in flight at once."""
    live_hours: int = 4
    """Hours per query of the pods' live grid points (`MeteringQueries.live_points`).
    Its subqueries walk every grid point of every series the query selects, and over a
    day most pods' series are empty at most points: a few hours at a time cost
    Prometheus a tenth to a sixth less CPU than a day (measured on 1,000 GPUs)."""
    remote_read: bool = True
    """Work out the pods' live points from the allocation gauge's raw samples, read
    with Prometheus' remote-read API (`reports.metering.grid`), instead of asking PromQL
    subqueries: the same figures for less CPU. A server without that API (another
    PromQL implementation) gets the subqueries."""


@dataclass(frozen=True)
class HourOutcome:
    hour: datetime
    status: str  # "metered" | "empty" | "pending"
    coverage: float | None
    gpu_seconds: float
    pods: int
    error: str | None = None


@dataclass
class RunSummary:
    started_at: datetime
    finished_at: datetime
    range_start: datetime
    range_end: datetime
    outcomes: list[HourOutcome] = field(default_factory=list)
    skipped_open: list[datetime] = field(default_factory=list)

    @property
    def hours_ok(self) -> int:
        return sum(o.status in DONE for o in self.outcomes)

    @property
    def hours_pending(self) -> int:
        return sum(o.status == "pending" for o in self.outcomes)

    @property
    def mean_coverage(self) -> float | None:
        values = [o.coverage for o in self.outcomes if o.coverage is not None]
        return sum(values) / len(values) if values else None

    @property
    def first_error(self) -> str | None:
        return next((o.error for o in self.outcomes if o.error), None)


Progress = Callable[[HourOutcome], None]


@dataclass
class ChunkAnswers:
    hourly: dict[str, pd.DataFrame]
    """Per-hour figures: label columns, `hour`, `value`."""
    constant: dict[str, pd.DataFrame]
    """Pod attributes over the whole chunk."""
    reclaim_lost: dict[datetime, dict[LostKey, float]]
    fairpool_uids_by_hour: dict[datetime, set[str]]
    """The pods fairpool reported around each hour (`MeteringQueries.around_each_hour`):
    kube-state-metrics bills a pod in the others. Read around the whole chunk instead,
    a pod fairpool reported in one hour of a day was billed in none of the others,
    which the same hour metered alone billed from kube-state-metrics."""
    kube_state_uids_by_hour: dict[datetime, set[str]] | None = None
    """The pods whose GPU request kube-state-metrics reported around each hour: only they
    are billed from it in that hour (`ChunkInputs.kube_state_uids_by_hour`)."""


class Meter:
    """Meters hours from `source` into `ledger` under `policy`."""

    def __init__(
        self,
        source: PromSource,
        ledger: Ledger,
        policy: Policy,
        config: MeterConfig | None = None,
    ) -> None:
        self.source = source
        self.ledger = ledger
        self.policy = policy
        self.config = config or MeterConfig()
        self.queries = promql.MeteringQueries(self.config.interval, self.config.max_gap)
        self._remote_read_works: bool | None = None

    # ---- public --------------------------------------------------------------------

    def last_closed_hour(self, now: datetime) -> datetime:
        settled = now.astimezone(UTC) - timedelta(seconds=self.config.max_gap) - HOUR
        return settled.replace(minute=0, second=0, microsecond=0)

    def meter_range(
        self,
        start: datetime,
        end: datetime,
        *,
        now: datetime | None = None,
        progress: Progress | None = None,
    ) -> RunSummary:
        """Meter every closed hour in [start, end) (bounds on the hour, UTC)."""
        started = datetime.now(UTC)
        now = now or started
        last = self.last_closed_hour(now)
        hours = hours_between(start, end)
        closed = [h for h in hours if h <= last]
        summary = RunSummary(started, started, hour_start(start), hour_start(end))
        summary.skipped_open = [h for h in hours if h > last]
        summary.outcomes = self.meter_hours(closed, progress)
        return self._record(summary)

    def meter_due(
        self, now: datetime | None = None, progress: Progress | None = None
    ) -> RunSummary:
        """The hourly job: the last closed hour, every pending hour, and every hour since
        the latest one the ledger knows (a run that could not even record its hour as
        pending, the database being down, or no run at all, leaves no trace of it)."""
        started = datetime.now(UTC)
        now = now or started
        last = self.last_closed_hour(now)
        latest = self.ledger.latest_attempted_hour()
        missed = hours_between(latest + HOUR, last) if latest is not None else []
        pending = [h for h in self.ledger.pending_hours() if h <= last]
        hours = sorted({last, *pending, *missed})
        summary = RunSummary(started, started, hours[0], last + HOUR)
        summary.outcomes = self.meter_hours(hours, progress)
        return self._record(summary)

    def meter_hours(
        self, hours: Iterable[datetime], progress: Progress | None = None
    ) -> list[HourOutcome]:
        outcomes: list[HourOutcome] = []
        unreachable: str | None = None
        chunks = _chunks(sorted({hour_start(h) for h in hours}), self.config.chunk_hours)
        history = self.history()
        # Prometheus answers the next chunk while this process builds and stores the
        # current one: the two use different cores.
        with ThreadPoolExecutor(max_workers=1) as prefetch:
            ahead: Future[ChunkAnswers] | None = (
                prefetch.submit(self.query, chunks[0]) if chunks else None
            )
            for index, chunk in enumerate(chunks):
                current, ahead = ahead, None
                if unreachable is None and index + 1 < len(chunks):
                    ahead = prefetch.submit(self.query, chunks[index + 1])
                try:
                    if unreachable is not None or current is None:
                        # Once Prometheus cannot be reached, the rest of the run waits
                        # for the next one instead of timing out chunk after chunk.
                        raise PrometheusUnavailable(unreachable or "", unreachable=True)
                    rows = self.build(chunk, current.result(), history)
                except PrometheusUnavailable as exc:
                    if exc.unreachable:
                        unreachable = str(exc)
                    error = f"prometheus unavailable: {exc}"
                    log.warning("hours %s..%s pending: %s", chunk[0], chunk[-1], error)
                    for hour in chunk:
                        self.ledger.mark_pending(hour, error)
                        outcome = HourOutcome(hour, "pending", None, 0.0, 0, error)
                        outcomes.append(outcome)
                        if progress:
                            progress(outcome)
                    continue
                empty = self._before_any_node([h for h in chunk if not rows[h].has_data])
                for outcome in self._store(chunk, rows, empty):
                    outcomes.append(outcome)
                    if progress:
                        progress(outcome)
        return outcomes

    def fetch(self, chunk: list[datetime]) -> dict[datetime, HourRows]:
        """Query Prometheus for the consecutive hours in `chunk` and build their rows."""
        return self.build(chunk, self.query(chunk), self.history())

    def query(self, chunk: list[datetime]) -> ChunkAnswers:
        """Every answer Prometheus gives about the consecutive hours in `chunk`."""
        if self.config.remote_read and self._remote_read_works is not False:
            try:
                answers = self._query(chunk, raw_samples=True)
            except RemoteReadUnsupported as exc:
                log.warning("no remote-read API (%s): the live points come from PromQL", exc)
                self._remote_read_works = False
            else:
                self._remote_read_works = True
                return answers
        return self._query(chunk, raw_samples=False)

    def _query(self, chunk: list[datetime], raw_samples: bool) -> ChunkAnswers:
        """The chunk's answers; with `raw_samples`, the pods' live points and samples
        present come from the allocation gauge's raw samples (`reports.metering.grid`)
        instead of PromQL."""
        q = self.queries
        first, last = chunk[0], chunk[-1]
        fp, pod_by = promql.FAIRPOOL_LABELS, promql.POD_LABELS

        queries = {
            "fairpool_mean": q.mean(promql.FAIRPOOL_ALLOCATION, fp),
            "fairpool_present": q.present(promql.FAIRPOOL_ALLOCATION, fp),
            "capacity_mean": q.mean(promql.KSM_ALLOCATABLE, ("node",)),
            "capacity_live": q.live_points(promql.KSM_ALLOCATABLE, ("node",)),
            "capacity_present": q.present(promql.KSM_ALLOCATABLE, ("node",)),
            "capacity_not_ready": q.zero_points(promql.KSM_READY, ("node",)),
            "dcgm_engine_active": q.dcgm_mean(promql.DCGM_ENGINE_ACTIVE),
            "dcgm_gpu_util": q.dcgm_mean(promql.DCGM_GPU_UTIL),
            "dcgm_engine_count": q.dcgm_count(promql.DCGM_ENGINE_ACTIVE),
            "dcgm_util_count": q.dcgm_count(promql.DCGM_GPU_UTIL),
            # A node's owner or GPU model label as it was around each hour (a node moved
            # to another owner mid-day), not around the whole chunk.
            "node_labels_by_hour": q.around_each_hour(
                promql.KSM_NODE_LABELS, promql.NODE_LABEL_KEYS
            ),
        }
        # Pods come and go: their live points a few hours at a time (`live_hours`). Their
        # gaps longer than max_gap too: the raw samples name them on the other path.
        live = {
            "fairpool_live": q.live_points(promql.FAIRPOOL_ALLOCATION, fp),
            "fairpool_between": q.between_points(promql.FAIRPOOL_ALLOCATION, fp),
        }
        span = (last + HOUR - first).total_seconds()
        # A pod's attributes are constant: read once per chunk, not per hour.
        attributes = {
            "ksm_requests": q.pod_gpu_requests(span),
            "ksm_start": q.around(promql.KSM_START, pod_by, span),
            "ksm_completion": q.around(promql.KSM_COMPLETION, pod_by, span),
            "ksm_info": q.around(promql.KSM_POD_INFO, (*pod_by, "node"), span),
        }
        if raw_samples:
            del queries["fairpool_present"]
            live = {}
        # Prometheus evaluates concurrent queries on all its cores; the answers are small.
        pool = ThreadPoolExecutor(max_workers=self.config.parallel_queries)
        try:
            # First in line: the samples' answers are the longest to work out.
            from_samples = pool.submit(self._grid_answers, chunk) if raw_samples else None
            # The attributes first: they decide whose phase series are read.
            chunk_futures = {
                name: pool.submit(self.source.instant, query, last + HOUR)
                for name, query in attributes.items()
            }
            # Whose pods each source saw around each hour: kube-state-metrics bills a pod
            # in an hour it saw it and fairpool did not (`ChunkInputs`).
            seen_futures = [
                pool.submit(
                    self.source.hourly,
                    q.around_each_hour(selector, ("uid",), "present_over_time"),
                    first,
                    last,
                )
                for selector in (promql.FAIRPOOL_ALLOCATION, promql.KSM_REQUESTS)
            ]
            parts = _chunks(chunk, self.config.live_hours)
            live_futures = {
                name: [pool.submit(self.source.hourly, query, p[0], p[-1]) for p in parts]
                for name, query in live.items()
            }
            futures = {
                name: pool.submit(self.source.hourly, query, first, last)
                for name, query in queries.items()
            }
            constant = {name: future.result() for name, future in chunk_futures.items()}
            reported, seen = (_uids_by_hour(f.result(), chunk) for f in seen_futures)
            running = {
                name: pool.submit(self.source.hourly, query, first, last)
                for name, query in self._running_queries(constant, reported).items()
            }
            frames = {name: future.result() for name, future in futures.items()}
            if from_samples is not None:
                computed = from_samples.result()
                frames |= {"fairpool_live": computed.live, "fairpool_present": computed.present}
            frames |= {
                name: concat_answers([f.result() for f in fs]) for name, fs in live_futures.items()
            }
            frames |= {name: future.result() for name, future in running.items()}
        finally:
            # On the first failure the queries not yet sent are dropped, not retried.
            pool.shutdown(wait=True, cancel_futures=True)
        if "fairpool_between" in frames:
            gaps = gap_points(frames.pop("fairpool_between"), frames["fairpool_live"])
            for line in describe_gap_points(gaps, self.config.interval, self.config.max_gap):
                log.warning("%s", line)
        counters = self.source.raw(
            q.counter_samples(promql.RECLAIM_LOST, span),
            last + HOUR - timedelta(milliseconds=1),
        )
        before = self.source.instant(
            q.counter_before(promql.RECLAIM_LOST),
            first - timedelta(seconds=self.config.max_gap, milliseconds=1),
        )
        return ChunkAnswers(
            frames, constant, _reclaim_lost(counters, chunk, _last_values(before)), reported, seen
        )

    def _grid_answers(self, chunk: list[datetime]) -> grid.GridAnswers:
        """The pods' live points and samples present from the allocation gauge's raw
        samples (`reports.metering.grid`)."""
        try:
            samples = self.source.samples(
                promql.FAIRPOOL_ALLOCATION, *grid.read_span(chunk, self.config.max_gap)
            )
        except PrometheusUnavailable as exc:
            # The log and `fairpool meter` name the failure with the hours it holds up.
            raise PrometheusUnavailable(
                f"{exc} (reading the samples of the hours {_hours_named(chunk)})",
                exc.unreachable,
            ) from exc
        c = self.config
        for gap in grid.gaps(samples, chunk, c.max_gap, promql.FAIRPOOL_LABELS):
            log.warning("%s", describe_gap(gap, c.interval, c.max_gap))
        return grid.grid_answers(
            samples, chunk, c.interval, c.max_gap, promql.FAIRPOOL_LABELS, c.live_hours
        )

    def _running_queries(
        self, constant: dict[str, pd.DataFrame], reported: dict[datetime, set[str]]
    ) -> dict[str, str]:
        """The Running samples of the pods kube-state-metrics bills (those fairpool did
        not report in some hour): the phase series of every other pod would be read for
        nothing."""
        every_hour = set.intersection(*reported.values()) if reported else set()
        uids = kube_state_uids(constant["ksm_requests"], every_hour)
        if not uids:
            return {}
        selector = _phase_of(uids)
        return {
            "ksm_running_sum": self.queries.sample_sum(selector, promql.POD_LABELS),
            "ksm_running_present": self.queries.present(selector, promql.POD_LABELS),
        }

    def history(self) -> PolicyHistory:
        """The policy versions recorded in the ledger, else the meter's policy alone."""
        recorded = PolicyHistory.from_records(self.ledger.policy_records())
        return recorded or PolicyHistory.only(self.policy)

    def build(
        self, chunk: list[datetime], answers: ChunkAnswers, history: PolicyHistory | None = None
    ) -> dict[datetime, HourRows]:
        """Ledger rows of each hour in `chunk` from Prometheus' answers (no I/O), built for
        the whole chunk at once; each hour's members and version are those of the policy
        version in force then."""
        known = history or PolicyHistory.only(self.policy)

        def in_force(hour: datetime) -> tuple[Callable[[str], str | None], int]:
            version = known.at(hour)
            return version.member_for_namespace, version.version

        constant = answers.constant
        inputs = ChunkInputs(
            hours=chunk,
            interval=self.config.interval,
            ksm_requests=constant["ksm_requests"],
            ksm_start=constant["ksm_start"],
            ksm_completion=constant["ksm_completion"],
            ksm_info=constant["ksm_info"],
            reclaim_lost=answers.reclaim_lost,
            fairpool_uids_by_hour=answers.fairpool_uids_by_hour,
            kube_state_uids_by_hour=answers.kube_state_uids_by_hour,
            node_labels_by_hour=answers.hourly.get("node_labels_by_hour", _EMPTY),
            **{name: answers.hourly.get(name, _EMPTY) for name in HOURLY},
        )
        return build_chunk(inputs, in_force)

    # ---- internals -----------------------------------------------------------------

    def _before_any_node(self, hours: list[datetime]) -> set[datetime]:
        """The `hours` (without any data) that end before Prometheus has any node series:
        the cluster had no nodes yet, so they are empty, not missing. Once nodes exist,
        an hour without data is missing (scrapes failed or lag) and stays pending.

        Prometheus forgets too (its retention): an hour the ledger holds as metered or
        pending, or one after the first hour it metered, had nodes, whatever Prometheus
        holds now. Such an hour is never empty: an empty write replaces the hour's rows,
        and re-metering a range older than the retention used to delete its usage and
        mark it complete, and a pending hour retried past the retention turned empty,
        no longer flagged missing."""
        if not hours:
            return set()  # every hour of the chunk has data: no ledger query
        recorded = self.ledger.recorded_hours(hours)
        first = self.ledger.earliest_metered_hour()
        empty: set[datetime] = set()
        for hour in sorted(hours):
            if hour in recorded or (first is not None and hour >= first):
                break
            # A millisecond short of the next hour: a node born at 08:00 exists in 08:00.
            end = hour + HOUR - timedelta(milliseconds=1)
            try:
                if self.source.any_series_before(list(promql.NODE_SERIES), end):
                    break
            except PrometheusUnavailable as exc:
                # Not knowing is not empty: the hour stays pending and is retried.
                log.warning("hour %s: cannot tell whether nodes existed: %s", hour, exc)
                break
            empty.add(hour)
        return empty

    def _store(
        self, chunk: list[datetime], rows: dict[datetime, HourRows], empty: set[datetime]
    ) -> list[HourOutcome]:
        """Write the chunk's hours, those with rows in one transaction; an hour without
        data (nodes existed before it) is marked pending."""
        writes: list[HourWrite] = []
        outcomes: list[HourOutcome] = []
        pending: list[tuple[datetime, str]] = []
        for hour in chunk:
            built = rows[hour]
            if hour in empty:
                writes.append(
                    HourWrite(
                        hour, built.usage, built.capacity, built.reclaim_lost, 1.0, status=EMPTY
                    )
                )
                outcomes.append(HourOutcome(hour, EMPTY, None, 0.0, 0))
            elif not built.has_data:
                error = "no series in Prometheus for this hour (nodes existed before it)"
                pending.append((hour, error))
                outcomes.append(HourOutcome(hour, "pending", None, 0.0, 0, error))
            elif (absurd := implausible(built)) is not None:
                # Stored, one infinite or absurd value stopped every report of the month
                # (money cannot hold it), and a NaN one was stored as 0 with full coverage;
                # kept pending, the month says the hour is missing.
                log.warning("hour %s: %s", hour.isoformat(), absurd)
                pending.append((hour, absurd))
                outcomes.append(HourOutcome(hour, "pending", None, 0.0, 0, absurd))
            else:
                writes.append(
                    HourWrite(
                        hour,
                        built.usage,
                        built.capacity,
                        built.reclaim_lost,
                        built.coverage,
                        built.node_coverage,
                    )
                )
                outcomes.append(
                    HourOutcome(
                        hour,
                        "metered",
                        built.coverage,
                        float(built.usage["gpu_seconds"].sum()) if len(built.usage) else 0.0,
                        len(built.usage),
                    )
                )
        # One transaction: a later hour marked pending first moved the latest hour
        # attempted past the chunk's, and when the rows' write then failed the hourly job
        # never tried them again; marked after the rows, a run stopped in between left an
        # hour without data unmarked before metered ones, never retried either.
        self.ledger.replace_hours(writes, pending)
        return outcomes

    def _record(self, summary: RunSummary) -> RunSummary:
        summary.finished_at = datetime.now(UTC)
        self.ledger.record_run(
            MeteringRun(
                started_at=summary.started_at,
                finished_at=summary.finished_at,
                range_start=summary.range_start,
                range_end=summary.range_end,
                hours_ok=summary.hours_ok,
                hours_pending=summary.hours_pending,
                mean_coverage=summary.mean_coverage,
                error=summary.first_error,
            )
        )
        return summary


_EMPTY = pd.DataFrame({"value": pd.Series([], dtype=float)})
NAN = float("nan")


# Kubernetes uids are UUIDs; anything else is read unfiltered rather than escaped.
_PLAIN_UID = re.compile(r"[A-Za-z0-9._-]+")
_MAX_UIDS_IN_SELECTOR = 2000


def _phase_of(uids: set[str]) -> str:
    """The Running phase series of the pods `uids` (all pods when the list is too long to
    be a selector or a uid is not plain text)."""
    if len(uids) > _MAX_UIDS_IN_SELECTOR or not all(_PLAIN_UID.fullmatch(u) for u in uids):
        return promql.KSM_RUNNING
    # A raw (backquoted) PromQL string: the regex's escapes reach it unchanged.
    alternatives = "|".join(u.replace(".", "\\.") for u in sorted(uids))
    return f'kube_pod_status_phase{{phase="Running",uid=~`{alternatives}`}}'


def describe_gap(gap: grid.Gap, interval: float, max_gap: float) -> str:
    """One line naming the pod, the gap and what of it is not billed."""

    def at(value: int) -> str:
        return datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")

    unbilled = (gap.next_ms - gap.last_ms) / 1000 - interval
    return (
        f"pod {gap.namespace}/{gap.pod} (uid {gap.uid or '?'}): no "
        f"{promql.FAIRPOOL_ALLOCATION} sample from {at(gap.last_ms)} to {at(gap.next_ms)} "
        f"UTC, longer than max_gap ({max_gap:g} s): {unbilled:g} s of it are not billed "
        "(the pod is billed one scrape interval per sample, and a gap bridged only up to "
        "max_gap)"
    )


def gap_points(between: pd.DataFrame, live: pd.DataFrame) -> pd.DataFrame:
    """The pods' grid points per hour between two samples (`MeteringQueries.between_points`)
    that are not live: label columns, `hour`, `value` (only those with some). Never more
    than the gaps' unbilled points: a pod's last point before it ends is live and has no
    sample after it."""
    if not len(between) or "hour" not in between:
        return between.iloc[0:0]
    keys = [c for c in (*promql.FAIRPOOL_LABELS, "hour") if c in between or c in live]
    left = between.reindex(columns=[*keys, "value"])
    right = live.reindex(columns=[*keys, "value"]).rename(columns={"value": "live"})
    for frame in (left, right):
        labels = [k for k in keys if k != "hour"]
        frame[labels] = frame[labels].fillna("").astype(str)
    merged = left.merge(right, on=keys, how="left")
    merged["value"] = merged["value"] - merged.pop("live").fillna(0.0)
    return merged[merged["value"] > 0].reset_index(drop=True)


def describe_gap_points(frame: pd.DataFrame, interval: float, max_gap: float) -> list[str]:
    """One line per pod and hour of `gap_points`: the PromQL path's `describe_gap`, which
    knows the unbilled grid points of each hour, not the samples around them."""
    if not len(frame) or "hour" not in frame:
        return []
    lines = []
    for row in frame.sort_values("hour", kind="stable").to_dict("records"):
        labels = {k: v for k, v in row.items() if isinstance(v, str) and v}
        namespace = labels.get("exported_namespace") or labels.get("namespace", "")
        pod = labels.get("exported_pod") or labels.get("pod", "")
        hour = pd.Timestamp(row["hour"])
        unbilled = float(row["value"]) * interval
        lines.append(
            f"pod {namespace}/{pod} (uid {labels.get('uid', '?')}): at least {unbilled:g} s of "
            f"the hour {hour:%Y-%m-%d %H:%M} UTC fall in gaps longer than max_gap ({max_gap:g} s) "
            f"between its {promql.FAIRPOOL_ALLOCATION} samples and are not billed (the "
            "pod is billed one scrape interval per sample, and a gap bridged only up to "
            "max_gap)"
        )
    return lines


def _hours_named(chunk: list[datetime]) -> str:
    """`chunk`'s first and last hour, e.g. 2026-10-05 08:00..13:00 UTC."""
    first, last = chunk[0], chunk[-1]
    tail = f"{last:%H:%M}" if last.date() == first.date() else f"{last:%Y-%m-%d %H:%M}"
    return f"{first:%Y-%m-%d %H:%M}..{tail} UTC"


def _chunks(hours: list[datetime], size: int) -> list[list[datetime]]:
    """Runs of consecutive hours, at most `size` long."""
    chunks: list[list[datetime]] = []
    for hour in hours:
        if chunks and len(chunks[-1]) < size and chunks[-1][-1] + HOUR == hour:
            chunks[-1].append(hour)
        else:
            chunks.append([hour])
    return chunks


def _uids_by_hour(frame: pd.DataFrame, chunk: list[datetime]) -> dict[datetime, set[str]]:
    """An hourly answer's `uid`s per hour of `chunk` (every hour present, maybe empty)."""
    out: dict[datetime, set[str]] = {h: set() for h in chunk}
    if "uid" in frame and len(frame):
        for stamp, uid in zip(frame["hour"], frame["uid"], strict=True):
            hour = pd.Timestamp(stamp).to_pydatetime()
            if isinstance(uid, str) and hour in out:
                out[hour].add(uid)
    return out


def _last_values(frame: pd.DataFrame) -> dict[frozenset[tuple[str, str]], float]:
    """An instant query's answer by each series' labels (without its name)."""
    out: dict[frozenset[tuple[str, str]], float] = {}
    for row in frame.to_dict("records"):
        value = row.pop("value")
        row.pop("__name__", None)
        # A label a series lacks is NaN in its row.
        out[frozenset((k, v) for k, v in row.items() if isinstance(v, str))] = float(value)
    return out


def _reclaim_lost(
    series: list[tuple[dict[str, str], list[tuple[float, float]]]],
    chunk: list[datetime],
    before: Mapping[frozenset[tuple[str, str]], float] | None = None,
) -> dict[datetime, dict[LostKey, float]]:
    """GPU-seconds lost to reclaim per hour and (member, gpu_model, cause) (a counter
    written before it had a cause has the cause ""). Series of one exporter (its `pod`,
    else its `instance`: the same process scraped twice) collapse with max; those of
    different exporters add up: only the leader counts a reclaim, so in an hour with a
    leader change each replica counted its own part (they were collapsed with max, and
    the smaller part was lost). `before`: each series' last value before the samples
    (`MeteringQueries.counter_before`), so that a series seen again after a scrape gap
    longer than `max_gap` counts from it, not from zero: its whole total was counted
    in the first hour after the gap. An increase `counter_increase` cannot know (NaN) is
    kept as NaN, whatever other exporters add: `build_chunk` names the series, and the
    hour stays pending (dropped with the hours that lost nothing, its loss vanished)."""
    per_exporter: dict[datetime, dict[tuple[LostKey, str], float]] = {h: {} for h in chunk}
    baseline = chunk[0].timestamp()
    for labels, samples in series:
        key = (labels.get("member", ""), labels.get("gpu_model", ""), labels.get("cause", ""))
        exporter = labels.get("pod") or labels.get("instance", "")
        identity = frozenset((k, v) for k, v in labels.items() if k != "__name__")
        previous = (before or {}).get(identity)
        for hour, value in counter_increase(samples, chunk, baseline, previous).items():
            # NaN: the increase is unknown (kept, for the hour to stay pending), not none.
            if value > 0 or math.isnan(value):
                seen = per_exporter[hour]
                # The same counter scraped twice: a number either scrape gives is it.
                seen[(key, exporter)] = float(np.fmax(seen.get((key, exporter), NAN), value))
    out: dict[datetime, dict[LostKey, float]] = {h: {} for h in chunk}
    for hour, seen in per_exporter.items():
        for (key, _), value in seen.items():
            out[hour][key] = out[hour].get(key, 0.0) + value
    return out


MAX_GPUS_PER_ROW = 1024
"""GPUs one pod, or one node, can hold: far beyond any machine, far below what breaks the
bill. A value past it came from a broken exporter, not from hardware."""


def implausible(built: HourRows) -> str | None:
    """Why an hour's rows cannot be GPU-seconds (a series Prometheus answered NaN for, a
    value that is infinite, NaN, negative or beyond `MAX_GPUS_PER_ROW` GPUs for the
    whole hour), or None."""
    if built.not_a_number:
        first, *others = built.not_a_number
        more = f" (and {len(others)} more series)" if others else ""
        return (
            f"Prometheus returned NaN for {first}{more}: one NaN sample makes the series' "
            "figure for the hour (its mean, its sum, its last value) NaN, which is no GPU "
            "count; the hour stays pending"
        )
    bound = 3600.0 * MAX_GPUS_PER_ROW
    for frame, column, what in (
        (built.usage, "gpu_seconds", "a pod's allocation"),
        (built.capacity, "gpu_seconds_available", "a node's allocatable GPUs"),
    ):
        if not len(frame) or column not in frame:
            continue
        values = frame[column].to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (values < 0) | (values > bound)
        if bad.any():
            row = frame[bad].iloc[0]
            who = row.get("pod") or row.get("node") or "?"
            return (
                f"{what} from Prometheus is not a GPU count ({who}: {float(values[bad][0]):g} "
                f"GPU-seconds in the hour); the hour stays pending"
            )
    return None
