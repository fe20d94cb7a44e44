"""Reclaim that loses little: the victims' order by lost work, and the per-job limit on
reclaims (`sharing.max_reclaims_per_job`)."""

from __future__ import annotations

from dataclasses import replace

from scheduler.engine import schedule
from scheduler.engine.mentions import plain
from scheduler.engine.placement import ClusterState
from scheduler.engine.reclaim import Reclaimer, VictimJob
from scheduler.engine.snapshot import Node, PendingJob, RunningPod
from tests.unit.engine_strategies import H100, decided_alike, job, node, policy, running, snapshot

POL = policy(["lab-a", "lab-b", "lab-c"])


def preempted(d: object) -> list[str]:
    return [p.pod_uid for p in d.preemptions]  # type: ignore[attr-defined]


def victims(run: list[RunningPod], nodes: list[Node]) -> list[VictimJob]:
    """Every running job as a victim, in the common order (lab-c checkpointable)."""
    snap = snapshot(nodes, [], run)
    state = ClusterState(snap)
    everyone = {p.uid for p in run}
    lab_c = frozenset({"lab-c"})
    return Reclaimer(state, snap.running, everyone, snap.now, 0, False, lab_c).jobs


def test_victims_are_ordered_by_the_work_a_restart_would_lose() -> None:
    # now = 10000. lab-c is checkpointable: its job loses nothing, whatever it ran.
    # The others by GPU-seconds since their start: b-young 1 x 100 = 100,
    # b-narrow 1 x 1500 = 1500, b-low and b-high 2 x 1000 = 2000 (lowest priority
    # first), b-wide 4 x 600 = 2400 although it is the youngest but one.
    nodes = [node("a1", "lab-a"), node("a2", "lab-a"), node("b1", "lab-b")]
    run = [
        running("b-wide", "lab-b", "a1", gpus=4, started_at=9400),
        running("b-young", "lab-b", "a1", gpus=1, started_at=9900),
        running("b-narrow", "lab-b", "a2", gpus=1, started_at=8500),
        running("b-high", "lab-b", "a2", gpus=2, started_at=9000, priority=5),
        running("b-low", "lab-b", "a2", gpus=2, started_at=9000, priority=1),
        running("c-old", "lab-c", "b1", gpus=4, started_at=1000),
    ]
    assert [j.job_id for j in victims(run, nodes)] == [
        "c-old",
        "b-young",
        "b-narrow",
        "b-low",
        "b-high",
        "b-wide",
    ]


def test_a_pod_says_whether_its_job_resumes_whatever_its_member_says() -> None:
    # lab-c is checkpointable but c-restarts says it is not; b-resumes says it is,
    # although lab-b is not. A gang resumes only if every pod does.
    nodes = [node("a1", "lab-a"), node("a2", "lab-a"), node("b1", "lab-b")]
    run = [
        running("c-restarts", "lab-c", "b1", gpus=1, started_at=9000, checkpointable=False),
        running("c-default", "lab-c", "b1", gpus=1, started_at=1000),
        running("b-resumes", "lab-b", "a1", gpus=1, started_at=1000, checkpointable=True),
        running("b-young", "lab-b", "a1", gpus=1, started_at=9900),
        running("g0", "lab-b", "a2", job_id="gang", started_at=9960),
        running("g1", "lab-b", "a2", job_id="gang", started_at=9960, checkpointable=True),
    ]
    assert [(j.job_id, j.checkpointable) for j in victims(run, nodes)] == [
        ("b-resumes", True),
        ("c-default", True),
        ("gang", False),
        ("b-young", False),
        ("c-restarts", False),
    ]


def test_an_owner_takes_back_the_job_that_resumes_before_the_one_that_restarts() -> None:
    # b-old has run 8 x 9000 GPU-seconds but resumes (its pods say so); b-new has run
    # 8 x 1000 and restarts from zero: reclaiming b-old loses nothing.
    nodes = [node("a1", "lab-a"), node("a2", "lab-a"), node("b1", "lab-b")]
    run = [
        running("b-own", "lab-b", "b1", gpus=8),
        running("b-old", "lab-b", "a1", gpus=8, started_at=1000, checkpointable=True),
        running("b-new", "lab-b", "a2", gpus=8, started_at=9000),
    ]
    d = schedule(snapshot(nodes, [job("a-1", "lab-a", gpus=8)], run, now=10_000), POL)
    assert preempted(d) == ["b-old"]
    run[1] = running("b-old", "lab-b", "a1", gpus=8, started_at=1000)
    d = schedule(snapshot(nodes, [job("a-1", "lab-a", gpus=8)], run, now=10_000), POL)
    assert preempted(d) == ["b-new"]


