"""`fairpool trace synth|import|check`: outputs, exit codes, nothing written on error."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from scheduler.cli.main import cli
from scheduler.traces import read_trace, synth

DATA = Path(__file__).parents[1] / "data" / "traces"
ROOT = Path(__file__).parents[2]
CLUSTER = ROOT / "policies" / "defaults" / "cluster.yaml"
POLICY = ROOT / "policies" / "defaults" / "policy.yaml"


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["trace", *map(str, args)], catch_exceptions=False)


def test_synth_without_cluster_names_members(tmp_path: Path) -> None:
    out = tmp_path / "t.csv"
    result = run(
        "synth",
        "--members",
        "3",
        "--gpus",
        "16",
        "--days",
        "2",
        "--load",
        "0.9",
        "--seed",
        "1",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    trace = read_trace(out)
    assert trace.members() == ["member-1", "member-2", "member-3"]
    assert "offered load 0.9" in result.output
    again = tmp_path / "again.csv"
    run(
        "synth",
        "--members",
        "3",
        "--gpus",
        "16",
        "--days",
        "2",
        "--load",
        "0.9",
        "--seed",
        "1",
        "--out",
        again,
    )
    assert again.read_bytes() == out.read_bytes()


def test_synth_on_the_demo_cluster_passes_check(tmp_path: Path) -> None:
    out = tmp_path / "demo.csv"
    result = run("synth", "--cluster", CLUSTER, "--days", "7", "--seed", "2", "--out", out)
    assert result.exit_code == 0, result.output
    trace = read_trace(out)
    assert trace.members() == ["ai-startup", "lab-bio", "physics", "uni-north"]
    assert {j.gpu_model for j in trace.jobs} == {
        "NVIDIA-H100-80GB-HBM3",
        "NVIDIA-A100-SXM4-80GB",
    }
    checked = run("check", out, "--cluster", CLUSTER, "--policy", POLICY)
    assert checked.exit_code == 0, checked.output
    assert "valid" in checked.output and "uni-north" in checked.output


def test_synth_on_a_cluster_is_the_trace_simulate_makes_there(tmp_path: Path) -> None:
    """`trace synth --cluster` then `simulate --trace` is the README's workflow: the
    trace is the one `fairpool simulate` makes on that cluster by itself (members ask
    mostly for the models they own, pods as wide as the widest node), not one where half
    of each member's jobs want hardware it does not have."""
    from policies.inventory import load_inventory
    from policies.loader import load_policy
    from scheduler.cli.simulate import default_trace

    out = tmp_path / "demo.csv"
    result = run(
        "synth", "--cluster", CLUSTER, "--policy", POLICY, "--days", "7", "--load", "1.1",
        "--seed", "2", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    own, _ = default_trace(load_inventory(CLUSTER), load_policy(POLICY), 7, 1.1, 2)
    assert read_trace(out).jobs == own.jobs
    owned: dict[str, set[str]] = {}
    for group in load_inventory(CLUSTER).node_groups:
        owned.setdefault(group.owner, set()).add(group.gpu_model)
    away = sum(j.gpu_model not in owned[j.org] for j in own.jobs)
    assert away < 0.25 * len(own.jobs)  # about 1 in 5 by design (home affinity 0.8)


def test_synth_members_disagreeing_with_cluster_is_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "t.csv"
    result = run("synth", "--cluster", CLUSTER, "--members", "7", "--out", out)
    assert result.exit_code == 2
    assert "4 owners" in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("flag", "bad"),
    [
        ("--load", "inf"),
        ("--days", "nan"),
        ("--checkpointable-share", "nan"),
        ("--days", "367"),
        ("--seed", "-1"),
        ("--members", "20001"),
        ("--gpus", "1" + "0" * 400),  # was an OverflowError traceback
    ],
)
def test_synth_refuses_bad_flag_values(tmp_path: Path, flag: str, bad: str) -> None:
    # A year at most: `--days 100000` once generated for minutes.
    out = tmp_path / "t.csv"
    result = run("synth", "--out", out, flag, bad)
    assert result.exit_code == 2
    assert flag in result.output
    assert not out.exists()


def test_synth_refuses_a_member_weighted_twice(tmp_path: Path) -> None:
    out = tmp_path / "t.csv"
    result = run("synth", "--out", out, "--member-weights", "member-1=1,member-1=2")
    assert result.exit_code == 2
    assert "--member-weights: 'member-1' given twice" in result.output
    assert not out.exists()


