"""Values no exporter of real hardware gives: the hour stays pending, and nothing of it is
stored (one infinite value stopped every report of its month)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from policies.loader import load_policy
from reports.ledger import Ledger
from reports.metering.coverage import NODE_COVERAGE_OUT
from reports.metering.meter import Meter, implausible
from reports.metering.prom_source import PromSource
from reports.metering.rows import CAPACITY_OUT, RECLAIM_OUT, USAGE_OUT, HourRows

HOUR = datetime(2026, 10, 5, 9, tzinfo=UTC)
H100 = "NVIDIA-H100-80GB-HBM3"


def rows(pod_seconds: float, node_seconds: float = 8 * 3600.0) -> HourRows:
    usage = pd.DataFrame(
        [
            {
                "namespace": "physics",
                "pod": "p",
                "pod_uid": "u1",
                "job_id": "",
                "member": "physics",
                "owner": "physics",
                "gpu_model": H100,
                "node": "gpu-a",
                "gpu_seconds": pod_seconds,
                "source": "fairpool",
                "coverage": 1.0,
                "utilization": None,
                "policy_version": 1,
            }
        ]
    ).reindex(columns=USAGE_OUT)
    capacity = pd.DataFrame(
        [
            {
                "node": "gpu-a",
                "owner": "physics",
                "gpu_model": H100,
                "gpu_seconds_available": node_seconds,
                "coverage": 1.0,
            }
        ]
    ).reindex(columns=CAPACITY_OUT)
    lost = pd.DataFrame(columns=RECLAIM_OUT)
    nodes = pd.DataFrame(columns=NODE_COVERAGE_OUT)
    return HourRows(usage, capacity, lost, 1.0, True, 120.0, 120.0, nodes)


@pytest.mark.parametrize(
    ("pod", "node", "named"),
    [
        (float("inf"), 8 * 3600.0, "a pod's allocation"),
        (3.6e303, 8 * 3600.0, "a pod's allocation"),
        (float("nan"), 8 * 3600.0, "a pod's allocation"),
        (3600.0, -28800.0, "a node's allocatable GPUs"),
    ],
)
def test_an_hour_with_a_value_no_hardware_gives_stays_pending(
    tmp_path: Path, pod: float, node: float, named: str
) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    meter = Meter(PromSource("http://127.0.0.1:1"), ledger, load_policy(None))
    built = rows(pod, node)
    assert (implausible(built) or "").startswith(f"{named} from Prometheus is not a GPU count")
    (outcome,) = meter._store([HOUR], {HOUR: built}, set())
    assert outcome.status == "pending" and "not a GPU count" in (outcome.error or "")
    assert ledger.usage_frame(HOUR, HOUR + timedelta(hours=1)).empty
    status = ledger.hour_status(HOUR, HOUR + timedelta(hours=1))
    assert list(status["status"]) == ["pending"]


def test_an_hour_of_plausible_values_is_stored(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    meter = Meter(PromSource("http://127.0.0.1:1"), ledger, load_policy(None))
    assert implausible(rows(8 * 3600.0)) is None
    (outcome,) = meter._store([HOUR], {HOUR: rows(8 * 3600.0)}, set())
    assert outcome.status == "metered"
    assert list(ledger.usage_frame(HOUR, HOUR + timedelta(hours=1))["gpu_seconds"]) == [28800.0]