def test_the_victim_with_fewer_gpu_seconds_goes_even_if_it_is_older() -> None:
    # lab-a (entitled to 16, holds 8) needs 2 GPUs back on a1. b-wide started last but
    # has run 6 x 1000 = 6000 GPU-seconds; b-narrow 2 x 2000 = 4000: b-narrow goes.
    nodes = [node("a1", "lab-a"), node("a2", "lab-a"), node("b1", "lab-b")]
    run = [
        running("a-own", "lab-a", "a2", gpus=8),
        running("b-own", "lab-b", "b1", gpus=8),
        running("b-wide", "lab-b", "a1", gpus=6, started_at=9000),
        running("b-narrow", "lab-b", "a1", gpus=2, started_at=8000),
    ]
    d = schedule(snapshot(nodes, [job("a-1", "lab-a", gpus=2)], run, now=10_000), POL)
    assert preempted(d) == ["b-narrow"]


def test_a_job_reclaimed_up_to_the_limit_is_no_longer_a_victim() -> None:
    nodes = [node("a1", "lab-a"), node("a2", "lab-a"), node("b1", "lab-b")]
    run = [
        running("a-own", "lab-a", "a2", gpus=8),
        running("b-own", "lab-b", "b1", gpus=8),
        running("b-old", "lab-b", "a1", gpus=4, started_at=100),
        running("b-young", "lab-b", "a1", gpus=4, started_at=5000, reclaims=3),
    ]
    pending = [job("a-1", "lab-a", gpus=4)]
    d = schedule(snapshot(nodes, pending, run, now=10_000), POL)
    assert preempted(d) == ["b-old"]
    # Two reclaims so far: still a victim, and the one that loses less.
    run[3] = running("b-young", "lab-b", "a1", gpus=4, started_at=5000, reclaims=2)
    d = schedule(snapshot(nodes, pending, run, now=10_000), POL)
    assert preempted(d) == ["b-young"]
    # No limit in the policy: any number of reclaims.
    run[3] = running("b-young", "lab-b", "a1", gpus=4, started_at=5000, reclaims=50)
    unlimited = policy(["lab-a", "lab-b", "lab-c"], max_reclaims_per_job=None)
    d = schedule(snapshot(nodes, pending, run, now=10_000), unlimited)
    assert preempted(d) == ["b-young"]


def test_a_refusal_names_the_borrowers_at_the_reclaim_limit() -> None:
    # lab-a owns a1 and a2 and holds nothing; lab-b borrows both whole, its job on a1
    # reclaimed three times already. lab-a's 8-GPU job takes back a2 (b-fresh) and is
    # told nothing about b-spent; a second one finds a1 held by a job it may not take,
    # and says whose it is instead of "nobody borrows".
    nodes = [node("a1", "lab-a"), node("a2", "lab-a"), node("b1", "lab-b")]
    run = [
        running("b-spent", "lab-b", "a1", gpus=8, reclaims=3),
        running("b-fresh", "lab-b", "a2", gpus=8, reclaims=2),
        running("b-own", "lab-b", "b1", gpus=8),
    ]
    pending = [
        job("a-1", "lab-a", gpus=8, submitted_at=1.0),
        job("a-2", "lab-a", gpus=8, submitted_at=2.0),
    ]
    d = schedule(snapshot(nodes, pending, run), POL)
    assert preempted(d) == ["b-fresh"]
    assert "maxReclaimsPerJob" not in plain(d.explanations["a-1"])
    assert plain(d.explanations["a-2"]).endswith(
        f"; not counted: 8 {H100} GPUs it could use, borrowed by a job reclaimed 3 times "
        "already (maxReclaimsPerJob), never reclaimed again: b-spent of lab-b"
    )
    # Below the limit it is a victim like any other: no such clause.
    run[0] = running("b-spent", "lab-b", "a1", gpus=8, reclaims=2)
    d = schedule(snapshot(nodes, pending, run), POL)
    assert sorted(preempted(d)) == ["b-fresh", "b-spent"]
    assert all("maxReclaimsPerJob" not in text for text in d.explanations.values())