def test_synth_to_a_path_through_a_file_exits_2(tmp_path: Path) -> None:
    # Was a FileExistsError traceback.
    (tmp_path / "a-file").write_text("kept\n")
    result = run("synth", "--days", "1", "--out", tmp_path / "a-file" / "t.csv")
    assert result.exit_code == 2
    assert "cannot write there" in result.output and "a file, not a folder" in result.output
    assert (tmp_path / "a-file").read_text() == "kept\n"


def test_synth_refuses_a_load_that_asks_for_too_many_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `--load 1000` once generated for minutes; the cap is lowered to keep the test quick.
    monkeypatch.setattr(synth, "MAX_JOBS", 1000)
    out = tmp_path / "t.csv"
    result = run("synth", "--out", out, "--load", "1.5")
    assert result.exit_code == 2
    assert "a load of 1.5 over 30 days on 64 GPUs asks for more than 1,000 jobs" in result.output
    assert not out.exists()


@pytest.mark.parametrize("weights", ["member-1=inf,member-2=1", "member-1=nan", "member-1=-1"])
def test_synth_refuses_weights_that_are_not_finite_and_positive(
    tmp_path: Path, weights: str
) -> None:
    # inf ended in a numpy traceback, nan in "every member zero load".
    out = tmp_path / "t.csv"
    result = run("synth", "--out", out, "--member-weights", weights)
    assert result.exit_code == 2
    assert "a weight is a finite number >= 0" in result.output
    assert not out.exists()


@pytest.mark.parametrize("weights", ["member-1=0", "member-1=0,member-2=0.0"])
def test_synth_refuses_weights_that_give_no_member_a_job_naming_the_flag(
    tmp_path: Path, weights: str
) -> None:
    # Said "synthesize: member_weights give every member zero load": no such flag.
    out = tmp_path / "t.csv"
    result = run("synth", "--out", out, "--member-weights", weights)
    assert result.exit_code == 2
    assert "--member-weights: every weight is 0 (a member not named gets 0)" in result.output
    assert "synthesize" not in result.output
    assert not out.exists()


def test_check_bad_file_exit_2_names_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "job_id,org,submit_time,duration_s,num_pods,gpus_per_pod\n"
        "a,uni-north,0,60,1,1\n"
        "b,uni-north,10,-5,1,1\n"
        "c,nobody,20,60,16,8\n"
    )
    result = run("check", bad, "--cluster", CLUSTER, "--policy", POLICY)
    assert result.exit_code == 2
    assert "line 3, column duration_s" in result.output
    assert "line 4, column org" in result.output
    assert "line 4, column num_pods" in result.output
    assert run("check", bad).exit_code == 2  # the negative duration alone


def test_check_refuses_a_cluster_whose_gpu_model_the_policy_does_not_price(
    tmp_path: Path,
) -> None:
    good = tmp_path / "t.csv"
    good.write_text("job_id,org,submit_time,duration_s,num_pods,gpus_per_pod\na,physics,0,60,1,1\n")
    assert run("check", good, "--cluster", CLUSTER, "--policy", POLICY).exit_code == 0
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(CLUSTER.read_text().replace("NVIDIA-A100-SXM4-80GB", "A100"))
    result = run("check", good, "--cluster", cluster, "--policy", POLICY)
    assert result.exit_code == 2
    assert "gpuModel: GPU model 'A100' is not one of the policy's gpuModels" in result.output
    assert run("check", good, "--cluster", cluster).exit_code == 0  # no policy to price it


