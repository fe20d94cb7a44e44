"""One of a thing is counted in the singular where the CLI prints counts: the trace
tables said "1 GPUs", `simulate` "1 jobs", `policy validate` "1 members"."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from policies.loader import DEFAULT_POLICY
from scheduler.cli.main import cli
from scheduler.cli.words import plural
from scheduler.sim.never import never_runs_lines
from scheduler.traces.model import TraceJob


def said(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # rich wraps lines anywhere


@pytest.fixture
def one_job(tmp_path: Path) -> Path:
    trace = tmp_path / "one.csv"
    trace.write_text(
        "job_id,org,submit_time,duration_s,num_pods,gpus_per_pod\nj1,uni-north,0,3600,1,1\n"
    )
    return trace


def test_plural() -> None:
    assert [plural(n, "GPU") for n in (0, 1, 2)] == ["0 GPUs", "1 GPU", "2 GPUs"]
    assert [plural(d, "day") for d in (1.0, 1.5, 30.0)] == ["1 day", "1.5 days", "30 days"]


def test_trace_check_says_1_gpu(one_job: Path) -> None:
    out = said(["trace", "check", str(one_job), "--policy", str(DEFAULT_POLICY)])
    assert "│ 1 GPU │" in out and "GPUs" not in out


def test_trace_synth_says_1_gpu_over_1_day(tmp_path: Path) -> None:
    args = ["trace", "synth", "--gpus", "1", "--members", "1", "--days", "1"]
    out = said([*args, "--out", str(tmp_path / "t.csv")])
    assert " on 1 GPU over 1 day" in out


def test_policy_validate_says_1_member(tmp_path: Path) -> None:
    text = DEFAULT_POLICY.read_text()
    start, end = text.index("  members:\n"), text.index("  sharing:\n")
    one = tmp_path / "one.yaml"
    one.write_text(text[:start] + "  members:\n    - name: uni-north\n" + text[end:])
    assert "(1 member: uni-north)" in said(["policy", "validate", str(one)])


def test_never_runs_lines_say_1_pod_of_1_gpu() -> None:
    job = TraceJob("j1", "uni-north", 0.0, 60.0, 1, 1)
    assert "uni-north, 1 pod of 1 GPU: j1: why" in never_runs_lines({"j1": "why"}, {"j1": job})
    gang = TraceJob("j2", "uni-north", 0.0, 60.0, 2, 8)
    assert "2 pods of 8 GPUs" in never_runs_lines({"j2": "why"}, {"j2": gang})


def test_simulate_says_1_job(one_job: Path, tmp_path: Path) -> None:
    args = ["simulate", "--trace", str(one_job), "--no-standalone", "--jobs", "1"]
    out = said([*args, "--out", str(tmp_path / "sim")])
    assert f"trace: {one_job}, 1 job " in out
