"""`fairpool simulate` end to end on a tiny cluster: summary.json per docs/metrics.md, the
tables, byte-identical reruns, and exit 2 with nothing written on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import scheduler.cli.simulate
from scheduler.cli.main import main
from scheduler.traces import synth

POLICY = """\
apiVersion: fairpool.io/v1
kind: Policy
spec:
  gpuModels:
    - {name: G, hourlyCost: "2.00"}
  members:
    - {name: a, namespaces: ["a"]}
    - {name: b, namespaces: ["b-*"], checkpointable: true}
  sharing: {reclaimGracePeriodSeconds: 30}
  billing: {timeZone: Europe/Paris}
"""
CLUSTER = """\
apiVersion: fairpool.io/v1
kind: ClusterInventory
spec:
  nodeGroups:
    - {name: a-g, owner: a, count: 1, gpusPerNode: 4, gpuModel: G}
    - {name: b-g, owner: b, count: 1, gpusPerNode: 4, gpuModel: G}
"""
TRACE = """\
job_id,org,submit_time,duration_s,num_pods,gpus_per_pod,gpu_model
a1,a,0,1000,1,4,G
a2,a,0,1000,1,4,G
b1,b,100,500,1,4,G
b2,b,200,300,2,2,G
"""
OVERALL = {
    "gpu_hours_used": float,
    "gpu_hours_entitled": float,
    "gpu_hours_borrowed": float,
    "gpu_hours_used_on_others_hardware": float,
    "gpu_hours_lent": float,
    "gpu_hours_lost_to_reclaim": float,
    "jobs_completed": int,
    "mean_wait_s": float,
    "p95_wait_s": float,
    "mean_jct_s": float,
    "utilization": float,
    "utilization_while_pending": float,
    "makespan_s": float,
    "fairness_jain": float,
    "entitlement_violation_gpu_s": float,
    "preemptions": int,
}
PER_MEMBER = {
    **{
        k: v
        for k, v in OVERALL.items()
        if k
        not in {
            "utilization",
            "utilization_while_pending",
            "makespan_s",
            "fairness_jain",
            "entitlement_violation_gpu_s",
            "preemptions",
        }
    },
    "standalone_mean_jct_s": float,
    "pooling_dividend_gpu_hours": float,
}


def inputs(tmp_path: Path, trace: str = TRACE, cluster: str = CLUSTER) -> list[str]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "cluster.yaml").write_text(cluster)
    (tmp_path / "trace.csv").write_text(trace)
    return [
        "simulate",
        "--policy", str(tmp_path / "policy.yaml"),
        "--cluster", str(tmp_path / "cluster.yaml"),
        "--trace", str(tmp_path / "trace.csv"),
        "--start", "2026-10-01T00:00:00+02:00",
    ]  # fmt: skip


def run(args: list[str]) -> int:
    """The exit code of `fairpool ARGS`."""
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def number_of(kind: type, value: object) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, kind) and not isinstance(value, bool)


def test_summary_keys_types_and_tables(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run([*inputs(tmp_path), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key, kind in OVERALL.items():
        assert number_of(kind, summary[key]), (key, summary[key])
    assert set(summary["members"]) == {"a", "b"}
    for member in summary["members"].values():
        for key, kind in PER_MEMBER.items():
            assert number_of(kind, member[key]), (key, member[key])
    assert summary["jobs_completed"] == 4
    assert summary["preemptions"] >= 1  # b reclaims its node from a's borrowed job
    assert summary["window"]["start"] == "2026-09-30T22:00:00+00:00"
    assert summary["window"]["month"] == "2026-10"

    jobs = pd.read_parquet(out / "jobs.parquet")
    assert list(jobs["job_id"]) == ["a1", "a2", "b1", "b2"]
    assert pd.read_csv(out / "jobs.csv")["jct_s"].notna().all()
    assert list(pd.read_parquet(out / "members.parquet")["member"]) == ["a", "b"]
    usage = pd.read_parquet(out / "usage.parquet")
    assert str(usage["hour"].dtype) == "datetime64[ns, UTC]"
    assert set(usage["namespace"]) == {"a", "b-sim"}  # namespaces that map back
    used = usage.groupby("member")["gpu_seconds"].sum() / 3600
    assert used["a"] == pytest.approx(summary["members"]["a"]["gpu_hours_used"], abs=1e-5)
    capacity = pd.read_parquet(out / "capacity.parquet")
    window = summary["window"]["seconds"]
    assert capacity["gpu_seconds_available"].sum() == pytest.approx(8 * window)
    lost = pd.read_parquet(out / "reclaim_lost.parquet")
    assert lost["gpu_seconds_lost"].sum() == pytest.approx(
        summary["gpu_hours_lost_to_reclaim"] * 3600, abs=1e-2
    )
    timeline = pd.read_parquet(out / "timeline.parquet")
    assert {"time_s", "time_utc", "member", "gpu_model", "fair_share"} <= set(timeline.columns)


def test_rerun_gives_identical_summary(tmp_path: Path) -> None:
    """Also with the standalone replays in this process or in two worker processes."""
    args = inputs(tmp_path)
    assert run([*args, "--out", str(tmp_path / "one"), "--jobs", "1"]) == 0
    assert run([*args, "--out", str(tmp_path / "two"), "--jobs", "2"]) == 0
    first = (tmp_path / "one" / "summary.json").read_bytes()
    assert first == (tmp_path / "two" / "summary.json").read_bytes()
    assert json.loads(first)["standalone_mean_jct_s"] is not None


def test_batched_replay_says_its_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run([*inputs(tmp_path), "--out", str(out), "--batch-seconds", "60"]) == 0
    assert "(batched by 60 s)" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["simulation"]["batch_seconds"] == 60
    assert summary["jobs_completed"] == 4
    exact = tmp_path / "exact"
    assert run([*inputs(tmp_path), "--out", str(exact)]) == 0
    assert json.loads((exact / "summary.json").read_text())["simulation"]["batch_seconds"] == 0
    assert "batched by" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flag", "bad"),
    [
        ("--load", "inf"),
        ("--load", "0"),
        ("--days", "nan"),
        ("--days", "-3"),
        ("--days", "367"),
        ("--seed", "-1"),
    ],
)
def test_bad_synthetic_trace_options_exit_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, bad: str
) -> None:
    # `--load inf` once replayed for ever: an infinite load is no trace.
    out = tmp_path / "out"
    assert run(["simulate", "--no-standalone", "--out", str(out), flag, bad]) == 2
    assert flag in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--days", "--load", "--seed"])
def test_synthetic_trace_options_with_a_trace_exit_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    # They were ignored: `--days 1` with a month's trace replayed the month.
    out = tmp_path / "out"
    value = "2" if flag == "--seed" else "1"
    assert run([*inputs(tmp_path), "--no-standalone", "--out", str(out), flag, value]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{flag}: only for the synthetic trace, and --trace" in err
    assert not out.exists()


def test_a_load_that_asks_for_too_many_jobs_exits_2_writing_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cap is lowered to keep the test quick (`--load 500` is refused the same way).
    monkeypatch.setattr(synth, "MAX_JOBS", 1000)
    out = tmp_path / "out"
    assert run(["simulate", "--no-standalone", "--out", str(out), "--load", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "a load of 1.5 over 30 days on 64 GPUs asks for more than 1,000 jobs" in err
    assert not out.exists()


@pytest.mark.parametrize("bad", ["-1", "nan", "inf", "3601", "soon"])
def test_bad_batch_exits_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    out = tmp_path / "out"
    assert run([*inputs(tmp_path), "--out", str(out), "--batch-seconds", bad]) == 2
    assert "--batch-seconds" in capsys.readouterr().err
    assert not out.exists()


def test_jobs_must_be_positive(tmp_path: Path) -> None:
    assert run([*inputs(tmp_path), "--out", str(tmp_path / "out"), "--jobs", "0"]) == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("trace", "cluster", "message"),
    [
        (TRACE + "b3,b,300,-5,1,1,G\n", CLUSTER, "line 6"),
        (TRACE + "c1,nobody,300,5,1,1,G\n", CLUSTER, "line 6"),
        (TRACE + "big,a,300,5,3,4,G\n", CLUSTER, "line 6"),
        # The line of the group in the inventory (CLUSTER's line 6), as every other
        # inventory error has.
        (TRACE, CLUSTER.replace("owner: b", "owner: zed"), "line 6: spec.nodeGroups[1].owner"),
        # Ran the month, wrote the tables, then failed at the cost report.
        (
            TRACE,
            CLUSTER.replace("gpuModel: G}", "gpuModel: H}", 1),
            "line 5: spec.nodeGroups[0].gpuModel: GPU model 'H' is not one of the policy's "
            "gpuModels",
        ),
    ],
    ids=["negative-duration", "unknown-member", "gang-too-big", "unknown-owner", "unpriced-model"],
)
def test_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], trace: str, cluster: str, message: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("previous run\n")
    assert run([*inputs(tmp_path, trace, cluster), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    assert (out / "summary.json").read_text() == "previous run\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


@pytest.mark.parametrize("start", ["0001-01-01T00:00+00:00", "9999-12-31T23:00+00:00"])
def test_a_start_outside_the_reports_years_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], start: str
) -> None:
    # Both ended in pandas or datetime overflow tracebacks after the replay.
    out = tmp_path / "out"
    assert run([*inputs(tmp_path), "--out", str(out), "--start", start]) == 2
    assert f"--start: '{start}' is not in the years 1970 to 2200" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("where", ["a-file", "a-file/out"])
def test_an_out_folder_that_cannot_be_one_exits_2_before_the_replay(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    # A file in the way was a FileExistsError traceback once the replay had run.
    def replay(*_: object) -> None:
        raise AssertionError("the replay ran")

    monkeypatch.setattr(scheduler.cli.simulate, "_replay", replay)
    (tmp_path / "a-file").write_text("kept\n")
    assert run([*inputs(tmp_path), "--out", str(tmp_path / where)]) == 2
    err = capsys.readouterr().err
    assert "cannot write there" in err and "a-file is a file, not a folder" in err
    assert (tmp_path / "a-file").read_text() == "kept\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_gang_that_fits_gpus_but_no_node_set_is_rejected(tmp_path: Path) -> None:
    # 8 GPUs exist, but no node has 8: a 1 x 8 pod can never run.
    out = tmp_path / "out"
    assert run([*inputs(tmp_path, TRACE + "wide,a,300,5,1,8,G\n"), "--out", str(out)]) == 2
    assert not out.exists()


def test_default_start_is_first_day_of_last_month_in_policy_zone() -> None:
    from datetime import UTC, datetime

    from policies.loader import parse_policy
    from scheduler.cli.simulate import previous_month_start

    policy = parse_policy(POLICY)
    start = previous_month_start(policy, datetime(2026, 11, 28, 12, tzinfo=UTC))
    assert start.isoformat() == "2026-10-01T00:00:00+02:00"
    start = previous_month_start(policy, datetime(2027, 1, 1, 0, 30, tzinfo=UTC))
    assert start.isoformat() == "2026-12-01T00:00:00+01:00"
    # 23:30 UTC on Oct 31 is already November in Paris: last month is October.
    start = previous_month_start(policy, datetime(2026, 10, 31, 23, 30, tzinfo=UTC))
    assert start.isoformat() == "2026-10-01T00:00:00+02:00"


def test_default_trace_keeps_only_jobs_that_can_run() -> None:
    from policies import load_inventory, load_policy
    from scheduler.cli.simulate import default_trace
    from scheduler.sim.cluster import build_nodes
    from scheduler.sim.never import never_runs

    policy, inventory = load_policy(), load_inventory()
    trace, dropped = default_trace(inventory, policy, days=30, load=1.2, seed=42)
    nodes = build_nodes(inventory)
    assert len(trace.jobs) > 1000 and dropped > 0
    assert never_runs(trace.jobs, nodes, policy) == {}
    # The dropped gangs are big: what stays offers ~98 % of the cluster's 30 days
    # (bursty and uneven between models, so borrowing and reclaim happen).
    offered = sum(j.gpus * j.duration_s for j in trace.jobs)
    assert offered > 0.9 * 64 * 30 * 86_400
    again, _ = default_trace(inventory, policy, days=30, load=1.2, seed=42)
    assert again == trace


def test_reachable_counts_own_nodes_and_what_other_owners_may_lend() -> None:
    from scheduler.sim.never import never_reached
    from tests.unit.test_sim_helpers import MODEL, job, node, policy

    rules = policy({"a": {}, "b": {"lendingLimit": 6}})
    nodes = (node("a1", "a", 8), node("b1", "b", 8), node("b2", "b", 4))

    def why(name: str, member: str, per_pod: int, pods: int = 1, model: str = MODEL) -> str | None:
        return never_reached(job(name, member, 0, 1, per_pod, pods, model), nodes, rules)

    # a's own 8 GPUs, and of b's 12 at most 6: 4 in whole 4-GPU pods.
    assert why("fits-own", "a", 4, pods=2) is None
    assert why("own-and-lent", "a", 4, pods=3) is None
    assert why("beyond-the-limit", "a", 4, pods=4) == (
        "it needs 16 G GPUs at once, and a can hold at most 12 in pods of 4: "
        "8 on its own nodes and 4 that b may lend (lendingLimit 6)"
    )
    # b may use all of its own 12 and, a lending without a limit, all of a's 8.
    assert why("b-everything", "b", 4, pods=5) is None
    assert why("other-model", "a", 4, model="H") == (
        "it needs 4 H GPUs at once, and a can hold at most 0 in pods of 4"
    )
    assert why("no-gpu", "a", 0) is None
    capped = policy({"a": {"maxGpus": 4}, "b": {}})
    assert never_reached(job("above-max-gpus", "a", 0, 1, 4, pods=2), nodes, capped) == (
        "it needs 8 GPUs at once, more than a's maxGpus 4"
    )
    # Without borrowing a member holds at most its entitlement: a's own 8.
    strict = policy({"a": {}, "b": {}}, sharing={"borrowing": False})
    assert never_reached(job("own", "a", 0, 1, 4, pods=2), nodes, strict) is None
    assert never_reached(job("borrows", "a", 0, 1, 4, pods=3), nodes, strict) == (
        "it needs 12 G GPUs at once, more than a's entitlement of 8 G GPUs, and borrowing is off"
    )


def test_progress_log_ends_where_the_replay_ends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Off a terminal, progress is logged every tenth of the submission window; the last
    line is the replay's end even when the last tenth was logged just before the last
    submission (here at about 92 % of it, 512 instants in) and work ran on long after."""
    rows = [f"s{k},a,{10 * k},1,1,1,G" for k in range(280)]
    rows.append("long,a,2790,5000,1,1,G")
    trace = "job_id,org,submit_time,duration_s,num_pods,gpus_per_pod,gpu_model\n"
    args = inputs(tmp_path, trace + "\n".join(rows) + "\n")
    assert run([*args, "--out", str(tmp_path / "out"), "--no-standalone"]) == 0
    lines = [
        dict(field.split("=", 1) for field in line.split())
        for line in capsys.readouterr().err.splitlines()
        if line.startswith("event=simulate.progress ")
    ]
    assert len(lines) >= 2
    assert lines[-1]["jobs_done"] == "281"
    assert float(lines[-1]["sim_day"]) == pytest.approx((2790 + 5000) / 86400, abs=0.01)
    # Reported once, not again at the end.
    assert lines[-2] != lines[-1]


