"""The simulator on tiny clusters, every number worked out by hand.

Two members a and b each own one 4-GPU node of model G; grace period 30 s."""

from __future__ import annotations

from dataclasses import replace

import pytest

from policies.model import Policy
from scheduler.cli.simulate import sold_words, waiting_line
from scheduler.engine.cycle import schedule
from scheduler.engine.decisions import PREEMPTION_CAUSES, Decisions
from scheduler.engine.snapshot import Snapshot
from scheduler.sim import metrics
from scheduler.sim.pipeline import build_study
from scheduler.sim.simulator import JobState, SimulationResult, Simulator
from scheduler.sim.standalone import member_trace, replay_all
from tests.unit.test_sim_helpers import MODEL, START, job, node, policy, trace

NODES = (node("a-0", "a", 4), node("b-0", "b", 4))


def run(pol: object, *jobs: object) -> SimulationResult:
    return Simulator(NODES, pol, trace(*jobs)).run()  # type: ignore[arg-type]


def borrow_then_reclaim(checkpointable: bool = False) -> SimulationResult:
    # a1 runs on a's node; a2 borrows b's idle node. b1 arrives at t=100: b is below its
    # entitlement and nothing is free, so a2 (borrowed, on b's node) is preempted at
    # t=100, gone at t=130, b1 starts at 130 and ends at 630; a2 starts again at 630 on
    # b's node (the only free one).
    pol = policy({"a": {"checkpointable": checkpointable}, "b": {}})
    return run(
        pol,
        job("a1", "a", 0, 1000, 4),
        job("a2", "a", 0, 1000, 4),
        job("b1", "b", 100, 500, 4),
    )


def test_borrowing_then_reclaim_by_hand() -> None:
    result = borrow_then_reclaim()
    a1, a2, b1 = (result.jobs[j] for j in ("a1", "a2", "b1"))
    assert all(r.state is JobState.DONE for r in (a1, a2, b1))
    assert (a1.first_start, a1.end, a1.nodes) == (0, 1000, ("a-0",))
    assert (a2.first_start, a2.preemptions, a2.end) == (0, 1, 630 + 1000)
    assert a2.node_owners == ("b",)
    # On b's node over [0,130) and [630,1630): 4 x 1130 GPU-s on others' hardware.
    assert a2.used_on_others_hardware_gpu_s == pytest.approx(4 * 1130)
    assert (b1.first_start, b1.end, b1.nodes) == (130, 630, ("b-0",))
    # a2 ran 130 s on 4 GPUs (grace period included) and restarts from zero.
    assert a2.lost_gpu_s == pytest.approx(4 * 130)
    assert result.end_time == 1630
    assert sum(r.gpu_seconds for r in result.lost) == pytest.approx(520)

    study = build_study(result.policy, START, result, None)
    m = study.summary["members"]
    # a: a1 4x1000 + a2 4x130 (lost) + a2 4x1000 = 8520 GPU-s; b: 4x500 = 2000.
    assert m["a"]["gpu_hours_used"] == pytest.approx(8520 / 3600, abs=1e-6)
    assert m["b"]["gpu_hours_used"] == pytest.approx(2000 / 3600, abs=1e-6)
    # a is above its entitlement of 4 on [0,130) and [630,1000): 4 x 500 GPU-s.
    assert m["a"]["gpu_hours_borrowed"] == pytest.approx(2000 / 3600, abs=1e-6)
    # b's node carries a2 on [0,130) and [630,1630): 4 x 1130 GPU-s lent.
    assert m["b"]["gpu_hours_lent"] == pytest.approx(4520 / 3600, abs=1e-6)
    assert m["a"]["gpu_hours_lent"] == 0
    assert m["a"]["gpu_hours_lost_to_reclaim"] == pytest.approx(520 / 3600, abs=1e-6)
    assert m["a"]["mean_wait_s"] == 0 and m["a"]["mean_jct_s"] == pytest.approx(1315)
    assert m["b"]["mean_wait_s"] == pytest.approx(30) and m["b"]["mean_jct_s"] == 500 + 30
    assert m["a"]["preemptions"] == 1 and study.summary["preemptions"] == 1
    # Submissions span [0, 100]: all 8 GPUs are held then; b1 waits on [100, 130) with
    # all 8 held (a2 in its grace period); the last job ends at 1630.
    assert study.summary["utilization"] == 1.0
    assert study.summary["utilization_while_pending"] == 1.0
    assert study.summary["makespan_s"] == 1630
    # b's 30 s below its entitlement is the grace period: not a violation.
    assert study.summary["entitlement_violation_gpu_s"] == 0


def test_checkpointable_job_resumes() -> None:
    result = borrow_then_reclaim(checkpointable=True)
    a2 = result.jobs["a2"]
    # 100 s of work done when preempted: 900 s left, restarted at 630.
    assert (a2.preemptions, a2.end) == (1, 630 + 900)
    # A checkpointable member loses nothing (its grace period is spent checkpointing).
    assert a2.lost_gpu_s == 0 and result.lost == []


def test_a_job_says_whether_it_resumes_whatever_its_member_says() -> None:
    """The trace's `checkpointable` of a job wins over its member's setting."""
    resumes = replace(job("a2", "a", 0, 1000, 4), checkpointable=True)
    result = run(policy(), job("a1", "a", 0, 1000, 4), resumes, job("b1", "b", 100, 500, 4))
    a2 = result.jobs["a2"]
    assert (a2.preemptions, a2.end, a2.lost_gpu_s) == (1, 630 + 900, 0)
    restarts = replace(job("a2", "a", 0, 1000, 4), checkpointable=False)
    pol = policy({"a": {"checkpointable": True}, "b": {}})
    result = run(pol, job("a1", "a", 0, 1000, 4), restarts, job("b1", "b", 100, 500, 4))
    a2 = result.jobs["a2"]
    assert (a2.preemptions, a2.end) == (1, 630 + 1000)
    assert a2.lost_gpu_s == pytest.approx(4 * 130)


