"""Taking back from overtaking jobs (docs/glossary.md, "overtaken";
`sharing.reclaimOvertakenAfterSeconds`): a member's job of 2 or more GPUs that has waited
long enough takes back the GPUs of its member's own later, smaller jobs that resume where
they stop. Each case also checks that the reference engine decides the same
(`tests/reference_engine`, the rule spelled out)."""

from __future__ import annotations

from dataclasses import replace

from scheduler.engine.decisions import Decisions
from scheduler.engine.mentions import plain
from scheduler.engine.snapshot import RunningPod, Snapshot
from tests.unit import engine_strategies as es
from tests.unit.engine_strategies import without_consolidation

H = "H"


def _both(snap: Snapshot, checkpointable: bool = True, **sharing: object) -> Decisions:
    """The engine's decisions, after checking the reference engine's are the same."""
    sharing = {"min_runtime_seconds": 0, "reclaim_overtaken_after_seconds": 0, **sharing}
    members = {"m-a": {"checkpointable": checkpointable}, "m-b": {}}
    pol = without_consolidation(es.policy(members, models=(H,), **sharing))
    return es.decided_alike(snap, pol)


def _small(uid: str, node: str, submitted: float, started: float = 1_000.0) -> RunningPod:
    return es.running(uid, "m-a", node, gpus=1, started_at=started, submitted_at=submitted)


def _overtaken(started: float = 1_000.0, earlier_priority: int = 0) -> Snapshot:
    """m-a's gang of 2 x 4 GPUs, submitted at 100, waits: m-a's own three 4-GPU nodes are
    full of its 1-GPU jobs, all submitted after the gang but one on na1 (submitted at 50),
    which started on GPUs freed one at a time. m-b's node runs m-b's own job."""
    nodes = [es.node(n, "m-a", gpus=4, model=H) for n in ("na1", "na2", "na3")]
    nodes.append(es.node("nb", "m-b", gpus=4, model=H))
    run = [
        es.running(
            "early",
            "m-a",
            "na1",
            gpus=1,
            started_at=started,
            submitted_at=50.0,
            priority=earlier_priority,
        )
    ]
    run += [_small(f"s1-{k}", "na1", 200.0 + k, started) for k in range(3)]
    run += [
        _small(f"s{n}-{k}", f"na{n}", 300.0 + 10 * n + k, started) for n in (2, 3) for k in range(4)
    ]
    run.append(es.running("b-own", "m-b", "nb", gpus=4, started_at=1_000.0))
    pending = [es.job("gang", "m-a", pods=2, gpus=4, submitted_at=100.0)]
    return es.snapshot([*nodes], pending, run)


def test_a_waiting_gang_takes_back_the_nodes_its_own_later_jobs_filled() -> None:
    got = _both(_overtaken())
    taken = {p.job_id for p in got.preemptions}
    # Two whole nodes, and only the later jobs: na1 keeps the job submitted before.
    assert taken == {f"s{n}-{k}" for n in (2, 3) for k in range(4)}
    assert {p.cause for p in got.preemptions} == {"queue"}
    assert {p.reclaimer for p in got.preemptions} == {"m-a"}
    assert "comes before job m-a/s2-0 in the member's queue" in next(
        plain(p.reason) for p in got.preemptions if p.job_id == "s2-0"
    )
    assert [(n.job_id, sorted(n.nodes.values())) for n in got.nominations] == [
        ("gang", ["na2", "na3"])
    ]
    later = "; preempting 8 pods of its member's later jobs (m-a/s2-0, m-a/s2-1"
    assert later in got.explanations["gang"]


def test_off_by_default_and_before_the_wait_it_sets() -> None:
    for sharing in (
        {"reclaim_overtaken_after_seconds": None},
        {"reclaim_overtaken_after_seconds": 9_901},
    ):
        got = _both(_overtaken(), **sharing)
        assert got.preemptions == () and not got.nominations
    # Waited 9,900 s of the 9,900 asked: taken back.
    assert _both(_overtaken(), reclaim_overtaken_after_seconds=9_900).preemptions