def test_a_log_gets_the_member_table_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Off a terminal the table is as wide as it needs (at 150 columns its last column
    was cropped): one header line, every line closed."""
    assert run([*inputs(tmp_path), "--out", str(tmp_path / "out")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line[:1] in "┏┃┡│├└"]
    assert len({len(line) for line in lines}) == 1
    assert len(lines[0]) > 150
    assert all(line[-1] in "┓┃┩│┤┘" for line in lines), lines
    assert sum(line.startswith("┃") for line in lines) == 1
    assert "same jobs pooled / standalone JCT" in lines[1]


def test_the_members_worse_off_pooled_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """b's gang needs both nodes, so it runs only pooled, and b's small job waits behind
    it: on the same jobs (the small one) b is worse off pooled, and the line says who."""
    trace = (
        "job_id,org,submit_time,duration_s,num_pods,gpus_per_pod,gpu_model\n"
        "gang,b,0,5000,2,4,G\n"
        "small,b,10,100,1,4,G\n"
    )
    out = tmp_path / "out"
    assert run([*inputs(tmp_path, trace), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["members_worse_off_pooled"] == 1
    assert summary["members"]["b"]["worse_off_pooled"] is True
    assert "members worse off pooled 1 (b)" in " ".join(capsys.readouterr().out.split())


def test_the_progress_bar_is_full_only_when_every_job_is_done() -> None:
    progress = scheduler.cli.simulate.replay_progress
    assert progress(0.0, 0, 100) == 0.0
    assert progress(1.0, 60, 100) == pytest.approx(0.8)  # the last submission, jobs left
    assert progress(1.0, 100, 100) == 1.0
    assert progress(0.0, 0, 0) == 0.5  # no job: only time is left to go
    steps = [progress(min(1.0, t / 50), min(100, 2 * t), 100) for t in range(60)]
    assert steps == sorted(steps)


def test_jobs_the_policy_never_lets_run_are_named_with_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With b lending at most 2 GPUs, a's gang of 2 x 4 can never run (a's own 4 and no
    whole 4-GPU pod of b's): it is left waiting, counted apart from jobs that did not
    finish in time, and the line says why. Without the limit it runs."""
    limited = POLICY.replace(
        '{name: b, namespaces: ["b-*"], checkpointable: true}',
        '{name: b, namespaces: ["b-*"], checkpointable: true, lendingLimit: 2}',
    )
    assert limited != POLICY
    trace = (
        "job_id,org,submit_time,duration_s,num_pods,gpus_per_pod,gpu_model\n"
        "gang,a,0,600,2,4,G\n"
        "small,a,10,100,1,4,G\n"
    )
    args = inputs(tmp_path, trace)
    (tmp_path / "policy.yaml").write_text(limited)
    out = tmp_path / "out"
    assert run([*args, "--out", str(out)]) == 0
    simulation = json.loads((out / "summary.json").read_text())["simulation"]
    assert simulation["jobs_unfinished"] == 1
    assert simulation["jobs_never_runnable"] == 1
    text = " ".join(capsys.readouterr().out.split())
    assert "1 job(s) never finished 1 of them can never run under this policy" in text
    assert (
        "a, 2 pods of 4 GPUs: gang: it needs 8 G GPUs at once, and a can hold at most 4 "
        "in pods of 4: 4 on its own nodes and 0 that b may lend (lendingLimit 2)"
    ) in text
    (tmp_path / "policy.yaml").write_text(POLICY)
    assert run([*args, "--out", str(tmp_path / "free")]) == 0
    free = json.loads((tmp_path / "free" / "summary.json").read_text())["simulation"]
    assert free["jobs_unfinished"] == free["jobs_never_runnable"] == 0