def test_gang_starts_whole_or_waits() -> None:
    # b1 holds b's node until t=100; a's 2x4 gang (submitted at t=10) needs both nodes.
    # It must not start on a's node alone, and b1 is within b's entitlement (no reclaim).
    result = run(
        policy(),
        job("b1", "b", 0, 100, 4),
        job("g", "a", 10, 50, 4, pods=2),
    )
    g = result.jobs["g"]
    assert (g.first_start, g.end) == (100, 150)
    assert sorted(g.nodes) == ["a-0", "b-0"]
    runs = [r for r in result.pod_runs if r.job_id == "g"]
    assert len(runs) == 2 and {(r.start, r.end) for r in runs} == {(100, 150)}


def test_job_finishing_within_its_grace_period_completes() -> None:
    # a2 borrows b's node and would end at 110; b1 arrives at 100 and preempts it with a
    # 30 s grace period, so a2 finishes at 110 anyway, without losing anything.
    result = run(
        policy(),
        job("a1", "a", 0, 1000, 4),
        job("a2", "a", 0, 110, 4),
        job("b1", "b", 100, 50, 4),
    )
    a2, b1 = result.jobs["a2"], result.jobs["b1"]
    assert (a2.state, a2.end, a2.preemptions, a2.lost_gpu_s) == (JobState.DONE, 110, 1, 0)
    assert (b1.first_start, b1.end) == (110, 160)


def test_standalone_replay_by_hand() -> None:
    pol = policy()
    jobs = trace(
        job("a1", "a", 0, 1000, 4),
        job("a2", "a", 0, 1000, 4),
        job("a3", "a", 0, 10, 8),  # 8 GPUs never fit a's one 4-GPU node
        job("b1", "b", 100, 500, 4),
    )
    alone = replay_all(NODES, pol, jobs, ["a", "b"])
    # a alone: a1 on [0,1000), a2 on [1000,2000); a3 never runs. b alone: b1 [100,600).
    assert alone["a"].never_runs == ("a3",)
    assert alone["a"].jct_s == {"a1": 1000, "a2": 2000}
    assert alone["b"].jct_s == {"b1": 500} and alone["b"].wait_s == {"b1": 0}


def test_a_job_above_its_members_max_gpus_never_runs_standalone_and_says_so() -> None:
    """It fits the member's node, so it was not in `never_runs`, yet its maxGpus kept it
    waiting the whole standalone replay: left out of the standalone figures without a
    word (`standalone_runs` true, no standalone JCT, not counted as never running)."""
    pol = policy({"a": {"maxGpus": 2}, "b": {}})
    jobs = trace(job("a1", "a", 0, 1000, 1), job("big", "a", 0, 60, 4))
    alone = replay_all(NODES, pol, jobs, ["a"])
    assert alone["a"].never_runs == ("big",)
    assert alone["a"].jct_s == {"a1": 1000}


def test_standalone_replays_same_in_any_process() -> None:
    """With 1 or 2 worker processes beside this one, and this one taking over the
    replays no worker started, every member's replay is what it is in this process
    alone, and each is reported done once."""
    nodes = (*NODES, node("c-0", "c", 4), node("d-0", "d", 4))
    jobs = trace(
        *(
            job(f"{m}{k}", m, 10 * k, 100 + 50 * k, 2 + 2 * (k % 2))
            for m in "abcd"
            for k in range(6)
        )
    )
    members = ["a", "b", "c", "d"]
    pol = policy({m: {} for m in members})
    here = replay_all(nodes, pol, jobs, members)
    for processes in (2, 3):
        done: list[str] = []
        spread = replay_all(nodes, pol, jobs, members, processes=processes, on_done=done.append)
        assert sorted(done) == members
        assert spread == here


def test_a_worker_is_sent_its_members_jobs_alone_in_trace_order() -> None:
    """What a standalone replay is sent to a worker: its member's jobs in the trace's
    order, with the trace's start (the replay reads nothing else of the trace)."""
    jobs = replace(
        trace(job("a1", "a", 0, 100, 4), job("b1", "b", 5, 100, 4), job("a2", "a", 9, 50, 2)),
        start_epoch=1.0e9,
    )
    mine = member_trace(jobs, "a")
    assert [j.job_id for j in mine.jobs] == ["a1", "a2"]
    assert mine.start_epoch == 1.0e9
    assert member_trace(jobs, "c").jobs == ()