def test_a_job_below_its_fair_share_is_told_of_borrowers_at_the_limit_too() -> None:
    # lab-a holds its entitlement (a1) and wants 4 more, below its fair share; the only
    # borrower, lab-b on lab-c's idle c1, is at the limit: no candidate at all, and the
    # sentence says who holds the GPUs.
    nodes = [node("a1", "lab-a"), node("b1", "lab-b"), node("c1", "lab-c")]
    run = [
        running("a-own", "lab-a", "a1", gpus=8),
        running("b-own", "lab-b", "b1", gpus=8),
        running("b-spent", "lab-b", "c1", gpus=8, reclaims=3),
    ]
    d = schedule(snapshot(nodes, [job("a-1", "lab-a", gpus=4)], run), POL)
    assert preempted(d) == []
    assert plain(d.explanations["a-1"]).endswith(
        f"nothing can be reclaimed: no member above its fair share holds borrowed {H100} "
        f"GPUs it could use; not counted: 8 {H100} GPUs it could use, borrowed by a job "
        "reclaimed 3 times already (maxReclaimsPerJob), never reclaimed again: b-spent of "
        "lab-b"
    )


def test_a_job_at_the_limit_borrows_only_from_owners_that_want_little() -> None:
    # lab-a holds its whole entitlement of 8 on a1. lab-b holds 4 of its 8 on b1 (half:
    # likely to want the rest back). A job reclaimed 3 times is never reclaimed again,
    # so it may not sit on b1's free half; one reclaimed twice may if it resumes, and
    # may not if another reclaim would throw its work away again.
    nodes = [node("a1", "lab-a"), node("b1", "lab-b")]
    run = [running("a-own", "lab-a", "a1", gpus=8), running("b-own", "lab-b", "b1", gpus=4)]
    d = schedule(snapshot(nodes, [job("j", "lab-a", reclaims=3)], run), POL)
    assert d.binds == ()
    assert plain(d.explanations["j"]) == (
        f"member lab-a is below its fair share of 9 {H100} (holds 8); job j was reclaimed "
        "3 times, the policy's limit of 3 (maxReclaimsPerJob): it will not be reclaimed "
        "again, so beyond its entitlement it runs only on nodes whose owners are not "
        "likely to want them back; nothing can "
        f"be reclaimed: no member above its fair share holds borrowed {H100} GPUs it could use"
    )
    resuming = replace(job("j", "lab-a", reclaims=2), checkpointable=True)
    d = schedule(snapshot(nodes, [resuming], run), POL)
    assert [(b.node, b.reclaimable) for b in d.binds] == [("b1", True)]
    d = schedule(snapshot(nodes, [job("j", "lab-a", reclaims=1)], run), POL)
    assert d.binds == ()
    assert plain(d.explanations["j"]) == (
        f"member lab-a is below its fair share of 9 {H100} (holds 8); job j was reclaimed "
        "1 time and restarts from zero: beyond its entitlement it runs only on nodes "
        "whose owners are not likely to want them back, so that its work is not thrown "
        "away again; nothing can be reclaimed: no member above its fair share holds "
        f"borrowed {H100} GPUs it could use"
    )
    assert d.kept_off_wanted == {"j"}  # the simulator's wait meter reads it
    # A quiet owner's node (lab-c runs nothing) takes it.
    nodes.append(node("c1", "lab-c"))
    d = schedule(snapshot(nodes, [job("j", "lab-a", reclaims=3)], run), POL)
    assert [(b.node, b.reclaimable) for b in d.binds] == [("c1", True)]
    assert d.kept_off_wanted == set()
    # Within the entitlement it starts anywhere, at home first.
    run = [running("a-own", "lab-a", "a1", gpus=4), running("b-own", "lab-b", "b1", gpus=4)]
    d = schedule(snapshot(nodes, [job("j", "lab-a", gpus=2, reclaims=3)], run), POL)
    assert [(b.node, b.reclaimable) for b in d.binds] == [("a1", False)]