def test_a_job_that_can_never_run_is_not_waiting_work_in_the_meters() -> None:
    """The replay's meters leave out a job that can never run (docs/metrics.md): with it
    the figures, the timeline and every job's times are those of the replay without it,
    though it stays pending to the end."""
    from scheduler.sim.simulator import Simulator
    from tests.unit.test_sim_helpers import job, node, policy, trace

    rules = policy({"a": {}, "b": {"lendingLimit": 0}})
    nodes = (node("a1", "a", 8), node("b1", "b", 8))
    jobs = [
        job("a-short", "a", 0, 3_600, 8),
        job("b-long", "b", 0, 7_200, 8),
        job("b-late", "b", 100, 3_600, 4),
        # a may hold its own 8 GPUs and none of b's: never.
        job("a-never", "a", 50, 3_600, 8, pods=2),
    ]
    both = Simulator(nodes, rules, trace(*jobs)).run()
    alone = Simulator(nodes, rules, trace(*jobs[:-1])).run()
    assert both.jobs["a-never"].end is None
    assert both.timeline == alone.timeline
    assert both.idle_while_waiting_gpu_s == alone.idle_while_waiting_gpu_s
    assert both.capacity_gpu_s_while_pending == alone.capacity_gpu_s_while_pending > 0
    assert both.entitlement_episodes == alone.entitlement_episodes
    for job_id, record in alone.jobs.items():
        assert (both.jobs[job_id].first_start, both.jobs[job_id].end) == (
            record.first_start,
            record.end,
        )