def test_pooling_dividend_is_work_done_not_lost_work() -> None:
    # a1 runs on a's node, a2 borrows b's idle node: both end by t=1500. b1 comes at
    # t=2000, the last submission, when everything is free: nothing is ever reclaimed.
    # Standalone a runs a1 [0,1000) then a2 [1000,2500).
    pol = policy()
    jobs = trace(
        job("a1", "a", 0, 1000, 4),
        job("a2", "a", 0, 1500, 4),
        job("b1", "b", 2000, 500, 4),
    )
    result = Simulator(NODES, pol, jobs).run()
    alone = replay_all(NODES, pol, jobs, ["a", "b"])
    study = build_study(pol, START, result, alone)
    m = study.summary["members"]
    assert m["a"]["standalone_mean_jct_s"] == pytest.approx(1750)
    assert m["b"]["standalone_mean_jct_s"] == pytest.approx(500)
    # Work done by t=2000: pooled 4x1000 + 4x1500; standalone only a1, 4x1000.
    assert m["a"]["pooling_dividend_gpu_hours"] == pytest.approx(6000 / 3600, abs=1e-6)
    assert m["b"]["pooling_dividend_gpu_hours"] == pytest.approx(0, abs=1e-6)
    # Nothing was lost to reclaim, and a used 10,000 GPU-s over [0, 2500] both ways, so
    # neither lost work nor used GPU-hours would have shown the dividend.
    assert m["a"]["gpu_hours_lost_to_reclaim"] == 0
    assert m["a"]["gpu_hours_used"] == pytest.approx(10000 / 3600, abs=1e-6)
    # Same jobs: pooled JCTs 1000, 1500 against 1000, 2500 standalone.
    assert m["a"]["jct_ratio_mean"] == pytest.approx(1250 / 1750, abs=1e-6)
    assert m["a"]["jct_ratio_p95"] == pytest.approx(1475 / 2425, abs=1e-6)
    assert m["a"]["share_jobs_finished_later"] == 0
    assert m["a"]["worse_off_pooled"] is False
    assert study.summary["members_worse_off_pooled"] == 0
    assert m["a"]["standalone_never_runs"] == 0
    assert study.jobs.set_index("job_id").loc["a2", "standalone_jct_s"] == 2500


def test_a_reclaimed_job_waits_again_with_its_reclaim_time() -> None:
    """The snapshot says when a job waiting again was reclaimed: a2 is preempted at
    t=100 (gone at 130) and waits until 630 carrying reclaimed_at=100; a job never
    reclaimed carries None."""
    seen: dict[tuple[float, str], tuple[int, float | None]] = {}

    def engine(snapshot: Snapshot, pol: Policy) -> Decisions:
        for waiting in snapshot.pending:
            seen[(snapshot.now, waiting.job_id)] = (waiting.reclaims, waiting.reclaimed_at)
        return schedule(snapshot, pol)

    pol = policy()
    Simulator(
        NODES,
        pol,
        trace(job("a1", "a", 0, 1000, 4), job("a2", "a", 0, 1000, 4), job("b1", "b", 100, 500, 4)),
        engine,
    ).run()
    assert seen[(0.0, "a2")] == (0, None)
    assert seen[(100.0, "b1")] == (0, None)
    assert seen[(130.0, "a2")] == (1, 100.0)
    assert seen[(630.0, "a2")] == (1, 100.0)


def test_lost_work_is_split_by_who_preempted_it() -> None:
    # An owner taking back its node: b1 keeps b within its entitlement, so a2's 4 x 130
    # GPU-s count to the entitlement.
    owner = borrow_then_reclaim()
    assert owner.lost_by_cause_gpu_s == {("a", "entitlement"): 520}
    s = build_study(owner.policy, START, owner, None).summary
    assert s["reclaim_lost_entitlement_gpu_h"] == pytest.approx(520 / 3600, abs=1e-6)
    assert s["reclaim_lost_fair_share_gpu_h"] == 0
    # The member whose work it was carries it too; b lost nothing.
    assert s["members"]["a"]["reclaim_lost_entitlement_gpu_h"] == pytest.approx(
        520 / 3600, abs=1e-6
    )
    assert all(s["members"]["b"][f"reclaim_lost_{c}_gpu_h"] == 0 for c in PREEMPTION_CAUSES)
    # A member below its fair share: a, b and c own a 4-GPU node each; b runs nothing,
    # so a (a1 on its node, a2 and a3 of 2 GPUs on b's) and c (c1 on its node) have a
    # fair share of 6 each. c2 (2 GPUs, t=100) takes c to 6, beyond its entitlement of 4
    # but not its fair share, and a holds 8: a2 is preempted at 100 (a keeps its 6),
    # gone at 130. Its 2 x 130 GPU-s count to the fair share, and the CLI says so.
    nodes = (node("a-0", "a", 4), node("b-0", "b", 4), node("c-0", "c", 4))
    fair = Simulator(
        nodes,
        policy({"a": {}, "b": {}, "c": {}}),
        trace(
            job("a1", "a", 0, 1000, 4),
            job("a2", "a", 0, 1000, 2),
            job("a3", "a", 0, 1000, 2),
            job("c1", "c", 0, 1000, 4),
            job("c2", "c", 100, 500, 2),
        ),
    ).run()
    assert (fair.jobs["a2"].preemptions, fair.jobs["c2"].first_start) == (1, 130)
    assert fair.lost_by_cause_gpu_s == {("a", "fair_share"): 260}
    s = build_study(fair.policy, START, fair, None).summary
    parts = sum(s[f"reclaim_lost_{cause}_gpu_h"] for cause in PREEMPTION_CAUSES)
    assert parts == pytest.approx(s["members"]["a"]["gpu_hours_lost_to_reclaim"], abs=1e-6)
    assert (
        "of GPU-hours used (by who preempted it: owners taking back their entitlement 0%, "
        "members below their fair share 100%, moves 0%)" in waiting_line(s)
    )
    # Nothing lost, nothing said.
    quiet = build_study(fair.policy, START, run(policy(), job("a1", "a", 0, 10, 1)), None)
    assert "by who preempted it" not in waiting_line(quiet.summary)


