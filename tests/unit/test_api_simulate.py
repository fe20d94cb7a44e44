"""ShareService.Simulate: the real simulator replays one trace under the current and a
draft policy, on the cluster the scheduler sees."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
import yaml

from policies.loader import DEFAULT_POLICY
from proto.fairpool.v1 import share_pb2
from scheduler.api.whatif import inventory_document
from tests.unit.test_api_support import metadata, running_server

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


def test_a_bad_trace_is_invalid_argument_with_its_line(tmp_path: Path) -> None:
    bad = TRACE + "x1,uni-north,0,-5,1,8,NVIDIA-H100-80GB-HBM3\n"
    with running_server(tmp_path) as api, pytest.raises(grpc.RpcError) as info:
        api.shares.Simulate(
            share_pb2.SimulateRequest(draft_policy_yaml=DEFAULT_POLICY.read_text(), trace_csv=bad),
            metadata=metadata("admin"),
            timeout=300,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "line 8" in info.value.details()


def test_the_inventory_follows_the_snapshot(tmp_path: Path) -> None:
    with running_server(tmp_path) as api:
        document = yaml.safe_load(inventory_document(api.view.snapshot()))
    groups = document["spec"]["nodeGroups"]
    assert sum(g["count"] * g["gpusPerNode"] for g in groups) == 64
    assert {g["owner"] for g in groups} == {"uni-north", "ai-startup", "lab-bio", "physics"}
