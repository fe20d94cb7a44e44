"""Metering the known Prometheus scenario into a PostgreSQL ledger: the scenario's own
tests (tests/integration/test_meter_prometheus.py) on a PostgreSQL `metered` ledger, and
the same rows as a SQLite ledger metered from the same Prometheus."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import pytest

from policies.model import Policy
from reports.ledger import Ledger
from reports.metering.meter import Meter
from reports.metering.prom_source import PromSource
from tests.integration.test_meter_prometheus import (
    END,
    START,
    metering_scenario,
    metering_tsdb,
    policy,
    prometheus,
    test_counter_reset_counts_from_zero,
    test_exact_gpu_seconds_per_pod_and_hour,
    test_labels_member_owner_model_and_sources,
    test_missing_scrapes_lower_coverage_but_not_usage,
    test_pod_shorter_than_a_scrape_is_billed_its_real_duration,
    test_rerun_is_idempotent,
    test_two_kube_state_metrics_replicas_are_not_double_billed,
    test_utilization_from_both_dcgm_metrics_and_label_styles,
)
from tests.pgtest import PostgresServer
from tests.promtest import PrometheusServer

pytestmark = pytest.mark.integration

__all__ = [
    "metering_scenario",
    "metering_tsdb",
    "policy",
    "prometheus",
    "test_counter_reset_counts_from_zero",
    "test_exact_gpu_seconds_per_pod_and_hour",
    "test_labels_member_owner_model_and_sources",
    "test_missing_scrapes_lower_coverage_but_not_usage",
    "test_pod_shorter_than_a_scrape_is_billed_its_real_duration",
    "test_rerun_is_idempotent",
    "test_two_kube_state_metrics_replicas_are_not_double_billed",
    "test_utilization_from_both_dcgm_metrics_and_label_styles",
]


def meter_into(url: str, prometheus: PrometheusServer, policy: Policy) -> Ledger:
    ledger = Ledger(url)
    summary = Meter(PromSource(prometheus.url), ledger, policy).meter_range(START, END)
    assert summary.hours_ok == 6, summary.outcomes
    return ledger


@pytest.fixture(scope="module")
def metered(prometheus: PrometheusServer, policy: Policy, postgres: PostgresServer) -> Ledger:
    url = postgres.create_database(f"metered_{uuid.uuid4().hex[:12]}")
    return meter_into(url, prometheus, policy)


def test_postgresql_and_sqlite_ledgers_hold_the_same_rows(
    prometheus: PrometheusServer, policy: Policy, postgres_url: str, tmp_path: Path
) -> None:
    on_postgres = meter_into(postgres_url, prometheus, policy)
    on_sqlite = meter_into(f"sqlite:///{tmp_path / 'ledger.db'}", prometheus, policy)
    for frame in ("usage_frame", "capacity_frame", "reclaim_lost_frame"):
        pd.testing.assert_frame_equal(
            getattr(on_postgres, frame)(START, END), getattr(on_sqlite, frame)(START, END)
        )
    assert len(on_postgres.usage_frame(START, END)) > 0
    status = ["hour", "status", "coverage", "attempts"]
    pd.testing.assert_frame_equal(
        on_postgres.hour_status(START, END)[status], on_sqlite.hour_status(START, END)[status]
    )
    on_postgres.close()
    on_sqlite.close()