def test_pooling_dividend_negative_when_pooling_delays_own_work() -> None:
    # a's 8-GPU gang borrows both nodes at t=0; b1 (4 GPUs, 600 s) comes at t=100 and
    # reclaims: the gang is preempted, gone at t=130, and restarts from zero at 730
    # (after b1), ending at 2730. b's last submission b2 at t=3000 ends the window.
    # Standalone b runs b1 [100,700): both ways b1 is done by 3000, so b's dividend is 0;
    # a's gang cannot fit a's 4-GPU node alone, so it never runs standalone: the
    # pooled gang's 8x2000 GPU-s are all dividend.
    pol = policy()
    jobs = trace(
        job("a1", "a", 0, 2000, 4, pods=2),
        job("b1", "b", 100, 600, 4),
        job("b2", "b", 3000, 10, 1),
    )
    result = Simulator(NODES, pol, jobs).run()
    assert result.jobs["a1"].preemptions == 1 and result.jobs["a1"].end == 2730
    alone = replay_all(NODES, pol, jobs, ["a", "b"])
    study = build_study(pol, START, result, alone)
    m = study.summary["members"]
    assert m["a"]["pooling_dividend_gpu_hours"] == pytest.approx(16000 / 3600, abs=1e-6)
    assert m["a"]["gpu_hours_lost_to_reclaim"] == pytest.approx(8 * 130 / 3600, abs=1e-6)
    assert m["b"]["pooling_dividend_gpu_hours"] == pytest.approx(0, abs=1e-6)
    # Lost 8 x 130 GPU-s out of 8 x 130 + 8 x 2000 used.
    assert m["a"]["reclaim_lost_fraction"] == pytest.approx(130 / 2130, abs=1e-6)
    assert m["a"]["preemptions_per_job_max"] == 1


def test_a_seller_worse_off_pooled_is_named_with_what_it_sold() -> None:
    # b buys 2 GPUs, carved out of a's node: a is entitled to 2 pooled, and b's jobs
    # within its 6 take 2 of a's GPUs at t=0, so a's 4-GPU job waits until 1000 and ends
    # after the window (b3 at 1500). Standalone a runs on all 4 of its GPUs at once.
    pol = policy({"a": {}, "b": {"purchased": {MODEL: 2}}})
    jobs = trace(
        job("a1", "a", 0, 1000, 4),
        job("b1", "b", 0, 1000, 4),
        job("b2", "b", 0, 1000, 2),
        job("b3", "b", 1500, 10, 1),
    )
    result = Simulator(NODES, pol, jobs).run()
    assert result.jobs["a1"].end == 2000
    study = build_study(pol, START, result, replay_all(NODES, pol, jobs, ["a", "b"]))
    assert study.summary["members"]["a"]["worse_off_pooled"] is True
    assert sold_words(study) == {
        "a": f"sold 2 of its 4 {MODEL} GPUs through purchases, which its standalone replay keeps"
    }
    line = waiting_line(study.summary, sold_words(study))
    assert line.endswith(
        f"members worse off pooled 1 (a: sold 2 of its 4 {MODEL} GPUs through purchases, "
        "which its standalone replay keeps)"
    )
    # Told of no sale, the line names the member only.
    assert waiting_line(study.summary).endswith("members worse off pooled 1 (a)")


def test_time_to_entitlement_of_a_reclaim() -> None:
    # b1 could use b's entitlement from t=100 (b holds nothing, its node is empty when
    # the borrowed a2 is gone); it starts at 130, after the 30 s grace period.
    result = borrow_then_reclaim()
    assert result.entitlement_episodes == [("b", MODEL, 100.0, 130.0)]
    study = build_study(result.policy, START, result, None)
    s = study.summary
    assert s["time_to_entitlement_max_s"] == 30
    assert s["members"]["b"]["time_to_entitlement_p99_s"] == 30
    assert s["members"]["a"]["time_to_entitlement_episodes"] == 0
    # Work waited over [100, 630) (b1, then the restarted a2), and nothing was idle: a2's
    # pods held b's node in their grace period, then a1 and b1 filled both nodes.
    assert s["idle_while_waiting_gpu_h"] == 0
    assert s["capacity_gpu_h_while_pending"] == pytest.approx(8 * 530 / 3600, abs=1e-6)
    # a2: 4 x 130 lost out of 8520 used by a; 520 of the pool's 10520.
    assert s["reclaim_lost_fraction"] == pytest.approx(520 / 10520, abs=1e-6)
    assert s["preemptions_per_job_max"] == 1


def test_time_to_entitlement_past_the_allowance_behind_a_job_at_the_reclaim_limit() -> None:
    # With maxReclaimsPerJob 0 every job is at the limit from the start: a2 borrows b's
    # idle node at t=0 (b is quiet) and is never a victim, so b1 (t=100, within b's
    # entitlement) waits until a1 and a2 end at 1000. The allowance is 30 + 0 + 60 s.
    pol = policy(sharing={"maxReclaimsPerJob": 0})
    result = run(
        pol,
        job("a1", "a", 0, 1000, 4),
        job("a2", "a", 0, 1000, 4),
        job("b1", "b", 100, 500, 4),
    )
    assert result.jobs["a2"].nodes == ("b-0",) and result.jobs["a2"].preemptions == 0
    assert result.jobs["b1"].first_start == 1000
    assert result.entitlement_episodes == [("b", MODEL, 100.0, 1000.0)]
    assert result.owed_past_allowance == [("b", MODEL, 100.0, 1000.0, "reclaim_limit")]
    s = build_study(pol, START, result, None).summary
    assert s["time_to_entitlement_allowance_s"] == 90
    assert s["time_to_entitlement_past_allowance_episodes"] == 1
    assert s["time_to_entitlement_past_allowance_reclaim_limit_h"] == pytest.approx(810 / 3600)
    assert s["time_to_entitlement_past_allowance_borrowed_h"] == 0
    # With the default limit the same jobs wait 30 s (the grace period): within it.
    assert borrow_then_reclaim().owed_past_allowance == []


