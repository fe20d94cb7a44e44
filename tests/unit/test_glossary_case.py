"""Every output's borrowed / reclaimable / used on others' hardware / lent / lost to
reclaim, and the metrics utilization / utilization_while_pending / makespan_s, against
docs/glossary.md on ONE case computed by hand.

Cluster: members a and b each own one 8-GPU node of model G (a-0 and b-0), so each is
entitled to 8. b is checkpointable, a is not. Grace period 30 s, no min runtime.

Phase 1, a borrows b's node and is reclaimed (a loses work):
  t=0     a1 (6 GPUs, 130 s) goes to a-0; a2 (4 GPUs, 400 s) does not fit beside it and
          goes to b's idle b-0. a holds 10: borrowed 10 - 8 = 2. Pods fill the
          entitlement own node first: a1 (6) fits, a2 (4) does not fit whole, so a2 is
          the reclaimable pod: 4 reclaimable GPUs > 2 borrowed.
  t=100   b1 (8 GPUs, 500 s) arrives. b is within its entitlement and only 4 GPUs are
          free on b-0: a2 is preempted. The engine's shares at this instant: a
          allocated 10, borrowed 2, reclaimable 4; b allocated 0, lent 4, pending 8.
  t=130   a2's grace period ends; a1 completes. a2 restarts from zero on a-0
          [130, 530); b1 runs on b-0 [130, 630).
          a2 ran 130 s x 4 GPUs on b-0: 520 GPU-s used on others' hardware (lent by b)
          and 520 GPU-s lost to reclaim. a was above its entitlement only on [0, 130),
          by 2 GPUs (a2 holds its GPUs in its grace period): 260 GPU-s borrowed.
Phase 2, b borrows a's node and is reclaimed (b, checkpointable, loses nothing):
  t=1000  b2 (8 GPUs, 1000 s) goes to b-0 [1000, 2000); b3 (8 GPUs, 600 s) to a's idle
          a-0. b holds 16: borrowed 8, and b3 (not on b's own node) is reclaimable: 8.
  t=1200  a3 (8 GPUs, 300 s) arrives within a's entitlement: b3 is preempted; gone at
          1230 having done 200 s of work (its grace period goes to checkpointing).
          a3 runs on a-0 [1230, 1530); b3 resumes with 400 s left on a-0 [1530, 1930).
          b3 ran 8 x (230 + 400) = 5040 GPU-s on a's node; b lost nothing. b was above
          its entitlement on [1000, 1230) and [1530, 1930): 8 x 630 = 5040 GPU-s.
Phase 3, each runs within its entitlement on the other's node:
  t=2100  b4 (8 GPUs, 100 s) goes to b-0 [2100, 2200); b5 (8 GPUs, 300 s) to a-0
          [2100, 2400): b borrows 8 x 100 = 800 GPU-s until b4 ends, then holds 8 =
          its entitlement on a's node: 2400 GPU-s on a's hardware, borrowing nothing
          after 2200.
  t=2250  a4 (8 GPUs, 500 s) arrives: a-0 is busy with b5, b-0 is idle; a4 runs on
          b-0 [2250, 2750) within a's entitlement: 4000 GPU-s on b's hardware, nothing
          borrowed.

Per member (GPU-seconds):
                    a                               b
  used              780+520+1600+2400+4000 = 9300   4000+8000+5040+800+2400 = 20240
  borrowed          260                             5040 + 800 = 5840
  on others' hw     520 + 4000 = 4520               5040 + 2400 = 7440
  lent              7440 (b3, b5 on a-0)            4520 (a2, a4 on b-0)
  lost to reclaim   520                             0
Pool: used on others' hardware 4520 + 7440 = 11960 = lent 7440 + 4520.

Allocated GPUs over time (both members): [0,130) 10, [130,530) 12, [530,630) 8,
[630,1000) 0, [1000,1930) 16, [1930,2000) 8, [2000,2100) 0, [2100,2200) 16,
[2200,2250) 8, [2250,2400) 16, [2400,2750) 8: 29540 GPU-s (= 9300 + 20240).
- utilization: submissions span [0, 2250]; allocated there 29540 - 16 x 150 - 8 x 350
  = 24340 GPU-s of 16 x 2250 = 36000: 0.676111.
- utilization_while_pending: pods wait on [100,130) (b1, 10 GPUs held), [1200,1230)
  (a3, 16 held) and [1230,1530) (b3, 16 held): 5580 of 16 x 360 = 5760 GPU-s: 0.96875.
  The two differ: the cluster is full while work waits but idle between phases.
- makespan_s: first submission 0 to the last end 2750.

The bill (no purchased GPUs, so all use of others' hardware is billed): a is charged
4520 GPU-s at 2.00/GPU-h and credited 7440; b the reverse.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from policies.inventory import load_inventory
from policies.loader import load_policy
from policies.model import Policy
from scheduler.cli.main import main
from scheduler.engine import schedule
from scheduler.engine.decisions import Decisions, MemberShare
from scheduler.engine.snapshot import Snapshot
from scheduler.sim.cluster import build_nodes
from scheduler.sim.simulator import Simulator
from scheduler.traces.csv import read_trace

POLICY = """\
apiVersion: fairpool.io/v1
kind: Policy
spec:
  gpuModels:
    - {name: G, hourlyCost: "2.00"}
  members:
    - {name: a, namespaces: ["a"]}
    - {name: b, namespaces: ["b"], checkpointable: true}
  sharing: {reclaimGracePeriodSeconds: 30, minRuntimeSeconds: 0}
  billing: {timeZone: UTC}