def test_a_rerun_replaces_the_report_folder_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second run into the same folder, with one member fewer, left the first run's
    invoice of that member beside the new report; a run with nothing to bill (no time
    passed: its only job can never run) ended in a traceback after writing its tables,
    and kept the last run's report."""
    out = tmp_path / "out"
    assert run([*inputs(tmp_path), "--out", str(out), "--no-standalone"]) == 0
    assert (out / "report" / "invoice-b.csv").exists()
    solo = tmp_path / "solo"
    solo.mkdir()
    args = inputs(solo, trace=TRACE.replace(",b,", ",a,"))
    (solo / "policy.yaml").write_text(
        POLICY.replace(", checkpointable: true}", "}").replace(
            '    - {name: b, namespaces: ["b-*"]}\n', ""
        )
    )
    (solo / "cluster.yaml").write_text(CLUSTER.replace("owner: b", "owner: a"))
    assert run([*args, "--out", str(out), "--no-standalone"]) == 0
    assert not (out / "report" / "invoice-b.csv").exists()
    assert (out / "report" / "invoice-a.csv").exists()
    assert not list(tmp_path.glob(".report*")) and not list(out.glob(".report*"))
    capsys.readouterr()
    never = TRACE.splitlines()[0] + "\nbig,a,0,60,1,2,G\n"
    args = inputs(tmp_path, trace=never)
    capped = POLICY.replace('namespaces: ["a"]}', 'namespaces: ["a"], maxGpus: 1}')
    (tmp_path / "policy.yaml").write_text(capped)
    assert run([*args, "--out", str(out), "--no-standalone"]) == 0
    said = capsys.readouterr()
    assert "no cost report:" in said.out and "Traceback" not in said.err
    assert (out / "summary.json").exists() and not (out / "report").exists()


