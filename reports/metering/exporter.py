"""The meter's own Prometheus metrics, served by `fairpool meter --watch --metrics-port`.

Names (a Grafana dashboard reads them; do not rename):

- ``fairpool_meter_last_metered_hour_timestamp_seconds`` (gauge): start of the newest
  hour the ledger holds as metered (or empty), Unix seconds.
- ``fairpool_meter_pending_hours`` (gauge): hours the hourly job still retries.
- ``fairpool_meter_coverage_ratio{source}`` (gauge, source = allocation | capacity |
  utilization): mean coverage of that source over the nodes, in the 24 hours ending
  with the last metered hour (`reports.metering.coverage` defines coverage). Absent
  while no such hour has expected samples of that source.
- ``fairpool_meter_runs_total{result}`` (counter, result = ok | pending | error): metering
  runs, by outcome: every hour metered, some hours left pending, or the run failed.

``/healthz`` on the same port answers 200 while the last run did not fail, else 503.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app

from policies.errors import listen_error
from policies.http import wsgi_server
from reports.ledger import Ledger
from reports.ledger.schema import DONE
from reports.metering.coverage import NODE_COVERAGE_OUT, source_coverage
from reports.metering.meter import RunSummary

SOURCES = tuple(NODE_COVERAGE_OUT[1:])
RESULTS = ("ok", "pending", "error")


class MeterMetrics:
    """The meter's metrics in their own registry (nothing global)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.last_metered_hour = Gauge(
            "fairpool_meter_last_metered_hour_timestamp_seconds",
            "Start of the newest metered hour in the ledger (Unix seconds).",
            registry=self.registry,
        )
        self.pending_hours = Gauge(
            "fairpool_meter_pending_hours",
            "Hours not metered yet that the hourly run retries.",
            registry=self.registry,
        )
        self.coverage = Gauge(
            "fairpool_meter_coverage_ratio",
            "Share of expected samples found over the last metered day, per source.",
            ["source"],
            registry=self.registry,
        )
        self.runs = Counter(
            "fairpool_meter_runs",
            "Metering runs by result (ok, pending, error).",
            ["result"],
            registry=self.registry,
        )
        for result in RESULTS:
            self.runs.labels(result=result)
        self.healthy = True

    def observe(self, ledger: Ledger, summary: RunSummary | None) -> None:
        """After a run: the ledger's state, then its result (a failed run is None). In
        that order, a scrape that sees the run counted sees the gauges it left; the run
        is counted even when the ledger cannot be read."""
        try:
            self.refresh(ledger)
        finally:
            if summary is None:
                self.runs.labels(result="error").inc()
                self.healthy = False
            else:
                self.runs.labels(result="pending" if summary.hours_pending else "ok").inc()
                self.healthy = True

    def refresh(self, ledger: Ledger) -> None:
        """The gauges from what the ledger holds now."""
        self.pending_hours.set(len(ledger.pending_hours()))
        last = ledger.last_hour(DONE)
        if last is None:
            return
        self.last_metered_hour.set(last.timestamp())
        day = ledger.node_coverage_frame(last - timedelta(hours=23), last + timedelta(hours=1))
        for source, value in source_coverage(day).items():
            if value is not None:
                self.coverage.labels(source=source).set(value)
            elif _has(self.coverage, source):
                self.coverage.remove(source)


def _has(gauge: Gauge, source: str) -> bool:
    return any(
        sample.labels.get("source") == source
        for metric in gauge.collect()
        for sample in metric.samples
    )


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the meter's log."""


def serve(metrics: MeterMetrics, port: int, address: str = "127.0.0.1") -> WSGIServer:
    """Serve `/metrics`, `/livez` (the process answers) and `/healthz` (the last run
    worked) on `address:port` in a daemon thread; returns the server (its
    `server_address` has the port when 0 was asked)."""
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/livez":
            # The process answers: what a liveness probe asks. /healthz says whether the
            # last run worked; a restart never fixes Prometheus or the ledger being
            # down, and a meter restarted over day 1 at 06:00 used to skip the month's
            # report (the catch-up at start now writes it).
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        if environ.get("PATH_INFO") == "/healthz":
            ok = metrics.healthy
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "text/plain; charset=utf-8")],
            )
            return [b"ok\n" if ok else b"last metering run failed\n"]
        return metrics_app(environ, start_response)  # type: ignore[no-any-return]

    try:
        server = wsgi_server(address, port, app, _Quiet)
    except OSError as exc:
        raise listen_error(f"{address}:{port}", exc) from exc
    threading.Thread(target=server.serve_forever, name="meter-metrics", daemon=True).start()
    return server
