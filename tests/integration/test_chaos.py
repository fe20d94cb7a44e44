"""The short chaos run (`python -m bench chaos` is the long one): two `fairpool run`
replicas on a private control plane with the leader killed three times (once the
instant it binds a gang pod), kube-apiserver and etcd killed and started again; then
`fairpool meter` with Prometheus down for two hours and its PostgreSQL ledger stopped
during a run. Nothing may be bound twice, left partly bound, lost or metered twice."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from tests.chaos.meter_run import DOWN, HOURS, run_meter_chaos
from tests.chaos.report import chaos_table
from tests.chaos.scheduler_run import ChaosConfig, run_chaos
from tests.pgtest import PostgresServer

pytestmark = pytest.mark.integration


def test_scheduler_replicas_survive_leader_kills_and_control_plane_restarts(
    tmp_path: Path,
) -> None:
    result = run_chaos(ChaosConfig(kills=3, settle_timeout=150), tmp_path)
    Console(width=140).print(chaos_table(result, None))
    assert [f.mid_gang for f in result.failovers] == [False, True, False]
    assert [o.component for o in result.outages] == ["kube-apiserver", "etcd"]
    assert result.binds > 0 and result.evictions > 0, "binds and reclaims were in flight"
    assert result.double_binds == {}
    assert result.overcommitted_samples == 0, result.overcommitted
    assert result.partly_bound_at_end == {}
    assert result.waiting_without_reason == [] and result.vanished == []
    for failover in result.failovers:
        assert failover.lease_seconds is not None, f"nobody took over from {failover.killed}"
    if any(f.partial_after_kill for f in result.failovers):
        assert result.gang_bind_finished + result.gang_bind_undone > 0, "repaired by an event"


def test_meter_survives_prometheus_down_for_two_hours_and_its_database_stopping(
    tmp_path: Path,
) -> None:
    with PostgresServer() as postgres:
        result = run_meter_chaos(tmp_path, postgres)
    failed = [what for what, status in result.runs if status != 0]
    assert len(failed) == len(DOWN) + 1, result.runs
    assert len(result.pending_during_outage) == len(DOWN)
    assert result.hours_metered == HOURS
    assert result.hours_duplicated == 0 and result.hours_lost == 0
    assert result.usage_rows_duplicated == 0
    assert result.hours_off == []
    assert result.ledger_gpu_hours == pytest.approx(result.scenario_gpu_hours, rel=1e-9)