def test_consolidation_does_not_open_a_wanted_node_for_a_job_kept_off_it() -> None:
    # lab-a holds its entitlement (a1); b1's owner runs 4 of its 8 (likely to want the
    # rest back) next to lab-d's 1-GPU pod; quiet lab-c's c1 has lab-d's 5. j (4 GPUs)
    # finds 3 free on each. A fresh j gets b1 by moving d-1 away; one reclaimed before
    # that restarts from zero may not use b1, so moving d-1 would only open b1 for it,
    # and the 3 GPUs free on c1 alone are no fragmentation to undo: it waits, nobody
    # preempted.
    pol = policy(["lab-a", "lab-b", "lab-c", "lab-d"])
    nodes = [node("a1", "lab-a"), node("b1", "lab-b"), node("c1", "lab-c")]
    run = [
        running("a-own", "lab-a", "a1", gpus=8),
        running("b-own", "lab-b", "b1", gpus=4),
        running("d-1", "lab-d", "b1", gpus=1, started_at=9_000),
        running("d-5", "lab-d", "c1", gpus=5, started_at=9_000),
    ]
    d = schedule(snapshot(nodes, [job("j", "lab-a", gpus=4)], run, now=10_000.0), pol)
    assert preempted(d) == ["d-1"] and [n.nodes for n in d.nominations] == [{"j-0": "b1"}]
    d = schedule(snapshot(nodes, [job("j", "lab-a", gpus=4, reclaims=1)], run, now=10_000.0), pol)
    assert d.preemptions == () and d.nominations == () and d.binds == ()
    assert "restarts from zero" in plain(d.explanations["j"])


def test_a_gang_bigger_than_its_entitlement_still_runs_and_is_then_kept() -> None:
    # lab-a is entitled to 8 and asks for a 2 x 8 gang: it can never run within its
    # entitlement, so at the limit it still borrows the idle b1 and c1...
    nodes = [node("a1", "lab-a"), node("b1", "lab-b"), node("c1", "lab-c")]
    run = [running("a-own", "lab-a", "a1", gpus=8)]
    gang = job("g", "lab-a", pods=2, gpus=8, reclaims=3)
    d = schedule(snapshot(nodes, [gang], run), POL)
    assert sorted(b.node for b in d.binds) == ["b1", "c1"]
    # ...and once running it is not reclaimed again, even for an owner within its
    # entitlement (that owner waits at most one run of the gang).
    run += [
        running("g-0", "lab-a", "b1", gpus=8, job_id="g", reclaims=3),
        running("g-1", "lab-a", "c1", gpus=8, job_id="g", reclaims=3),
    ]
    d = schedule(snapshot(nodes, [job("b-1", "lab-b", gpus=8)], run), POL)
    assert d.preemptions == ()
    run[1:] = [
        running("g-0", "lab-a", "b1", gpus=8, job_id="g", reclaims=2),
        running("g-1", "lab-a", "c1", gpus=8, job_id="g", reclaims=2),
    ]
    d = schedule(snapshot(nodes, [job("b-1", "lab-b", gpus=8)], run), POL)
    assert sorted(preempted(d)) == ["g-0", "g-1"]


def test_a_gang_bigger_than_its_entitlement_is_kept_for_a_window_after_its_reclaim() -> None:
    # lab-a is entitled to 8 (a1, full) and its 2 x 8 gang was reclaimed 3 times. lab-b
    # holds 8 of its 16 (likely to want b1 back); lab-c runs nothing. For an hour after
    # its last reclaim the gang may not take b1, so with one quiet node it waits; then
    # (or when the time of its reclaim is not known) it borrows wherever there is room.
    pol = policy(["lab-a", "lab-b", "lab-c"], reclaim_limit_window_seconds=3600)
    nodes = [
        node("a1", "lab-a"),
        node("b1", "lab-b"),
        node("b2", "lab-b"),
        node("c1", "lab-c"),
    ]
    run = [running("a-own", "lab-a", "a1", gpus=8), running("b-own", "lab-b", "b2", gpus=8)]

    def gang(reclaimed_at: float | None, reclaims: int = 3) -> PendingJob:
        return replace(
            job("g", "lab-a", pods=2, gpus=8, reclaims=reclaims), reclaimed_at=reclaimed_at
        )

    d = schedule(snapshot(nodes, [gang(9_000.0)], run, now=10_000.0), pol)
    assert d.binds == ()
    assert plain(d.explanations["g"]) == (
        f"member lab-a is below its fair share of 24 {H100} (holds 8); job g was "
        "reclaimed 3 times, the policy's limit of 3 (maxReclaimsPerJob): it will not be "
        "reclaimed again, so beyond its entitlement it runs only on nodes whose owners are "
        "not likely to want them back; bigger than its entitlement, it may run anywhere "
        "3600 s after its last reclaim (reclaimLimitWindowSeconds), in 44 min; "
        "nothing can be reclaimed: no member above its fair share holds borrowed "
        f"{H100} GPUs it could use"
    )
    # Counted down in whole minutes: a second later the sentence, and so the pod's
    # FailedScheduling event, is the same.
    later = schedule(snapshot(nodes, [gang(9_000.0)], run, now=10_001.0), pol)
    assert plain(later.explanations["g"]) == plain(d.explanations["g"])
    for reclaimed_at in (6_400.0, None):
        d = schedule(snapshot(nodes, [gang(reclaimed_at)], run, now=10_000.0), pol)
        assert sorted(b.node for b in d.binds) == ["b1", "c1"], reclaimed_at
    # Below the limit a gang that resumes may be reclaimed again: the window does not
    # matter. One that restarts from zero is kept within it, as at the limit.
    resuming = replace(gang(9_000.0, reclaims=2), checkpointable=True)
    d = schedule(snapshot(nodes, [resuming], run, now=10_000.0), pol)
    assert sorted(b.node for b in d.binds) == ["b1", "c1"]
    d = schedule(snapshot(nodes, [gang(9_000.0, reclaims=1)], run, now=10_000.0), pol)
    assert d.binds == ()
    d = schedule(snapshot(nodes, [gang(6_400.0, reclaims=1)], run, now=10_000.0), pol)
    assert sorted(b.node for b in d.binds) == ["b1", "c1"]
    # Within the window a second quiet node is enough.
    nodes.append(node("c2", "lab-c"))
    d = schedule(snapshot(nodes, [gang(9_000.0)], run, now=10_000.0), pol)
    assert sorted(b.node for b in d.binds) == ["c1", "c2"]
    # A window of 0 is the rule without it: anywhere at once.
    nodes.pop()
    unwindowed = policy(["lab-a", "lab-b", "lab-c"], reclaim_limit_window_seconds=0)
    d = schedule(snapshot(nodes, [gang(9_999.0)], run, now=10_000.0), unwindowed)
    assert sorted(b.node for b in d.binds) == ["b1", "c1"]