def test_a_replay_in_a_month_past_2200_has_tables_and_no_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trace the checks accept that starts late on 2200-12-31 UTC is in 2201 in the
    policy's zone (Europe/Paris): simulate wrote its tables, then exited 2 blaming a
    `--month` it does not have."""
    late = TRACE.splitlines()[0] + "\na1,a,2200-12-31T23:30:00Z,600,1,4,G\n"
    args = [a for a in inputs(tmp_path, trace=late) if a != "--start"]
    args = args[: args.index("2026-10-01T00:00:00+02:00")]
    out = tmp_path / "out"
    assert run([*args, "--out", str(out), "--no-standalone"]) == 0
    said = capsys.readouterr().out
    assert "no cost report: its month 2201-01 is not in the years 1970 to 2200" in said
    assert (out / "summary.json").exists() and not (out / "report").exists()


def test_a_run_cut_short_while_billing_leaves_the_last_run_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the cost report was billed (after the tables were written) left the
    new run's summary.json and tables beside the last run's report/, which billed
    another trace."""
    out = tmp_path / "out"
    assert run([*inputs(tmp_path), "--out", str(out), "--no-standalone"]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert Path("report/report.html") in before

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    import reports.sources.simulation

    monkeypatch.setattr(reports.sources.simulation, "simulation_report", interrupted)
    other = TRACE.replace("a2,a,0,1000", "a2,a,0,2000")
    assert run([*inputs(tmp_path, trace=other), "--out", str(out), "--no-standalone"]) == 1
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not list(tmp_path.glob(".out*"))


def test_a_trace_submitted_at_one_instant_has_no_utilization_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Utilization is null when every job is submitted at one instant (docs/metrics.md):
    the footer said "utilization — (no contention)" while its jobs waited for each other."""
    at_once = TRACE.replace(",100,500,", ",0,500,").replace(",200,300,", ",0,300,")
    out = tmp_path / "out"
    assert run([*inputs(tmp_path, trace=at_once), "--out", str(out), "--no-standalone"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["utilization"] is None and summary["utilization_while_pending"] is not None
    assert "utilization — (every job submitted at one instant: no submission window)" in said
    assert "no contention" not in said.split("while pods waited")[0]


def test_outputs_carry_none_of_the_engines_marks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # b1 takes its node back from a2: a reclaim, whose reason names both members marked.
    out = tmp_path / "out"
    assert run([*inputs(tmp_path), "--no-standalone", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["preemptions"] >= 1
    marks = ("\u2066", "\u2068", "\u2069")
    written = [p for p in out.rglob("*") if p.is_file()]
    assert written
    for path in written:
        if path.suffix == ".parquet":
            table = pd.read_parquet(path)
            text = table.to_csv() + " ".join(map(str, table.columns))
        else:
            text = path.read_bytes().decode("utf-8", errors="replace")
        assert not [m for m in marks if m in text], path
    printed = capsys.readouterr()
    assert not [m for m in marks if m in printed.out + printed.err]
