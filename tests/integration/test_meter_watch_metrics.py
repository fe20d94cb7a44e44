"""`fairpool meter --watch --metrics-port`: the real command, a real Prometheus, scraped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from policies.loader import DEFAULT_POLICY
from tests.integration import prometheus_fixtures as fixtures
from tests.promtest import PrometheusServer, free_port

pytestmark = pytest.mark.integration

metering_scenario = fixtures.metering_scenario
metering_tsdb = fixtures.metering_tsdb
prometheus = fixtures.prometheus


def samples(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {
        s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_watch_serves_its_metrics_and_healthz(prometheus: PrometheusServer, tmp_path: Path) -> None:
    port = free_port()
    ledger = tmp_path / "ledger.db"
    command = [
        sys.executable,
        "-m",
        "scheduler.cli.main",
        "meter",
        "--watch",
        "--prometheus",
        prometheus.url,
        "--ledger",
        f"sqlite:///{ledger}",
        "--policy",
        str(DEFAULT_POLICY),
        "--metrics-port",
        str(port),
        "--metrics-address",
        "127.0.0.1",
    ]
    log = (tmp_path / "meter.log").open("w")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        seen: dict[str, float] = {}
        while time.monotonic() < deadline:
            try:
                seen = samples(f"{base}/metrics")
            except (urllib.error.URLError, ConnectionError):
                seen = {}
            if sum(v for k, v in seen.items() if k.startswith("fairpool_meter_runs_total")):
                break
            assert process.poll() is None, (tmp_path / "meter.log").read_text()
            time.sleep(0.5)
        # The start-up run meters the last closed hour: the fixture's Prometheus has no
        # data then, and had nodes before, so that hour stays pending.
        assert seen["fairpool_meter_runs_total{result=pending}"] == 1.0, seen
        assert seen["fairpool_meter_runs_total{result=error}"] == 0.0
        assert seen["fairpool_meter_pending_hours"] == 1.0
        assert "fairpool_meter_last_metered_hour_timestamp_seconds" in seen
        assert urllib.request.urlopen(f"{base}/healthz", timeout=5).status == 200
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
