"""The API's own Prometheus series, read at scrape time from the token table and the
guard: token file reloads, calls refused by the concurrency limits, incidents, restarts
of the API front."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scheduler.api.auth import TokenTable
from scheduler.api.guard import Guard


class ApiCollector(Collector):
    def __init__(
        self,
        tokens: TokenTable,
        guard: Guard,
        front_restarts: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._tokens = tokens
        self._guard = guard
        self._front_restarts = front_restarts

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        reloads = CounterMetricFamily(
            "fairpool_api_token_reloads",
            "Reloads of the API's token file after a change, by result (ok, error)",
            labels=["result"],
        )
        for result in ("ok", "error"):
            reloads.add_metric([result], float(self._tokens.reloads[result]))
        yield reloads
        healthy = GaugeMetricFamily(
            "fairpool_api_token_file_valid",
            "1 when the token file in force is the one on disk; 0 after a failed reload",
        )
        healthy.add_metric([], 0.0 if self._tokens.failure else 1.0)
        yield healthy
        refused = CounterMetricFamily(
            "fairpool_api_calls_refused",
            "Calls refused with RESOURCE_EXHAUSTED by the concurrency limits, per method",
            labels=["method"],
        )
        for method, count in sorted(self._guard.refused.items()):
            refused.add_metric([method], float(count))
        yield refused
        in_progress = GaugeMetricFamily(
            "fairpool_api_calls_in_progress",
            "Calls in progress per bounded kind (policy documents, simulations, watchers, "
            "report builds)",
            labels=["kind"],
        )
        for kind, slots in self._guard.slots.items():
            in_progress.add_metric([kind], float(slots.in_use))
        yield in_progress
        incidents = CounterMetricFamily(
            "fairpool_api_internal_errors",
            "Unexpected exceptions answered with INTERNAL and an incident id",
        )
        incidents.add_metric([], float(self._guard.incidents))
        yield incidents
        restarts = self._front_restarts()
        if restarts is not None:
            front = CounterMetricFamily(
                "fairpool_api_front_restarts",
                "API front processes started again after the one before ended",
            )
            front.add_metric([], float(restarts))
            yield front