def test_import_philly_and_helios(tmp_path: Path) -> None:
    out = tmp_path / "philly.csv"
    result = run(
        "import",
        "philly",
        DATA / "philly_sample.json",
        "--member-map",
        DATA / "member_map.yaml",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert len(read_trace(out).jobs) == 2
    assert "never started" in result.output and "vc-gamma" in result.output
    out = tmp_path / "helios.csv"
    result = run(
        "import",
        "helios",
        DATA / "helios_sample.csv",
        "--member-map",
        "vcAlpha=uni-north,vcBeta=ai-startup,vcDelta=physics",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert read_trace(out).members() == ["ai-startup", "physics", "uni-north"]


def test_import_strict_unmapped_exit_2_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "h.csv"
    result = run(
        "import",
        "helios",
        DATA / "helios_sample.csv",
        "--member-map",
        "vcAlpha=a",
        "--strict-members",
        "--out",
        out,
    )
    assert result.exit_code == 2
    assert "not mapped" in result.output
    assert not out.exists()


def test_import_does_not_replace_existing_output_on_error(tmp_path: Path) -> None:
    out = tmp_path / "keep.csv"
    out.write_text("previous\n")
    broken = tmp_path / "broken.json"
    broken.write_text("{not a list}")
    result = run("import", "philly", broken, "--out", out)
    assert result.exit_code == 2
    assert out.read_text() == "previous\n"


def test_check_rejects_a_gang_the_demo_nodes_cannot_hold(tmp_path: Path) -> None:
    trace = tmp_path / "gang.csv"
    trace.write_text(
        "job_id,org,submit_time,duration_s,num_pods,gpus_per_pod,gpu_model\n"
        "g,physics,0,600,4,8,NVIDIA-A100-SXM4-80GB\n"
    )
    assert run("check", trace).exit_code == 0
    result = run("check", trace, "--cluster", CLUSTER)
    assert result.exit_code == 2
    assert "line 2, column num_pods" in result.output
    assert "at most 3 such pods" in result.output


def test_installed_command_exit_codes(tmp_path: Path) -> None:
    fairpool = ROOT / ".venv" / "bin" / "fairpool"
    out = tmp_path / "t.csv"
    ok = subprocess.run(
        [fairpool, "trace", "synth", "--members", "2", "--days", "1", "--out", out],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert read_trace(out).members() == ["member-1", "member-2"]
    bad = tmp_path / "bad.csv"
    bad.write_text("job_id,org,submit_time,duration_s,num_pods\nj,lab,0,60,1\n")
    failed = subprocess.run(
        [fairpool, "trace", "check", bad], capture_output=True, text=True, check=False
    )
    assert failed.returncode == 2
    assert "line 1, column gpus_per_pod: missing required column" in failed.stderr


def test_check_reports_offered_load_over_the_submission_window(tmp_path: Path) -> None:
    # 64 GPUs. Submissions at t=3600 and t=7200: a 1-hour window. Work: 32 GPUs x 1 h
    # + 32 GPUs x 10 h = 352 GPU-h against 64 GPU-h: 5.50. Over the span to the last
    # end (t=7200 + 36000) it would read 0.46.
    out = tmp_path / "t.csv"
    out.write_text(
        "job_id,org,submit_time,duration_s,num_pods,gpus_per_pod\n"
        "j1,uni-north,3600,3600,4,8\n"
        "j2,uni-north,7200,36000,4,8\n",
        encoding="utf-8",
    )
    checked = run("check", out, "--cluster", CLUSTER)
    assert checked.exit_code == 0, checked.output
    text = " ".join(checked.output.split())
    assert "offered load 5.50 on 64 GPUs over the submission window (1.0 h" in text


def test_synth_marks_a_share_of_the_jobs_checkpointable(tmp_path: Path) -> None:
    out = tmp_path / "t.csv"
    args = ("synth", "--cluster", CLUSTER, "--days", "2", "--seed", "1", "--out", out)
    assert run(*args, "--checkpointable-share", "0.5").exit_code == 0
    lines = out.read_text().splitlines()
    assert lines[0].endswith(",checkpointable")
    assert {line.rsplit(",", 1)[1] for line in lines[1:]} == {"true", "false"}
    assert run("check", out, "--cluster", CLUSTER, "--policy", POLICY).exit_code == 0
    bad = run(*args, "--checkpointable-share", "1.5")
    assert bad.exit_code == 2 and "--checkpointable-share" in bad.output


def test_check_and_simulate_say_the_same_of_a_gang_too_big_for_one_model(
    tmp_path: Path,
) -> None:
    """The demo has 32 GPUs of each of two models: a 40-GPU gang fits the cluster's 64
    but no model's nodes, and both commands say so per model (simulate said "larger than
    the cluster (32 GPUs)")."""
    trace = tmp_path / "gang.csv"
    trace.write_text(
        "job_id,org,submit_time,duration_s,num_pods,gpus_per_pod,gpu_model\ng,physics,0,600,5,8,\n"
    )
    why = (
        "line 2, column num_pods: gang of 5 pods x 8 GPUs cannot fit: the nodes of one GPU "
        "model hold at most 4 such pods (a gang never mixes GPU models)"
    )
    checked = run("check", trace, "--cluster", CLUSTER)
    assert checked.exit_code == 2
    assert why in " ".join(checked.output.split())
    simulated = CliRunner().invoke(
        cli, ["simulate", "--trace", str(trace), "--out", str(tmp_path / "out")]
    )
    assert simulated.exit_code == 2
    assert why in " ".join(simulated.output.split())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("effect", "runs"), [("PreferNoSchedule", True), ("NoSchedule", False), ("NoExecute", False)]
)
def test_check_and_simulate_agree_on_tainted_nodes(tmp_path: Path, effect: str, runs: bool) -> None:
    """A PreferNoSchedule taint only makes a node less preferred: simulate refused a
    valid trace as never fitting ("1 job(s) can never fit"). A NoSchedule one keeps a
    simulated pod off it, and `trace check --cluster` accepted what simulate refused."""
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(
        "apiVersion: fairpool.io/v1\nkind: ClusterInventory\nspec:\n  nodeGroups:\n"
        "    - {name: a, owner: physics, count: 1, gpusPerNode: 8, "
        "gpuModel: NVIDIA-H100-80GB-HBM3,\n"
        f"       taints: [{{key: maintenance, effect: {effect}}}]}}\n"
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: fairpool.io/v1\nkind: Policy\nspec:\n  gpuModels:\n"
        "    - {name: NVIDIA-H100-80GB-HBM3, hourlyCost: '2.40'}\n"
        "  members:\n    - {name: physics, namespaces: [physics]}\n"
    )
    trace = tmp_path / "t.csv"
    trace.write_text(
        "job_id,org,submit_time,duration_s,num_pods,gpus_per_pod\nj1,physics,0,3600,1,1\n"
    )
    inputs = ["--cluster", str(cluster), "--policy", str(policy)]
    checked = run("check", trace, *inputs)
    out = tmp_path / "out"
    simulated = CliRunner().invoke(
        cli, ["simulate", "--trace", str(trace), *inputs, "--out", str(out), "--no-standalone"]
    )
    assert (checked.exit_code, simulated.exit_code) == ((0, 0) if runs else (2, 2))
    assert (out / "summary.json").exists() == runs
    if not runs:
        assert "NoSchedule or NoExecute taints keep it off" in " ".join(checked.output.split())


def test_simulate_refuses_a_job_that_a_node_s_cpu_keeps_from_ever_starting(
    tmp_path: Path,
) -> None:
    """A simulated pod asks for 500m CPU per GPU: an 8-GPU node with `cpu: 2` takes a
    4-GPU pod but never an 8-GPU one. Counted by GPUs alone, the job waited the whole
    month and was reported only as unfinished."""
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(
        "apiVersion: fairpool.io/v1\nkind: ClusterInventory\nspec:\n  nodeGroups:\n"
        "    - {name: a, owner: physics, count: 1, gpusPerNode: 8, cpu: 2, "
        "gpuModel: NVIDIA-H100-80GB-HBM3}\n"
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: fairpool.io/v1\nkind: Policy\nspec:\n  gpuModels:\n"
        "    - {name: NVIDIA-H100-80GB-HBM3, hourlyCost: '2.40'}\n"
        "  members:\n    - {name: physics, namespaces: [physics]}\n"
    )
    inputs = ["--cluster", str(cluster), "--policy", str(policy), "--no-standalone"]
    for gpus, code in (("4", 0), ("8", 2)):
        trace = tmp_path / f"t{gpus}.csv"
        trace.write_text(
            f"job_id,org,submit_time,duration_s,num_pods,gpus_per_pod\nj1,physics,0,3600,1,{gpus}\n"
        )
        out = tmp_path / f"out{gpus}"
        simulated = CliRunner().invoke(
            cli, ["simulate", "--trace", str(trace), *inputs, "--out", str(out)]
        )
        assert simulated.exit_code == code, simulated.output
        if code:
            assert "1 job(s) can never fit the cluster" in " ".join(simulated.output.split())
        else:
            summary = json.loads((out / "summary.json").read_text())
            assert summary["jobs_completed"] == 1


NEVER_RUNS = (
    "job_id,org,submit_time,duration_s,num_pods,gpus_per_pod,gpu_model\n"
    "ok,ai-startup,0,600,4,8,NVIDIA-H100-80GB-HBM3\n"
    "late,physics,60,600,4,8,NVIDIA-H100-80GB-HBM3\n"
    "later,physics,120,600,4,8,NVIDIA-H100-80GB-HBM3\n"
    "small,physics,180,600,1,8,NVIDIA-H100-80GB-HBM3\n"
)
"""On the demo, physics owns no H100: 16 on uni-north's nodes and, under ai-startup's
lendingLimit 8, one 8-GPU pod on ai-startup's make 24 of the 32 its gangs need.
ai-startup, which lends to others, is never limited on its own nodes."""

NEVER_RUNS_WHY = (
    "physics, 4 pods of 8 GPUs: late and later: it needs 32 NVIDIA-H100-80GB-HBM3 GPUs at "
    "once, and physics can hold at most 24 in pods of 8: 8 that ai-startup may "
    "lend (lendingLimit 8) and 16 on uni-north's nodes"
)


def test_check_warns_of_jobs_the_policy_never_lets_run(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(NEVER_RUNS)
    checked = run("check", trace, "--cluster", CLUSTER, "--policy", POLICY)
    # Valid input: another policy (no lendingLimit) would run them.
    assert checked.exit_code == 0, checked.output
    text = " ".join(checked.output.split())
    assert "warning: 2 job(s) can never run on" in text
    assert NEVER_RUNS_WHY in text
    assert "small" not in text.split("warning:")[1] and "ok" not in text.split("warning:")[1]
    # Without the policy nothing can be said of lending.
    assert "warning" not in run("check", trace, "--cluster", CLUSTER).output


def test_synth_with_a_policy_leaves_out_the_jobs_it_never_lets_run(tmp_path: Path) -> None:
    """Seed 2 over 3 days draws two 4 x 8 H100 gangs (t.csv of this test's first run),
    which the demo policy's lendingLimit keeps from ever running."""
    args = ("synth", "--cluster", CLUSTER, "--days", "3", "--load", "1.1", "--seed", "2")
    everything, kept = tmp_path / "all.csv", tmp_path / "kept.csv"
    assert run(*args, "--out", everything).exit_code == 0
    result = run(*args, "--policy", POLICY, "--out", kept)
    assert result.exit_code == 0, result.output
    before, after = read_trace(everything), read_trace(kept)
    left_out = {j.job_id for j in before.jobs} - {j.job_id for j in after.jobs}
    assert len(left_out) == 2
    assert "left out 2 job(s) that" in " ".join(result.output.split())
    assert {j.gpus for j in before.jobs if j.job_id in left_out} == {32}
    checked = run("check", kept, "--cluster", CLUSTER, "--policy", POLICY)
    assert checked.exit_code == 0 and "warning" not in checked.output
    assert (
        "warning: 2 job(s)"
        in run("check", everything, "--cluster", CLUSTER, "--policy", POLICY).output
    )
    alone = run("synth", "--policy", POLICY, "--days", "1", "--out", tmp_path / "x.csv")
    assert alone.exit_code == 2 and "--policy needs --cluster" in alone.output
    assert not (tmp_path / "x.csv").exists()


def test_check_refuses_a_name_that_ends_in_a_control_character(tmp_path: Path) -> None:
    # Trimmed with the spaces around it, `j1\x0b` passed as `j1` (exit 0, "valid").
    bad = tmp_path / "bad.csv"
    bad.write_text("job_id,org,submit_time,duration_s,num_pods,gpus_per_pod\nj1\x0b,lab,0,60,1,1\n")
    result = run("check", bad)
    assert result.exit_code == 2
    assert r"line 2, column job_id: control character '\x0b' in the cell" in result.output


def test_import_without_map_writes_a_trace_a_policy_can_replay(tmp_path: Path) -> None:
    # Helios' virtual clusters (vcAlpha) were the trace's orgs: no policy can have such
    # a member, so `trace check --policy` and `simulate` refused the trace whatever the
    # policy said.
    out = tmp_path / "helios.csv"
    result = run("import", "helios", DATA / "helios_sample.csv", "--out", out)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "members named after virtual clusters: vcAlpha -> vcalpha, vcBeta -> vcbeta" in said
    policy = tmp_path / "policy.yaml"
    members = "".join(
        f"    - name: {name}\n      namespaces: [{name}]\n" for name in read_trace(out).members()
    )
    text = POLICY.read_text()
    start, end = text.index("  members:\n"), text.index("  sharing:\n")
    policy.write_text(text[:start] + "  members:\n" + members + text[end:])
    result = run("check", out, "--policy", policy)
    assert result.exit_code == 0, result.output