def test_with_the_setting_off_the_gang_says_what_holds_its_gpus() -> None:
    got = _both(_overtaken(), reclaim_overtaken_after_seconds=None)
    # m-a's eleven later 1-GPU jobs on its nodes (not "early", submitted before it).
    assert got.explanations["gang"].endswith(
        "; its member's own later, smaller jobs that resume hold 11 H GPUs "
        "(sharing.reclaimOvertakenAfterSeconds lets a job that waited that long take such "
        "GPUs back)"
    )
    # Set, the gang waits its time without the clause; jobs that restart from zero, or
    # fewer GPUs than the gang's, get none either.
    waiting = _both(_overtaken(), reclaim_overtaken_after_seconds=9_901)
    assert "reclaimOvertakenAfterSeconds" not in waiting.explanations["gang"]
    restart = _both(_overtaken(), checkpointable=False, reclaim_overtaken_after_seconds=None)
    assert "later, smaller jobs" not in restart.explanations["gang"]
    few = _overtaken()
    few = replace(few, running=tuple(p for p in few.running if p.node != "na3"))
    fewer = _both(few, reclaim_overtaken_after_seconds=None)
    assert "later, smaller jobs" not in fewer.explanations["gang"]


def test_jobs_that_restart_from_zero_are_never_taken_back() -> None:
    got = _both(_overtaken(), checkpointable=False)
    assert got.preemptions == ()


def test_a_lower_priority_job_submitted_before_is_behind_the_gang_too() -> None:
    got = _both(_overtaken(earlier_priority=-1))
    # The queue puts priority first: the earlier, lower-priority job is after the gang,
    # so na1 can be emptied too (its jobs come first in the common order, by id).
    assert sorted(p.job_id for p in got.preemptions) == [
        "early",
        "s1-0",
        "s1-1",
        "s1-2",
        "s2-0",
        "s2-1",
        "s2-2",
        "s2-3",
    ]


def test_young_jobs_are_waited_for_with_the_free_room_held() -> None:
    got = _both(_overtaken(started=9_800.0), min_runtime_seconds=600)
    assert got.preemptions == ()
    assert (
        "; the later jobs of its member it takes back have run less than the minimum "
        "runtime of 600 s; none of the GPUs it will use is idle yet"
    ) in got.explanations["gang"]


def test_a_job_never_takes_back_from_the_bigger_job_that_took_from_it() -> None:
    """After the gang took its nodes back, a victim waits again: it is later and smaller,
    so it has nothing to take back from the gang (no preemption back and forth)."""
    nodes = [es.node(n, "m-a", gpus=4, model=H) for n in ("na1", "na2")]
    run = [
        es.running(
            f"g-{k}",
            "m-a",
            f"na{k + 1}",
            gpus=4,
            job_id="gang",
            started_at=9_000.0,
            submitted_at=100.0,
        )
        for k in range(2)
    ]
    pending = [es.job("s2-0", "m-a", gpus=1, submitted_at=320.0)]
    got = _both(es.snapshot(nodes, pending, run))
    assert got.preemptions == ()


def test_a_pod_group_takes_back_room_for_its_min_member_pods_only() -> None:
    # Three 4-GPU pods with minMember 2: room for two is what it takes back (two whole
    # nodes); its third pod starts when room allows. It took nothing back: na1 keeps the
    # job submitted before the group, so room for all three could never be made.
    snap = _overtaken()
    group = es.job("gang", "m-a", pods=3, gpus=4, submitted_at=100.0, min_member=2)
    got = _both(replace(snap, pending=(group,)))
    assert {p.job_id for p in got.preemptions} == {f"s{n}-{k}" for n in (2, 3) for k in range(4)}
    assert [(n.job_id, sorted(n.nodes.values())) for n in got.nominations] == [
        ("gang", ["na2", "na3"])
    ]