def test_a_failed_reclaim_of_a_job_at_the_limit_stands_for_no_other_job() -> None:
    # lab-a (8 on a1, fair share 12) has two 4-GPU jobs waiting. The borrowed GPUs that
    # a reclaim could take are lab-c's, on b1 of lab-b, which is likely to want it back
    # (it holds 8 of its 16). The job reclaimed 3 times may not start there, so its
    # reclaim finds nothing; the other job's reclaim, asked next in the same cycle, is
    # not that one and takes one of lab-c's jobs for it.
    nodes = [node("a1", "lab-a"), node("b1", "lab-b"), node("b2", "lab-b"), node("c1", "lab-c")]
    run = [
        running("a-own", "lab-a", "a1", gpus=8),
        running("b-own", "lab-b", "b2", gpus=8),
        running("c-own", "lab-c", "c1", gpus=8),
        running("c-b1", "lab-c", "b1", gpus=4, started_at=1.0),
        running("c-b2", "lab-c", "b1", gpus=4, started_at=2.0),
    ]
    spent = job("spent", "lab-a", gpus=4, reclaims=3, priority=1)
    fresh = job("fresh", "lab-a", gpus=4)
    d = schedule(snapshot(nodes, [spent, fresh], run), POL)
    assert preempted(d) == ["c-b2"]
    assert [n.job_id for n in d.nominations] == ["fresh"]
    assert "maxReclaimsPerJob" in plain(d.explanations["spent"])


def test_alike_jobs_kept_off_wanted_nodes_each_get_their_own_sentence() -> None:
    # As in test_a_job_at_the_limit_borrows_only_from_owners_that_want_little (b1's
    # owner likely to want its free half back): four jobs of lab-a of one shape, all
    # reclaimed before and restarting from zero, wait for one reason. The cycle gives
    # the first a turn and the other three its reason, each with its own sentence: its
    # id and how often it was reclaimed (the reference engine, which turns every job,
    # writes the same).
    nodes = [node("a1", "lab-a"), node("b1", "lab-b")]
    run = [running("a-own", "lab-a", "a1", gpus=8), running("b-own", "lab-b", "b1", gpus=4)]
    reclaims = (1, 2, 1, 2)
    queue = [
        job(f"j{n}", "lab-a", reclaims=k, submitted_at=float(n)) for n, k in enumerate(reclaims)
    ]
    d = decided_alike(snapshot(nodes, queue, run), POL)
    assert d.binds == () and d.preemptions == ()
    for n, times in enumerate(("1 time", "2 times", "1 time", "2 times")):
        assert f"job j{n} was reclaimed {times} and restarts from zero" in plain(
            d.explanations[f"j{n}"]
        )
    assert d.kept_off_wanted == {"j0", "j1", "j2", "j3"}  # the shortcut's three too