def test_time_to_entitlement_past_the_allowance_behind_a_bigger_job_at_the_limit() -> None:
    # a's 2 x 4 gang is bigger than a's entitlement of 4: at the limit from the start
    # (maxReclaimsPerJob 0) and with no window it borrows b's node at once, so b1 (t=100)
    # waits until the gang ends at 1000. The window let it there, not a quiet owner as in
    # the test above: the wait gets the other cause.
    pol = policy(sharing={"maxReclaimsPerJob": 0, "reclaimLimitWindowSeconds": 0})
    result = run(pol, job("gang", "a", 0, 1000, 4, pods=2), job("b1", "b", 100, 500, 4))
    assert result.jobs["gang"].nodes == ("a-0", "b-0")
    assert result.owed_past_allowance == [("b", MODEL, 100.0, 1000.0, "reclaim_limit_bigger")]
    s = build_study(pol, START, result, None).summary
    assert s["time_to_entitlement_past_allowance_reclaim_limit_bigger_h"] == pytest.approx(
        810 / 3600
    )
    assert s["time_to_entitlement_past_allowance_reclaim_limit_h"] == 0


def test_no_time_to_entitlement_while_only_the_members_own_work_is_in_the_way() -> None:
    # a's 1-GPU jobs end up on both of its 4-GPU nodes (j4, j5 on a-0, j6 on a-1, each
    # running for hours), so its 4-GPU job `big` waits from 30000 until a-0 empties. No
    # other member holds anything: that wait is a's own fragmentation, which no reclaim
    # could undo (moving j5 or j6 would throw away more than a move's bound), so it
    # is no owed episode, although a holds 3 of its 8 and its empty nodes would fit big.
    nodes = (node("a-0", "a", 4), node("a-1", "a", 4))
    jobs = trace(
        job("j1", "a", 0, 1_000, 1),
        job("j2", "a", 0, 30_000, 1),
        job("j3", "a", 0, 30_000, 1),
        job("k", "a", 1, 9_999, 4),
        job("j4", "a", 2, 50_000, 1),
        job("j5", "a", 3, 50_000, 1),
        job("j6", "a", 50, 50_000, 1),
        job("big", "a", 30_000, 10, 4),
    )
    result = Simulator(nodes, policy(), jobs).run()
    placed = {j: r.nodes for j, r in result.jobs.items()}
    assert placed["j4"] == placed["j5"] == ("a-0",) and placed["j6"] == ("a-1",)
    assert result.jobs["big"].start == 51_000  # when j4 and j5 have ended
    assert result.entitlement_episodes == []


def test_idle_while_waiting_from_fragmentation() -> None:
    # x1 and x2 take 3 GPUs of each 4-GPU node; y (2 GPUs, t=10) finds 2 free GPUs in
    # total but 1 per node: fragmentation, 2 GPUs x 990 s, until both end at 1000.
    # a holds 3 of its 4: y would borrow, and b is within its entitlement, so no reclaim.
    result = run(
        policy(),
        job("x1", "a", 0, 1000, 3),
        job("x2", "b", 0, 1000, 3),
        job("y", "a", 10, 500, 2),
    )
    assert result.jobs["y"].first_start == 1000
    idle = result.idle_while_waiting_gpu_s
    assert idle["fragmentation"] == pytest.approx(2 * 990)
    assert sum(idle.values()) == pytest.approx(2 * 990)
    # a holds 3 against a fair share of 5 (b asks for 3 of the 8): consolidation is for
    # y, though it finds nothing to move (x2 is within b's entitlement).
    assert result.fragmentation_claimable_gpu_s == pytest.approx(2 * 990)
    assert result.capacity_gpu_s_while_pending == pytest.approx(8 * 990)
    assert result.entitlement_episodes == []
    study = build_study(result.policy, START, result, None)
    s = study.summary
    assert s["idle_while_waiting_fragmentation_gpu_h"] == pytest.approx(1980 / 3600, abs=1e-6)
    assert s["idle_while_waiting_fragmentation_claimable_gpu_h"] == pytest.approx(
        1980 / 3600, abs=1e-6
    )
    # The identity: allocated + idle = capacity over the instants work waits.
    assert s["utilization_while_pending"] == pytest.approx(6 / 8)


def test_usage_rows_split_at_hour_boundaries() -> None:
    # One 2-GPU job from t=3000 to t=4200 crosses the first UTC hour boundary.
    result = Simulator(NODES, policy(), trace(job("a1", "a", 3000, 1200, 2))).run()
    study = build_study(result.policy, START, result, None)
    usage = study.usage
    assert list(usage["gpu_seconds"]) == [2 * 600, 2 * 600]
    assert [str(h) for h in usage["hour"]] == [
        "2026-10-01 00:00:00+00:00",
        "2026-10-01 01:00:00+00:00",
    ]
    assert set(usage["owner"]) == {"a"} and usage["coverage"].eq(1.0).all()
    assert usage["utilization"].isna().all()


def test_usage_history_decays_with_half_life() -> None:
    # One 4-GPU job for 3600 s with a 1 h half-life: decayed usage at t=3600 is
    # 4 * 3600 / ln 2 * (1 - 1/2) GPU-s; it is what the engine sees in usage_history.
    seen: list[dict[str, float]] = []
    from scheduler.engine import schedule

    def spy(snapshot, pol):  # type: ignore[no-untyped-def]
        seen.append(dict(snapshot.usage_history))
        return schedule(snapshot, pol)

    pol = policy(half_life=1.0)
    jobs = trace(job("a1", "a", 0, 3600, 4), job("b1", "b", 3600, 10, 4))
    Simulator(NODES, pol, jobs, spy).run()
    import math

    assert seen[-1]["a"] == pytest.approx(4 * 3600 / math.log(2) * 0.5)


def test_timeline_rows_record_changes() -> None:
    result = borrow_then_reclaim()
    frame = metrics.timeline_frame(result.timeline)
    a = frame[(frame["member"] == "a")]
    # a holds 8 GPUs from t=0 until its borrowed pod is gone at 130.
    assert a[a["time"] == 0]["allocated"].iloc[-1] == 8
    assert a[a["time"] == 130]["allocated"].iloc[-1] == 4
    b = frame[(frame["member"] == "b")]
    assert b[b["time"] == 100]["pending"].iloc[-1] == 4


