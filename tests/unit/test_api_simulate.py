"""ShareService.Simulate: the real simulator replays one trace under the current and a
draft policy, on the cluster the scheduler sees."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pandas as pd
import pytest
import yaml

from policies.loader import DEFAULT_POLICY
from proto.fairpool.v1 import share_pb2
from reports.ledger import CAPACITY_COLUMNS, Ledger
from scheduler.api.whatif import inventory_document, trace_from_usage
from scheduler.traces.csv import read_trace
from tests.unit.test_api_support import metadata, running_server

H100 = "NVIDIA-H100-80GB-HBM3"
CAPACITY = [c for c in CAPACITY_COLUMNS if c != "hour"]
# uni-north wants 48 H100s for an hour; it owns 16 and ai-startup's 16 sit idle.
TRACE = "job_id,org,submit_time,duration_s,num_pods,gpus_per_pod,gpu_model\n" + "".join(
    f"u{i},uni-north,{i},3600,1,8,NVIDIA-H100-80GB-HBM3\n" for i in range(6)
)


def no_borrowing() -> str:
    data = yaml.safe_load(DEFAULT_POLICY.read_text())
    data["spec"]["sharing"]["borrowing"] = False
    return yaml.safe_dump(data)


def test_what_if_compares_draft_with_current(tmp_path: Path) -> None:
    with running_server(tmp_path) as api:
        reply = api.shares.Simulate(
            share_pb2.SimulateRequest(
                draft_policy_yaml=no_borrowing(),
                source=share_pb2.SIMULATION_SOURCE_TRACE,
                trace_csv=TRACE,
            ),
            metadata=metadata("viewer"),
            timeout=300,
        )
    current = {m.member: m for m in reply.current.members}["uni-north"]
    draft = {m.member: m for m in reply.draft.members}["uni-north"]
    assert (reply.current.label, reply.draft.label) == ("current", "draft")
    assert current.jobs_completed == draft.jobs_completed == 6
    assert current.gpu_hours_borrowed > 0 and draft.gpu_hours_borrowed == 0
    assert draft.mean_jct_s > current.mean_jct_s, "without borrowing it waits longer"
    assert json.loads(reply.draft.summary_json)["members"]["uni-north"]["jobs_completed"] == 6
    # The typed figures are the replay's own.
    for s in (reply.current, reply.draft):
        summary = json.loads(s.summary_json)
        assert s.utilization_while_pending == pytest.approx(summary["utilization_while_pending"])
        assert s.mean_jct_s == pytest.approx(summary["mean_jct_s"])
        assert set(s.gpu_hours_lost_by_cause) == {
            "entitlement",
            "fair_share",
            "consolidation",
            "queue",
        }
        assert s.gpu_hours_lost_to_reclaim == pytest.approx(summary["gpu_hours_lost_to_reclaim"])
        assert s.preemptions_per_job_max == summary["preemptions_per_job_max"]


def refused(tmp_path: Path, trace_csv: str) -> str:
    """The details of the INVALID_ARGUMENT a what-if of `trace_csv` gets."""
    with running_server(tmp_path) as api, pytest.raises(grpc.RpcError) as info:
        api.shares.Simulate(
            share_pb2.SimulateRequest(
                draft_policy_yaml=DEFAULT_POLICY.read_text(), trace_csv=trace_csv
            ),
            metadata=metadata("admin"),
            timeout=300,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return str(info.value.details())


def test_a_bad_trace_is_invalid_argument_with_its_line(tmp_path: Path) -> None:
    assert "line 8" in refused(tmp_path, TRACE + f"x1,uni-north,0,-5,1,8,{H100}\n")


def test_a_job_the_cluster_cannot_hold_is_invalid_argument_naming_its_line(
    tmp_path: Path,
) -> None:
    """Checked against the nodes the replay would use, before any simulator starts: the
    simulator's own message named the server's copy of the trace ("trace.csv")."""
    bad = TRACE + f"big,uni-north,0,60,5,8,{H100}\nwide,uni-north,0,60,1,16,{H100}\n"
    details = refused(tmp_path, bad)
    assert f"line 8, column num_pods: gang of 5 pods x 8 GPUs cannot fit: the {H100} " in details
    assert "line 9, column gpus_per_pod: a pod of 16 GPUs is larger than any" in details
    assert "trace.csv" not in details
    # Named after the request's field, which the CLI replaces with the user's file.
    assert details.startswith("trace_csv: 2 error(s)")


def test_a_batched_what_if_replays_both_policies_with_the_batch(tmp_path: Path) -> None:
    with running_server(tmp_path) as api:
        reply = api.shares.Simulate(
            share_pb2.SimulateRequest(
                draft_policy_yaml=no_borrowing(), trace_csv=TRACE, batch_seconds=60
            ),
            metadata=metadata("viewer"),
            timeout=300,
        )
    for summary in (reply.current, reply.draft):
        simulation = json.loads(summary.summary_json)["simulation"]
        assert simulation["batch_seconds"] == 60
    # Arrivals at 0..5 s are one batch: the first jobs start at 60 s, not at 0.
    assert {m.member: m for m in reply.current.members}["uni-north"].mean_wait_s >= 55


@pytest.mark.parametrize("bad", [-1.0, 3601.0, float("nan"), float("inf")])
def test_a_bad_batch_is_invalid_argument_naming_it(tmp_path: Path, bad: float) -> None:
    with running_server(tmp_path) as api, pytest.raises(grpc.RpcError) as info:
        api.shares.Simulate(
            share_pb2.SimulateRequest(
                draft_policy_yaml=DEFAULT_POLICY.read_text(), trace_csv=TRACE, batch_seconds=bad
            ),
            metadata=metadata("admin"),
            timeout=300,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "batch_seconds" in info.value.details()


def test_the_inventory_follows_the_snapshot(tmp_path: Path) -> None:
    with running_server(tmp_path) as api:
        document = yaml.safe_load(inventory_document(api.view.snapshot()))
    groups = document["spec"]["nodeGroups"]
    assert sum(g["count"] * g["gpusPerNode"] for g in groups) == 64
    assert {g["owner"] for g in groups} == {"uni-north", "ai-startup", "lab-bio", "physics"}


def _recent_usage(url: str) -> datetime:
    """uni-north ran a 2-pod gang of 8 H100s each for the last two full hours."""
    last = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    with Ledger(url) as ledger:
        for hour in (last - timedelta(hours=1), last):
            usage = pd.DataFrame(
                [
                    (f"g-{k}", "uni-north", "gang-1", "uni-north", "uni-north", H100, f"n{k}")
                    for k in range(2)
                ],
                columns=["pod_uid", "namespace", "job_id", "member", "owner", "gpu_model", "node"],
            ).assign(gpu_seconds=8 * 3600.0, coverage=1.0, policy_version=1)
            ledger.replace_hour(hour, usage, pd.DataFrame(columns=CAPACITY), None, 1.0)
    return last - timedelta(hours=1)


def test_trace_from_usage_rebuilds_jobs() -> None:
    start = datetime(2026, 10, 1, tzinfo=UTC)
    hour = pd.Timestamp("2026-10-01T05:00:00Z")
    usage = pd.DataFrame(
        {
            "hour": [hour, hour, hour + pd.Timedelta(hours=1), hour],
            "pod_uid": ["a", "b", "a", "c"],
            "job_id": ["gang", "gang", "gang", "single"],
            "member": ["uni-north", "uni-north", "uni-north", "stranger"],
            "gpu_model": [H100] * 4,
            "gpu_seconds": [8 * 3600.0, 8 * 3600.0, 4 * 3600.0, 3600.0],
        }
    )
    text = trace_from_usage(usage, start, {"uni-north"})
    assert text is not None
    trace = read_trace(text)
    (job,) = trace.jobs
    assert (job.job_id, job.org, job.num_pods, job.gpus_per_pod) == ("gang", "uni-north", 2, 8)
    assert job.submit_time == 5 * 3600 and job.duration_s == (20 * 3600) / 16
    assert trace_from_usage(usage, start, {"physics"}) is None


def test_what_if_replays_recent_ledger_usage(tmp_path: Path) -> None:
    with running_server(tmp_path) as api:
        _recent_usage(api.ledger_url)
        reply = api.shares.Simulate(
            share_pb2.SimulateRequest(
                draft_policy_yaml=no_borrowing(),
                source=share_pb2.SIMULATION_SOURCE_LEDGER,
                ledger_days=1,
            ),
            metadata=metadata("admin"),
            timeout=300,
        )
    for summary in (reply.current, reply.draft):
        outcome = {m.member: m for m in summary.members}["uni-north"]
        assert outcome.jobs_completed == 1
        assert outcome.gpu_hours_used == pytest.approx(32.0)


def test_a_draft_that_does_not_price_a_model_of_the_nodes_is_invalid_argument(
    tmp_path: Path,
) -> None:
    """Refused before any simulator starts, naming the request's field: the simulator
    refused the cluster late, naming the server's copy of it (`cluster.yaml`)."""
    data = yaml.safe_load(DEFAULT_POLICY.read_text())
    a100 = "NVIDIA-A100-SXM4-80GB"
    data["spec"]["gpuModels"] = [m for m in data["spec"]["gpuModels"] if m["name"] != a100]
    for member in data["spec"]["members"]:
        member.get("purchased", {}).pop(a100, None)
    with running_server(tmp_path) as api, pytest.raises(grpc.RpcError) as info:
        api.shares.Simulate(
            share_pb2.SimulateRequest(draft_policy_yaml=yaml.safe_dump(data), trace_csv=TRACE),
            metadata=metadata("admin"),
            timeout=300,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = str(info.value.details())
    assert details.startswith(
        f"draft_policy_yaml: spec.gpuModels: the cluster has nodes of {a100!r}"
    )
    assert "cluster.yaml" not in details


def test_a_field_of_the_other_source_is_invalid_argument_naming_it(tmp_path: Path) -> None:
    # Left unread: a trace sent with source LEDGER was answered with a replay of the
    # ledger (or FAILED_PRECONDITION "no metered usage"), ledger_days with a trace was
    # ignored.
    ledger = share_pb2.SIMULATION_SOURCE_LEDGER
    cases = {
        "trace_csv: given with source SIMULATION_SOURCE_LEDGER": share_pb2.SimulateRequest(
            source=ledger, ledger_days=1, trace_csv=TRACE
        ),
        "ledger_days: only with source SIMULATION_SOURCE_LEDGER": share_pb2.SimulateRequest(
            trace_csv=TRACE, ledger_days=1
        ),
    }
    with running_server(tmp_path) as api:
        _recent_usage(api.ledger_url)
        for field, request in cases.items():
            request.draft_policy_yaml = DEFAULT_POLICY.read_text()
            with pytest.raises(grpc.RpcError) as info:
                api.shares.Simulate(request, metadata=metadata("admin"), timeout=300)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details().startswith(field), info.value.details()