"""
CLUSTER = """\
apiVersion: fairpool.io/v1
kind: ClusterInventory
spec:
  nodeGroups:
    - {name: a-g, owner: a, count: 1, gpusPerNode: 8, gpuModel: G}
    - {name: b-g, owner: b, count: 1, gpusPerNode: 8, gpuModel: G}
"""
TRACE = """\
job_id,org,submit_time,duration_s,num_pods,gpus_per_pod,gpu_model
a1,a,0,130,1,6,G
a2,a,0,400,1,4,G
b1,b,100,500,1,8,G
b2,b,1000,1000,1,8,G
b3,b,1000,600,1,8,G
a3,a,1200,300,1,8,G
b4,b,2100,100,1,8,G
b5,b,2100,300,1,8,G
a4,a,2250,500,1,8,G
"""
H = 3600.0

# The hand-computed figures of the docstring, GPU-seconds per member.
USED = {"a": 9300.0, "b": 20240.0}
BORROWED = {"a": 260.0, "b": 5840.0}
ON_OTHERS_HARDWARE = {"a": 4520.0, "b": 7440.0}
LENT = {"a": 7440.0, "b": 4520.0}
LOST = {"a": 520.0, "b": 0.0}
JOB_ON_OTHERS_HARDWARE = {"a2": 520.0, "b3": 5040.0, "b5": 2400.0, "a4": 4000.0}
JOB_LOST = {"a2": 520.0}
JOB_END = {"a1": 130, "a2": 530, "b1": 630, "b2": 2000, "b3": 1930, "a3": 1530}
JOB_END |= {"b4": 2200, "b5": 2400, "a4": 2750}

# The bill's summary columns for the glossary's words. With no purchased GPUs, all use
# of others' hardware is charged and all that was lent is credited.
BILL_USED_ON_OTHERS_HARDWARE = "used_on_others_charged_gpu_hours"
BILL_LENT = "lent_gpu_hours"
BILL_LENT_BILLED = "lent_credited_gpu_hours"
BILL_LOST = "reclaim_lost_gpu_hours"


def write_inputs(folder: Path) -> tuple[Path, Path, Path]:
    paths = (folder / "policy.yaml", folder / "cluster.yaml", folder / "trace.csv")
    for path, text in zip(paths, (POLICY, CLUSTER, TRACE), strict=True):
        path.write_text(text)
    return paths


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("glossary")
    policy, cluster, trace = write_inputs(folder)
    args = ["simulate", "--policy", str(policy), "--cluster", str(cluster)]
    args += ["--trace", str(trace), "--start", "2026-10-01T00:00:00+00:00"]
    args += ["--out", str(folder / "out"), "--no-standalone"]
    try:
        main(args)
    except SystemExit as exc:
        assert not exc.code, f"fairpool simulate exited {exc.code}"
    return folder / "out"


def approx(seconds: float) -> object:
    """summary.json rounds to 6 decimals."""
    return pytest.approx(seconds / H, abs=2e-6)


def test_summary_json_per_member_and_overall(out: Path) -> None:
    summary = json.loads((out / "summary.json").read_text())
    for name, member in summary["members"].items():
        assert member["gpu_hours_used"] == approx(USED[name])
        assert member["gpu_hours_borrowed"] == approx(BORROWED[name])
        assert member["gpu_hours_used_on_others_hardware"] == approx(ON_OTHERS_HARDWARE[name])
        assert member["gpu_hours_lent"] == approx(LENT[name])
        assert member["gpu_hours_lost_to_reclaim"] == approx(LOST[name])
    assert summary["gpu_hours_borrowed"] == approx(260 + 5840)
    assert summary["gpu_hours_used_on_others_hardware"] == approx(11960)
    assert summary["gpu_hours_lent"] == approx(11960)
    assert summary["gpu_hours_lost_to_reclaim"] == approx(520)
    assert summary["utilization"] == pytest.approx(24340 / (16 * 2250), abs=1e-6)
    assert summary["utilization_while_pending"] == pytest.approx(5580 / (16 * 360), abs=1e-6)
    assert summary["makespan_s"] == 2750


def test_lent_and_used_on_others_hardware_add_up_over_the_pool(out: Path) -> None:
    summary = json.loads((out / "summary.json").read_text())
    members = summary["members"].values()
    lent = sum(m["gpu_hours_lent"] for m in members)
    elsewhere = sum(m["gpu_hours_used_on_others_hardware"] for m in members)
    assert lent == pytest.approx(elsewhere, abs=1e-6)
    assert lent == approx(11960)


def test_members_table(out: Path) -> None:
    table = pd.read_csv(out / "members.csv").set_index("member")
    for name in ("a", "b"):
        row = table.loc[name]
        assert row["gpu_hours_borrowed"] == pytest.approx(BORROWED[name] / H)
        assert row["gpu_hours_used_on_others_hardware"] == pytest.approx(
            ON_OTHERS_HARDWARE[name] / H
        )
        assert row["gpu_hours_lent"] == pytest.approx(LENT[name] / H)
        assert row["gpu_hours_lost_to_reclaim"] == pytest.approx(LOST[name] / H)


def test_jobs_table(out: Path) -> None:
    jobs = pd.read_csv(out / "jobs.csv").set_index("job_id")
    assert "borrowed" not in jobs.columns
    for job_id, row in jobs.iterrows():
        assert row["end_s"] == JOB_END[str(job_id)], job_id
        expected = JOB_ON_OTHERS_HARDWARE.get(str(job_id), 0.0)
        assert row["used_on_others_hardware_gpu_s"] == pytest.approx(expected), job_id
        assert row["lost_gpu_s"] == pytest.approx(JOB_LOST.get(str(job_id), 0.0)), job_id
    assert jobs.loc["b3", "preemptions"] == 1, "checkpointable: preempted, yet nothing lost"
    by_member = jobs.groupby("member")["used_on_others_hardware_gpu_s"].sum()
    assert by_member.to_dict() == pytest.approx(ON_OTHERS_HARDWARE)


def test_engine_shares_at_the_reclaim_of_a2(tmp_path: Path) -> None:
    """At t=100 (b1 arrives): a holds a1 (6, own node) and a2 (4, b's node)."""
    policy_path, cluster_path, trace_path = write_inputs(tmp_path)
    policy = load_policy(policy_path)
    nodes = build_nodes(load_inventory(cluster_path))
    trace = read_trace(trace_path, members=set(policy.member_names()))
    seen: dict[float, tuple[MemberShare, ...]] = {}

    def engine(snapshot: Snapshot, pol: Policy) -> Decisions:
        decisions = schedule(snapshot, pol)
        seen[snapshot.now] = decisions.shares
        return decisions

    Simulator(nodes, policy, trace, engine).run()
    shares = {s.member: s for s in seen[100.0]}
    a, b = shares["a"], shares["b"]
    assert (a.entitlement, a.allocated, a.borrowed, a.reclaimable, a.lent) == (8, 10, 2, 4, 0)
    assert (b.entitlement, b.allocated, b.borrowed, b.reclaimable, b.lent) == (8, 0, 0, 0, 4)
    assert b.pending == 8
    # At t=1200 (a3 arrives) b holds b2 (own node) and b3 (a's node): whole pods, equal.
    b = {s.member: s for s in seen[1200.0]}["b"]
    assert (b.allocated, b.borrowed, b.reclaimable) == (16, 8, 8)


def test_bill_settles_use_of_others_hardware_and_lent(out: Path) -> None:
    bill = pd.read_csv(out / "report" / "summary.csv").set_index("member")
    for name in ("a", "b"):
        row = bill.loc[name]
        # summary.csv gives GPU-hours to 6 decimals, as the JSON invoices do.
        assert row[BILL_USED_ON_OTHERS_HARDWARE] == pytest.approx(
            ON_OTHERS_HARDWARE[name] / H, abs=5e-7
        )
        assert row[BILL_LENT] == pytest.approx(LENT[name] / H, abs=5e-7)
        assert row[BILL_LENT_BILLED] == pytest.approx(LENT[name] / H, abs=5e-7)
        assert row[BILL_LOST] == pytest.approx(LOST[name] / H, abs=5e-7)
    # At 2.00 per GPU-hour: a pays b 4520 GPU-s, b pays a 7440 GPU-s.
    settlement = pd.read_csv(out / "report" / "settlement.csv", index_col=0, dtype=str)
    assert settlement.loc["a", "b"] == f"{2.0 * 4520 / H:.2f}" == "2.51"
    assert settlement.loc["b", "a"] == f"{2.0 * 7440 / H:.2f}" == "4.13"


def test_lost_work_keeps_its_cause_into_the_bill(out: Path) -> None:
    """b takes its node back for b1 within its entitlement: a2's lost work is an owner's
    reclaim (cause `entitlement`), in the simulator's table and in the bill alike."""
    lost = pd.read_parquet(out / "reclaim_lost.parquet")
    by_cause = lost.groupby("cause")["gpu_seconds_lost"].sum().to_dict()
    assert by_cause == pytest.approx({"entitlement": LOST["a"]})
    bill = pd.read_csv(out / "report" / "summary.csv").set_index("member")
    assert bill.loc["a", "reclaim_lost_entitlement_gpu_hours"] == pytest.approx(
        LOST["a"] / H, abs=5e-7
    )
    for cause in ("fair_share", "consolidation"):
        assert bill.loc["a", f"reclaim_lost_{cause}_gpu_hours"] == 0.0
    assert bill.loc["b", "reclaim_lost_entitlement_gpu_hours"] == 0.0


def test_the_only_dividend_in_the_bill_is_the_pooling_dividend(out: Path) -> None:
    bill = pd.read_csv(out / "report" / "summary.csv")
    dividends = [c for c in bill.columns if "dividend" in c]
    assert dividends == ["pooling_dividend_gpu_hours"]
    # --no-standalone: there is no standalone replay to subtract, so no pooling dividend
    assert bill["pooling_dividend_gpu_hours"].isna().all()