def test_reclaim_waits_for_min_runtime_then_happens_at_once() -> None:
    # a2 borrows b's node at t=0; b1 arrives at 100 but a2 may not be preempted before
    # it has run 600 s. Nothing else happens until a2 turns 600 s old: the simulator
    # must still run a cycle then (as the daemon's idle cycle would). Preempted at 600,
    # gone at 630, b1 runs 630-1130.
    result = run(
        policy(min_runtime=600),
        job("a1", "a", 0, 5000, 4),
        job("a2", "a", 0, 5000, 4),
        job("b1", "b", 100, 500, 4),
    )
    b1, a2 = result.jobs["b1"], result.jobs["a2"]
    assert (b1.first_start, b1.end) == (630, 1130)
    assert a2.preemptions == 1 and a2.lost_gpu_s == pytest.approx(4 * 630)


def test_no_standalone_leaves_standalone_keys_empty() -> None:
    result = borrow_then_reclaim()
    study = build_study(result.policy, START, result, None)
    assert study.summary["standalone_mean_jct_s"] is None
    assert study.summary["pooling_dividend_gpu_hours"] is None
    assert study.summary["members"]["a"]["standalone_mean_jct_s"] is None


def test_livelock_guard_caps_preemptions_of_one_job() -> None:
    # An engine that (wrongly) preempts every job it sees running or just bound: the
    # job would restart forever. After 3 preemptions the guard stops carrying them
    # out, counts the refusals, and the job completes.
    from scheduler.engine import schedule
    from scheduler.engine.decisions import Decisions, Preemption

    def always_preempt(snapshot, pol):  # type: ignore[no-untyped-def]
        decided = schedule(snapshot, pol)
        victims = [(b.pod_uid, b.job_id) for b in decided.binds]
        victims += [(p.uid, p.job_id) for p in snapshot.running if not p.terminating]
        extra = tuple(
            Preemption(uid, job_id, "a", "b", "x", "test", 30, "fair_share")
            for uid, job_id in victims
        )
        return Decisions(decided.binds, extra, (), {}, decided.shares)

    jobs = trace(job("a1", "a", 0, 100, 4))
    result = Simulator(NODES, policy(), jobs, always_preempt, max_preemptions_per_job=3).run()
    a1 = result.jobs["a1"]
    assert a1.preemptions == 3 and a1.state is JobState.DONE
    assert a1.end == 3 * 30 + 100
    assert result.guard_trips >= 1


def test_livelock_guard_never_denies_an_owner_its_entitlement() -> None:
    # The borrow-then-reclaim case with a cap of 0 preemptions per job: b1 (b holds 0 + 4
    # <= its entitlement of 4) must still get b's node back at t=100, as by hand in
    # test_borrowing_then_reclaim_by_hand; before, the guard refused and b waited until
    # a2 ended at t=1000.
    pol = policy()
    jobs = trace(
        job("a1", "a", 0, 1000, 4), job("a2", "a", 0, 1000, 4), job("b1", "b", 100, 500, 4)
    )
    result = Simulator(NODES, pol, jobs, max_preemptions_per_job=0).run()
    assert (result.jobs["b1"].first_start, result.jobs["b1"].end) == (130, 630)
    assert (result.jobs["a2"].preemptions, result.jobs["a2"].end) == (1, 1630)
    assert (result.guard_trips, result.owed_overrides) == (0, 1)


def test_purchase_is_measured_against_the_engine_entitlement() -> None:
    # a owns two 4-GPU nodes; b owns nothing and bought 2 GPUs of G, which the engine
    # carves out of a's contribution: entitlements a 6, b 2 (not a 8, b 2).
    nodes = (node("a-0", "a", 4), node("a-1", "a", 4))
    pol = policy({"a": {}, "b": {"purchased": {MODEL: 2}}})
    result = Simulator(
        nodes,
        pol,
        trace(
            *(job(f"a{i}", "a", 0, 1000, 2) for i in range(1, 5)),
            job("b1", "b", 100, 500, 2),
        ),
    ).run()
    assert result.entitlement[("a", MODEL)] == 6
    assert result.entitlement[("b", MODEL)] == 2
    # b1 arrives at t=100 within its entitlement, nothing is free: one of a's jobs is
    # reclaimed (a holds 8 > 6), gone at 130; b1 runs [130,630); the victim restarts at
    # 630 from zero and ends at 1630.
    b1 = result.jobs["b1"]
    assert (b1.first_start, b1.end) == (130, 630)
    victims = [r for r in result.jobs.values() if r.preemptions]
    assert len(victims) == 1 and victims[0].end == 1630
    # The victim's member is above its (engine) entitlement when preempted.
    assert [(v.member, v.allocated, v.entitlement) for v in result.victims] == [("a", 8, 6)]

    study = build_study(result.policy, START, result, None)
    m = study.summary["members"]
    assert m["a"]["gpu_hours_entitled"] == pytest.approx(6 * 1630 / 3600, abs=1e-6)
    assert m["b"]["gpu_hours_entitled"] == pytest.approx(2 * 1630 / 3600, abs=1e-6)
    # a above 6: 8 GPUs on [0,130) (the victim holds its GPUs in its grace period) and on
    # [630,1000): 2 x (130 + 370) GPU-s borrowed; b never borrows.
    assert m["a"]["gpu_hours_borrowed"] == pytest.approx(1000 / 3600, abs=1e-6)
    assert m["b"]["gpu_hours_borrowed"] == 0
    # b waited 30 s, the grace period: not a violation.
    assert study.summary["entitlement_violation_gpu_s"] == 0


def test_owner_gets_its_nodes_back_from_a_borrowing_gang() -> None:
    # u owns u-0, u-1 and s owns s-0, s-1 (4 GPUs each; entitlements 8 and 8). s1 and s2
    # take 3 GPUs on each of s's nodes, so s's 2 x 4 gang (t=10) lands on u's idle
    # nodes: s holds 14. u1 (4 GPUs, t=100) keeps u within its entitlement, and only
    # 1 + 1 GPUs are free on s's nodes. Taking the gang takes s to 6 < 8, yet it runs on
    # u's own nodes and s is above its entitlement: it is preempted at 100, gone at 130,
    # u1 runs [130, 630); the gang restarts at 630 from zero. Before, u waited until s1
    # ended at 10000: 4 GPUs x 9900 s below its entitlement.
    nodes = (node("u-0", "u", 4), node("u-1", "u", 4), node("s-0", "s", 4), node("s-1", "s", 4))
    result = Simulator(
        nodes,
        policy({"u": {}, "s": {}}),
        trace(
            job("s1", "s", 0, 10_000, 3),
            job("s2", "s", 0, 10_000, 3),
            job("sg", "s", 10, 10_000, 4, pods=2),
            job("u1", "u", 100, 500, 4),
        ),
    ).run()
    u1, sg = result.jobs["u1"], result.jobs["sg"]
    assert (u1.first_start, u1.end) == (130, 630)
    assert (sg.first_start, sg.preemptions, sg.end) == (10, 1, 630 + 10_000)
    assert [(v.member, v.allocated, v.entitlement) for v in result.victims] == [("s", 14, 8)]
    # The borrower pays instead, briefly: s holds 6 < min(8, demand 14) while its gang
    # waits on [130, 630): 2 GPUs x 500 s (it needs 2 x 4, s's nodes have 1 + 1 free).
    study = build_study(result.policy, START, result, None)
    assert study.summary["entitlement_violation_gpu_s"] == pytest.approx(2 * 500)


def test_consolidation_moves_borrowed_work_and_is_counted_apart() -> None:
    # o owns two 4-GPU nodes and runs nothing; b's eight 1-GPU jobs fill them, and one
    # pair on each node ends at t=100: 4 GPUs free, 2 per node. a (below its fair share
    # of 4; b holds its whole demand, its fair share) submits a 4-GPU pod at t=200:
    # nothing may be reclaimed, but moving two of b's pods to the other node opens one.
    from tests.unit.engine_strategies import without_consolidation

    nodes = (node("o-0", "o", 4), node("o-1", "o", 4))
    ends = [100, 100, 10_000, 10_000] * 2
    jobs = trace(*(job(f"b{k}", "b", 0, ends[k], 1) for k in range(8)), job("a1", "a", 200, 500, 4))
    pol = policy({"a": {}, "b": {}, "o": {}})
    result = Simulator(nodes, pol, jobs).run()
    assert result.jobs["a1"].first_start == 230  # the moved pods' grace period
    moved = sorted(j for j, r in result.jobs.items() if r.consolidations)
    assert len(moved) == 2 and result.consolidation_preemptions == 2
    assert all(result.jobs[j].preemptions == 1 for j in moved)
    # The moved jobs restart from zero: their work counts as lost, like a reclaim's.
    assert all(result.jobs[j].lost_gpu_s == 230 for j in moved)
    study = build_study(pol, START, result, None)
    assert study.summary["consolidation_preemptions"] == 2
    assert study.summary["reclaim_lost_fraction"] > 0
    assert result.lost_by_cause_gpu_s == {("b", "consolidation"): 460}
    # Without consolidation a1 waits for b's pods to end.
    off = Simulator(nodes, without_consolidation(pol), jobs).run()
    assert off.jobs["a1"].first_start == 10_000 and off.consolidation_preemptions == 0


def test_the_next_move_comes_a_daemon_cycle_after_the_per_cycle_limit() -> None:
    # As above on four nodes: b's sixteen 1-GPU jobs, one pair per node ending at t=100,
    # leave 2 GPUs free on each. a1 and c1 (4 GPUs each) arrive at t=200 with
    # maxConsolidationsPerCycle 1: a1 gets the cycle's move, c1 the next cycle's. The
    # daemon's next cycle comes a second later; the simulator ran none until the first
    # move's grace period ended, so c1 started at 260 instead of 231.
    nodes = tuple(node(f"o-{i}", "o", 4) for i in range(4))
    ends = [100, 100, 10_000, 10_000] * 4
    jobs = trace(
        *(job(f"b{k}", "b", 0, ends[k], 1) for k in range(16)),
        job("a1", "a", 200, 500, 4),
        job("c1", "c", 200, 500, 4),
    )
    pol = policy({"a": {}, "b": {}, "c": {}, "o": {}}, sharing={"maxConsolidationsPerCycle": 1})
    result = Simulator(nodes, pol, jobs).run()
    assert result.consolidation_preemptions == 4
    assert result.jobs["a1"].first_start == 230
    assert result.jobs["c1"].first_start == 231


def test_the_simulated_daemon_cycle_is_the_daemon_s() -> None:
    from scheduler.k8s.daemon import DaemonConfig
    from scheduler.sim.simulator import DAEMON_CYCLE_S

    assert DaemonConfig().cycle_seconds == DAEMON_CYCLE_S


def test_a_move_waits_for_min_runtime_of_work_bound_within_entitlement() -> None:
    # a owns two 4-GPU nodes and fills them with eight 1-GPU jobs at t=0, all within its
    # entitlement (none reclaimable when bound); one pair on each node ends at t=100. a's
    # own 4-GPU job a9 arrives at t=200: moving two of a's small jobs opens a node, but
    # they may be moved only once they have run 600 s. Nothing arrives or ends then: the
    # simulator must still run a cycle at t=600 (the daemon's would), so a9 starts when
    # the moved pods' grace period ends, not when the small jobs end at t=10,000.
    nodes = (node("a-0", "a", 4), node("a-1", "a", 4))
    ends = [100, 100, 10_000, 10_000] * 2
    jobs = trace(*(job(f"a{k}", "a", 0, ends[k], 1) for k in range(8)), job("a9", "a", 200, 500, 4))
    result = Simulator(nodes, policy(min_runtime=600), jobs).run()
    assert result.consolidation_preemptions == 2
    assert result.jobs["a9"].first_start == 630


def test_a_job_at_the_reclaim_limit_borrows_again_when_its_window_ends() -> None:
    # a (no H100 entitlement, checkpointable) borrows b's node for a1 (4 GPUs, 1,800 s);
    # b takes it back at t=60, 300 and 360: a1 is at maxReclaimsPerJob (3). Bigger than
    # a's entitlement of 0, it may borrow busy b's nodes only reclaimLimitWindowSeconds
    # after its last reclaim, at t=360 + 43,200, long after b's last job ends (t=7,560).
    # No arrival or completion falls then: the simulator wakes itself, as the daemon's
    # idle cycle would notice, and a1 runs its remaining 1,500 s.
    h100 = "H"
    pol = policy(
        {"a": {"checkpointable": True}, "b": {"checkpointable": True}},
        models=(MODEL, h100),
        grace=0,
        half_life=1.0,
        sharing={"reclaimLimitWindowSeconds": 43200},
    )
    nodes = (node("a-0", "a", 2), node("b-0", "b", 8, h100), node("b-1", "b", 2, h100))
    jobs = trace(
        job("a1", "a", 0, 1800, 4, model=h100),
        job("b1", "b", 60, 300, 4, model=h100),
        job("b2", "b", 60, 7200, 8, model=h100),
        job("b3", "b", 60, 30, 4, model=h100),
        job("b4", "b", 300, 30, 4, model=h100),
    )
    result = Simulator(nodes, pol, jobs).run()
    a1 = result.jobs["a1"]
    assert a1.preemptions == 3 and result.jobs["b2"].end == 7560
    assert a1.state is JobState.DONE and a1.end == 360 + 43200 + 1500


def test_a_job_that_restarts_from_zero_borrows_again_when_its_window_ends() -> None:
    # a (no H100 entitlement, not checkpointable) borrows b's node b-0 for a1 (4 GPUs,
    # 1,800 s); b1 (8 GPUs) takes it back at t=60, once. a1 would lose its work again on
    # a node whose owner wants it, and bigger than a's entitlement of 0 it is kept off
    # b's nodes for reclaimLimitWindowSeconds after that reclaim: when b1 ends (t=7,260)
    # b's recent use (half-life 1 h) still says it wants them. No arrival or completion
    # falls at the window's end: the simulator wakes itself, and a1 runs from zero.
    h100 = "H"
    pol = policy(
        {"a": {"checkpointable": False}, "b": {}},
        models=(MODEL, h100),
        grace=0,
        half_life=1.0,
        sharing={"reclaimLimitWindowSeconds": 43200},
    )
    nodes = (node("a-0", "a", 2), node("b-0", "b", 8, h100), node("b-1", "b", 2, h100))
    jobs = trace(job("a1", "a", 0, 1800, 4, model=h100), job("b1", "b", 60, 7200, 8, model=h100))
    result = Simulator(nodes, pol, jobs).run()
    a1 = result.jobs["a1"]
    assert a1.preemptions == 1 and result.jobs["b1"].end == 7260
    assert a1.state is JobState.DONE and a1.end == 60 + 43200 + 1800
    # While a1 waits: b's 10 H100s idle from b1's end to the window's only because a1 is
    # kept off them (it fits b-0), b-1's 2 too few for it while b1 runs, a's 2 GPUs of
    # the other model all along.
    idle = result.idle_while_waiting_gpu_s
    assert idle["kept_off_wanted"] == 10 * (60 + 43200 - 7260)
    assert idle["placeable"] == 0
    assert idle["too_few_free"] == 2 * (7260 - 60)
    assert idle["other_model"] == 2 * 43200


def test_a_job_overtaken_takes_its_gpus_back_when_due_without_another_event() -> None:
    """reclaimOvertakenAfterSeconds 1000: lab a's 4-GPU job waits from 5 s while its own
    later 1-GPU jobs (checkpointable) fill the GPUs its 2-GPU job frees at 500. Nothing
    else happens until the first of them ends at 50,010; the daemon cycles every second
    while pods wait, so at 1,005 it takes them back. The simulator cycled only on events
    and started the job at 50,011."""
    pol = policy(
        {"a": {"checkpointable": True}, "b": {}},
        sharing={"reclaimOvertakenAfterSeconds": 1000, "maxConsolidationsPerCycle": 0},
    )
    nodes = (node("a-0", "a", 4), node("b-0", "b", 4))
    tr = trace(
        job("b1", "b", 0, 100_000, 4),
        job("x", "a", 0, 500, 2),
        job("big", "a", 5, 1000, 4),
        job("s1", "a", 10, 50_000, 1),
        job("s2", "a", 11, 50_000, 1),
    )
    result = Simulator(nodes, pol, tr).run()
    big = result.jobs["big"]
    assert big.first_start == pytest.approx(1005 + 30)  # due, then the grace period
    assert {v.job_id for v in result.victims} == {"s1", "s2"}
    assert {v.cause for v in result.victims} == {"queue"}
