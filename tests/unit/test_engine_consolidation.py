"""Consolidation: running work is moved so that a job blocked by fragmentation starts."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from pydantic import ValidationError

from policies.loader import parse_policy
from policies.model import Policy
from scheduler.engine import schedule, shares
from scheduler.engine.consolidation import Consolidator, Positions
from scheduler.engine.decisions import Decisions
from scheduler.engine.explain import no_move_detail
from scheduler.engine.mentions import plain
from scheduler.engine.placement import ClusterState, spec_res
from scheduler.engine.reclaim import Reclaimer
from scheduler.engine.snapshot import RunningPod, Snapshot
from tests.examples import examples
from tests.unit.engine_strategies import H100, job, node, policy, running, scenarios, snapshot

MEMBERS = {"lab-a": {}, "lab-b": {}, "lab-c": {"checkpointable": True}, "lab-o": {}}
POL = policy(MEMBERS, reclaim_grace_period_seconds=45)
NODES = [node("o1", "lab-o"), node("o2", "lab-o"), node("o3", "lab-o")]


def scattered(per_node: int = 3, member: str = "lab-b", **kw: object) -> list[RunningPod]:
    """`per_node` 1-GPU pods of `member` on each of o1..o3, started later on later nodes
    (the pods on o3 are the youngest)."""
    return [
        running(f"{member}-{n}-{k}", member, n, started_at=1000.0 * (i + 1), **kw)  # type: ignore[arg-type]
        for i, n in enumerate(("o1", "o2", "o3"))
        for k in range(per_node)
    ]


def moved(d: Decisions) -> list[str]:
    return sorted(p.pod_uid for p in d.preemptions)


def test_frees_the_node_whose_work_loses_least_for_a_member_below_its_fair_share() -> None:
    # lab-o lends its 24 GPUs; lab-b holds 9 (its whole demand: its fair share) scattered
    # over the three nodes, so 15 are free but no node has 8. lab-a (fair share 8, holds
    # 0) borrows: reclaim may take nobody below its fair share, consolidation moves work.
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8)], scattered()), POL)
    assert d.binds == ()
    assert moved(d) == ["lab-b-o3-0", "lab-b-o3-1", "lab-b-o3-2"]
    assert {p.cause for p in d.preemptions} == {"consolidation"}
    assert {(p.reclaimer, p.for_job, p.grace_period_seconds) for p in d.preemptions} == {
        ("lab-a", "a-1", 45)
    }
    assert "consolidation of o3 for job a-1 of member lab-a" in plain(d.preemptions[0].reason)
    assert "fits on free GPUs elsewhere" in plain(d.preemptions[0].reason)
    assert [(n.job_id, n.nodes) for n in d.nominations] == [("a-1", {"a-1-0": "o3"})]
    assert plain(d.explanations["a-1"]) == (
        f"member lab-a is below its fair share of 8 {H100} (holds 0); waiting for "
        "consolidation of o3: 3 pods leaving (lab-b/lab-b-o3-0 of lab-b, lab-b/lab-b-o3-1 "
        "of lab-b, lab-b/lab-b-o3-2 of lab-b) with a grace period of 45 s, since the idle "
        f"{H100} GPUs are scattered over nodes too small for it; their GPUs are held for "
        "this job"
    )


def test_checkpointable_work_moves_before_younger_work() -> None:
    # o1 carries checkpointable lab-c pods (old), o3 young lab-b ones: o1 loses nothing.
    run = [p for p in scattered() if p.node != "o1"]
    run += [running(f"c-{k}", "lab-c", "o1", started_at=10.0) for k in range(3)]
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8)], run), POL)
    assert moved(d) == ["c-0", "c-1", "c-2"]
    assert [(n.job_id, n.nodes) for n in d.nominations] == [("a-1", {"a-1-0": "o1"})]


def test_fewest_pods_moved_when_no_work_is_lost_either_way() -> None:
    pol = policy({**MEMBERS, "lab-b": {"checkpointable": True}})
    # Free: o1 4, o2 6, o3 5. Opening o1 moves 4 pods, o2 two, o3 three.
    run = [running(f"b1-{k}", "lab-b", "o1") for k in range(4)]
    run += [running(f"b2-{k}", "lab-b", "o2") for k in range(2)]
    run += [running(f"b3-{k}", "lab-b", "o3") for k in range(3)]
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8)], run), pol)
    assert moved(d) == ["b2-0", "b2-1"]


def test_an_owner_blocked_by_fragmentation_gets_its_own_node_opened() -> None:
    # lab-a is within its entitlement; its node a1 has 7 GPUs free and lab-b's borrowed
    # pod b-x, which fits elsewhere: it is moved, not reclaimed.
    nodes = [node("a1", "lab-a"), *NODES]
    run = [running("b-x", "lab-b", "a1", started_at=5.0), *scattered()]
    d = schedule(snapshot(nodes, [job("a-1", "lab-a", gpus=8)], run), POL)
    assert moved(d) == ["b-x"]
    assert {p.cause for p in d.preemptions} == {"consolidation"}
    assert [(n.job_id, n.nodes) for n in d.nominations] == [("a-1", {"a-1-0": "a1"})]
    assert "waiting for consolidation of a1: 1 pod leaving" in plain(d.explanations["a-1"])


def test_reclaim_when_too_few_gpus_are_free() -> None:
    # No fragmentation (nothing is free): the owner takes its node back by reclaim.
    run = [running(f"b-{k}", "lab-b", "a1") for k in range(8)]
    d = schedule(snapshot([node("a1", "lab-a")], [job("a-1", "lab-a", gpus=8)], run), POL)
    assert len(d.preemptions) == 8
    assert {p.cause for p in d.preemptions} == {"entitlement"}


def test_young_work_is_not_moved() -> None:
    pol = policy(MEMBERS, min_runtime_seconds=20_000)
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8)], scattered()), pol)
    assert d.preemptions == () and d.nominations == ()
    assert "scattered over nodes too small" not in plain(d.explanations["a-1"])
    # With preemptBelowMinRuntime the young pods move.
    pol = policy(MEMBERS, min_runtime_seconds=20_000, preempt_below_min_runtime=True)
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8)], scattered()), pol)
    assert len(d.preemptions) == 3


def test_work_reclaimed_as_often_as_allowed_is_not_moved() -> None:
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8)], scattered(reclaims=3)), POL)
    assert d.preemptions == ()
    pol = policy(MEMBERS, max_reclaims_per_job=4)
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8)], scattered(reclaims=3)), pol)
    assert len(d.preemptions) == 3


def test_work_that_would_not_fit_elsewhere_is_not_moved() -> None:
    # 5-GPU pods on each node: 9 GPUs free, none with 8; a moved 5-GPU pod would find no
    # node with 5 free once lab-a holds the opened one, and lab-b sits at its fair share.
    run = [running(f"b-{n}", "lab-b", n, gpus=5) for n in ("o1", "o2", "o3")]
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8)], run), POL)
    assert d.preemptions == ()
    assert "9 idle NVIDIA-H100 exist but no node has 8 free" in plain(d.explanations["a-1"])


def test_work_within_its_members_entitlement_on_its_own_nodes_never_moves() -> None:
    # lab-o's own pods fill part of its nodes; only they could make room.
    run = [running(f"o-{n}-{k}", "lab-o", n) for n in ("o1", "o2", "o3") for k in range(3)]
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8)], run), POL)
    assert d.preemptions == ()


def test_a_member_at_its_fair_share_gets_no_move() -> None:
    # lab-a holds 7 on o1; lab-b holds 7 scattered and waits for a 2 x 8 gang (10 GPUs
    # free: too few for it, no fragmentation). With lab-b's weight at 100, lab-a's fair
    # share is what lab-b's demand of 23 leaves: 1, so lab-a, above it, gets no move.
    run = [running("a-held", "lab-a", "o1", gpus=7), running("b-o1", "lab-b", "o1")]
    run += [
        running(f"b-{n}-{k}", "lab-b", n, started_at=5000.0) for n in ("o2", "o3") for k in range(3)
    ]
    pending = [job("a-1", "lab-a", gpus=8), job("g-b", "lab-b", pods=2, gpus=8)]
    d = schedule(snapshot(NODES, pending, run), policy({**MEMBERS, "lab-b": {"weight": 100.0}}))
    assert d.preemptions == ()
    # At equal weights lab-a's fair share is 12: below it, it gets o2 or o3 opened.
    d = schedule(snapshot(NODES, pending, run), POL)
    assert [(n.job_id, sorted(n.nodes.values())) for n in d.nominations] == [("a-1", ["o2"])]
    assert {p.cause for p in d.preemptions} == {"consolidation"}


def test_a_gang_gets_two_nodes_opened() -> None:
    nodes = [*NODES, node("o4", "lab-o")]
    small = [(n, k) for n in ("o1", "o2") for k in range(2)]
    run = [running(f"b-{n}-{k}", "lab-b", n, started_at=float(k)) for n, k in small]
    run += [running(f"b-{n}", "lab-b", n, gpus=6) for n in ("o3", "o4")]
    # Free: 6 + 6 + 2 + 2 = 16 for a 2 x 8 gang; opening o1 and o2 moves 4 small pods,
    # which fit on o3 and o4.
    d = schedule(snapshot(nodes, [job("g", "lab-a", pods=2, gpus=8)], run), POL)
    assert moved(d) == ["b-o1-0", "b-o1-1", "b-o2-0", "b-o2-1"]
    assert sorted(d.nominations[0].nodes.values()) == ["o1", "o2"]


def test_a_pod_group_gets_nodes_opened_for_its_min_member_pods() -> None:
    nodes = [*NODES, node("o4", "lab-o")]
    small = [(n, k) for n in ("o1", "o2") for k in range(2)]
    run = [running(f"b-{n}-{k}", "lab-b", n, started_at=float(k)) for n, k in small]
    run += [running(f"b-{n}", "lab-b", n, gpus=6) for n in ("o3", "o4")]
    # Free: 6 + 6 + 2 + 2 = 16. A PodGroup of three 8-GPU pods that may start with two
    # (minMember 2) has too few GPUs free for all three, but room for two once o1 and o2
    # are opened, as for the 2 x 8 gang above: it starts with two, the third when room
    # allows.
    group = job("g", "lab-a", pods=3, gpus=8, min_member=2)
    d = schedule(snapshot(nodes, [group], run), POL)
    assert moved(d) == ["b-o1-0", "b-o1-1", "b-o2-0", "b-o2-1"]
    assert [(n.job_id, sorted(n.nodes.items())) for n in d.nominations] == [
        ("g", [("g-0", "o1"), ("g-1", "o2")])
    ]
    # The moved pods gone, the group starts with the two pods on the opened nodes.
    left = [p for p in run if p.uid not in moved(d)]
    nominated = job("g", "lab-a", pods=3, gpus=8, min_member=2, nominated=d.nominations[0].nodes)
    d = schedule(snapshot(nodes, [nominated], left), POL)
    assert sorted((b.pod_uid, b.node) for b in d.binds) == [("g-0", "o1"), ("g-1", "o2")]


def test_bounded_per_cycle_and_off_at_zero() -> None:
    pending = [job("a-1", "lab-a", gpus=8), job("a-2", "lab-a", gpus=8, submitted_at=1)]
    run = [*scattered(per_node=2), running("extra", "lab-b", "o1")]
    # Free 24 - 7 = 17: two 8-GPU jobs are both blocked by fragmentation.
    big = {**MEMBERS}
    d = schedule(snapshot(NODES, pending, run), policy(big, max_consolidations_per_cycle=1))
    assert len(d.nominations) == 1
    d = schedule(snapshot(NODES, pending, run), policy(big, max_consolidations_per_cycle=2))
    assert len(d.nominations) == 2
    d = schedule(snapshot(NODES, pending, run), policy(big, max_consolidations_per_cycle=0))
    assert d.preemptions == () and d.nominations == ()


def test_the_bound_is_validated() -> None:
    with pytest.raises(ValidationError, match=r"max_consolidations_per_cycle|maxConsolidations"):
        policy(MEMBERS, max_consolidations_per_cycle=-1)
    assert isinstance(policy(MEMBERS), Policy)
    assert policy(MEMBERS).sharing.max_consolidations_per_cycle == 2
    text = (
        "apiVersion: fairpool.io/v1\nkind: Policy\nspec:\n  gpuModels: []\n  members: []\n"
        "  sharing:\n    maxConsolidationsPerCycle: 1001\n"
    )
    with pytest.raises(ValueError, match="maxConsolidationsPerCycle") as caught:
        parse_policy(text, "p.yaml")
    assert "1000" in str(caught.value)


def test_same_decisions_whatever_the_snapshot_order() -> None:
    run = scattered()
    a = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8)], run), POL)
    b = schedule(snapshot(NODES[::-1], [job("a-1", "lab-a", gpus=8)], run[::-1]), POL)
    assert a == b


def test_a_member_moves_its_own_small_jobs_for_its_own_big_one() -> None:
    # lab-a's own node a1 carries two of its own 1-GPU pods; a2 is half taken by lab-o's
    # own work (never moved for lab-a). Moving lab-a's two pods to a2 opens a1.
    nodes = [node("a1", "lab-a"), node("o1", "lab-o")]
    run = [running(f"a-{k}", "lab-a", "a1", started_at=9000.0) for k in range(2)]
    run += [running(f"o-{k}", "lab-o", "o1") for k in range(4)]
    d = schedule(snapshot(nodes, [job("a-big", "lab-a", gpus=8)], run), POL)
    assert moved(d) == ["a-0", "a-1"]
    assert {(p.victim_member, p.reclaimer, p.cause) for p in d.preemptions} == {
        ("lab-a", "lab-a", "consolidation")
    }


def test_work_within_entitlement_on_others_nodes_moves_when_it_fits_elsewhere() -> None:
    # lab-b (entitled to its node b1) runs within its entitlement, but on lab-o's nodes;
    # b1 is free. Its pods on o3 move (they fit on b1), not lab-o's own ones on o1/o2.
    nodes = [node("b1", "lab-b"), *NODES]
    run = [running(f"o-{n}-{k}", "lab-o", n) for n in ("o1", "o2") for k in range(3)]
    run += [running(f"b-{k}", "lab-b", "o3", started_at=8000.0) for k in range(3)]
    run += [running(f"b1-{k}", "lab-b", "b1", started_at=8000.0) for k in range(3)]
    d = schedule(snapshot(nodes, [job("a-1", "lab-a", gpus=8)], run), POL)
    assert moved(d) == ["b-0", "b-1", "b-2"]
    assert [(n.job_id, n.nodes) for n in d.nominations] == [("a-1", {"a-1-0": "o3"})]


def test_no_move_throws_away_more_work_than_the_policy_allows() -> None:
    # Opening o3 throws away 3 x 7,000 GPU-seconds: 2,625 s of the job's 8 GPUs.
    pol = policy(MEMBERS, max_consolidation_loss_seconds=2600)
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8)], scattered()), pol)
    assert d.preemptions == ()
    pol = policy(MEMBERS, max_consolidation_loss_seconds=2625)
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8)], scattered()), pol)
    assert moved(d) == ["lab-b-o3-0", "lab-b-o3-1", "lab-b-o3-2"]


def test_a_move_may_take_what_a_reclaim_for_the_claimant_could() -> None:
    # lab-a owns a1 (4 GPUs, full with its own a-big) and borrows one GPU of lab-b's b2
    # (2 GPUs) for a-small; lab-b's 2 x 1 gang b-pair sits on b1 (4 GPUs). lab-b's
    # 4-GPU job keeps it within its entitlement of 6, but only 3 GPUs are free: no
    # fragmentation, and reclaiming a-small alone leaves no node with 4. Together:
    # a-small is taken back (a reclaim, lab-a stays at its entitlement), b-pair moves to
    # b2, and b-big gets b1.
    nodes = [node("a1", "lab-a", gpus=4), node("b1", "lab-b", gpus=4), node("b2", "lab-b", gpus=2)]
    run = [
        running("a-big", "lab-a", "a1", gpus=4, started_at=2.0),
        running("a-small", "lab-a", "b2", started_at=3.0),
        running("b-pair-0", "lab-b", "b1", job_id="b-pair", started_at=304.0),
        running("b-pair-1", "lab-b", "b1", job_id="b-pair", started_at=304.0),
    ]
    pol = policy(["lab-a", "lab-b"], min_runtime_seconds=600)
    d = schedule(snapshot(nodes, [job("b-big", "lab-b", gpus=4)], run, now=1001.0), pol)
    assert d.binds == ()
    assert moved(d) == ["a-small", "b-pair-0", "b-pair-1"]
    causes = {p.pod_uid: p.cause for p in d.preemptions}
    assert causes == {
        "a-small": "entitlement",
        "b-pair-0": "consolidation",
        "b-pair-1": "consolidation",
    }
    assert [(n.job_id, n.nodes) for n in d.nominations] == [("b-big", {"b-big-0": "b1"})]
    assert "waiting for consolidation of b1: 3 pods leaving" in plain(d.explanations["b-big"])
    # Not when the borrowed pod is too young to be taken back, nor with moves off.
    young = [*run[:1], running("a-small", "lab-a", "b2", started_at=900.0), *run[2:]]
    d = schedule(snapshot(nodes, [job("b-big", "lab-b", gpus=4)], young, now=1001.0), pol)
    assert "a-small" not in moved(d) and d.nominations == ()
    off = policy(["lab-a", "lab-b"], min_runtime_seconds=600, max_consolidations_per_cycle=0)
    d = schedule(snapshot(nodes, [job("b-big", "lab-b", gpus=4)], run, now=1001.0), off)
    assert d.preemptions == () and d.nominations == ()
    # The work a taken job loses counts in the bound: b-pair loses 1394 GPU-s and
    # a-small 998; 4 x 400 covers the first alone, not both.
    for loss, taken in ((600, True), (400, False)):
        bounded = policy(
            ["lab-a", "lab-b"], min_runtime_seconds=600, max_consolidation_loss_seconds=loss
        )
        d = schedule(snapshot(nodes, [job("b-big", "lab-b", gpus=4)], run, now=1001.0), bounded)
        assert ("a-small" in moved(d)) is taken


def test_a_move_takes_nothing_from_a_member_at_its_entitlement() -> None:
    # As above, but lab-a's own node is half idle: it holds 3 of its entitlement of 4
    # with a-small, so a-small is not borrowed work and nothing is taken or moved.
    nodes = [node("a1", "lab-a", gpus=4), node("b1", "lab-b", gpus=4), node("b2", "lab-b", gpus=2)]
    run = [
        running("a-mid", "lab-a", "a1", gpus=2, started_at=2.0),
        running("a-small", "lab-a", "b2", started_at=3.0),
        running("b-pair-0", "lab-b", "b1", job_id="b-pair", started_at=304.0),
        running("b-pair-1", "lab-b", "b1", job_id="b-pair", started_at=304.0),
    ]
    pol = policy(["lab-a", "lab-b"], min_runtime_seconds=600)
    d = schedule(snapshot(nodes, [job("b-big", "lab-b", gpus=4)], run, now=1001.0), pol)
    assert "a-small" not in moved(d)


def test_borrowed_work_on_the_opened_node_that_fits_nowhere_is_taken() -> None:
    # b1 holds lab-a's borrowed a-x and lab-b's own b-one, b2 lab-b's b-two: 2 + 1 free
    # for lab-b's 4-GPU job. Opening b1 moves b-one to b2; a-x then fits nowhere and is
    # taken back as a reclaim would take it (lab-a stays at its entitlement of 4).
    nodes = [node("a1", "lab-a", gpus=4), node("b1", "lab-b", gpus=4), node("b2", "lab-b", gpus=2)]
    run = [
        running("a-big", "lab-a", "a1", gpus=4, started_at=2.0),
        running("a-x", "lab-a", "b1", started_at=100.0),
        running("b-one", "lab-b", "b1", started_at=200.0),
        running("b-two", "lab-b", "b2", started_at=200.0),
    ]
    pol = policy(["lab-a", "lab-b"], min_runtime_seconds=600)
    d = schedule(snapshot(nodes, [job("b-big", "lab-b", gpus=4)], run, now=1001.0), pol)
    assert {p.pod_uid: p.cause for p in d.preemptions} == {
        "a-x": "entitlement",
        "b-one": "consolidation",
    }
    reasons = {p.pod_uid: plain(p.reason) for p in d.preemptions}
    assert reasons["a-x"].startswith("reclaim for member lab-b (holds 2 of its entitlement")
    assert "with consolidation of b1" in reasons["a-x"]
    assert "fits on free GPUs elsewhere" in reasons["b-one"]
    assert [(n.job_id, n.nodes) for n in d.nominations] == [("b-big", {"b-big-0": "b1"})]


def _mover(
    pol: Policy, snap: Snapshot, min_runtime: int, loss_seconds: int
) -> tuple[ClusterState, Consolidator]:
    """The cycle's cluster state and consolidator for a snapshot, built as the cycle
    builds them (nothing preempted yet)."""
    book = shares.build(snap, pol)
    state = ClusterState(snap)
    reclaimable = book.allocation.reclaimable_pods
    index = Reclaimer(state, snap.running, reclaimable, snap.now, min_runtime, False)
    positions = Positions(book.allocation.allocated, book.fair, book.entitlement)
    mover = Consolidator(
        state, index.jobs, set(), reclaimable, positions, snap.now, min_runtime, False, loss_seconds
    )
    return state, mover


@given(scenarios())
@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_node_ruled_out_up_front_never_had_an_opening(
    scenario: tuple[Policy, Snapshot],
) -> None:
    # The search asks `_could_open` before pricing a node's opening: it must rule out
    # only nodes where no choice of movable jobs makes room, whoever the claimant is.
    pol, snap = scenario
    state, mover = _mover(pol, snap, 0, 10**9)
    shapes = {spec_res(p.spec) for j in snap.pending for p in j.pods}
    for member in pol.member_names():
        for model in sorted({n.gpu_model or "" for n in snap.nodes}):
            for res in sorted(shapes):
                for i in range(len(state.nodes)):
                    if not mover._could_open(i, res, member):
                        assert mover._opening(i, res, member, model, set(), 1e18) is None


def _pushed_out(a_borrow_started: float = 1000.0) -> tuple[list, list[RunningPod]]:  # type: ignore[type-arg]
    """lab-b's only node b1 (8 GPUs) holds lab-a's borrowed a-on-b (4) and lab-c's c-x
    (2): lab-c runs within its entitlement, but on b1, because lab-a's a-on-c fills
    lab-c's own node c1. lab-a (entitled to 4, its a1 full) holds 12."""
    nodes = [node("a1", "lab-a", gpus=4), node("b1", "lab-b", gpus=8), node("c1", "lab-c", gpus=4)]
    run = [
        running("a-home", "lab-a", "a1", gpus=4, started_at=10.0),
        running("a-on-b", "lab-a", "b1", gpus=4, started_at=1000.0),
        running("a-on-c", "lab-a", "c1", gpus=4, started_at=a_borrow_started),
        running("c-x", "lab-c", "b1", gpus=2, started_at=1000.0),
    ]
    return nodes, run


def test_an_owner_kept_out_by_work_pushed_off_its_own_nodes_gets_it_sent_home() -> None:
    # A reclaim for lab-b's 8-GPU job may take a-on-b, not c-x (lab-c is within its
    # entitlement): 6 of 8 GPUs, and lab-b would wait until c-x ends. The chain: a-on-c
    # is taken back for lab-c, c-x moves home to c1, and b1 opens for lab-b.
    nodes, run = _pushed_out()
    pol = policy(["lab-a", "lab-b", "lab-c"], min_runtime_seconds=600)
    d = schedule(snapshot(nodes, [job("b-big", "lab-b", gpus=8)], run, now=2000.0), pol)
    assert {p.pod_uid: p.cause for p in d.preemptions} == {
        "a-on-b": "entitlement",
        "a-on-c": "entitlement",
        "c-x": "consolidation",
    }
    reasons = {p.pod_uid: plain(p.reason) for p in d.preemptions}
    assert "runs on borrowed GPUs of member lab-b" in reasons["a-on-b"]
    assert "runs on borrowed GPUs of member lab-c, whose moved work goes home" in reasons["a-on-c"]
    assert "it goes home: member lab-c is within its entitlement" in reasons["c-x"]
    assert [(n.job_id, n.nodes) for n in d.nominations] == [("b-big", {"b-big-0": "b1"})]
    # lab-a keeps a-home, its work within its entitlement on its own node.
    assert "a-home" not in moved(d)


def test_work_goes_home_only_when_borrowed_work_there_may_be_taken() -> None:
    # a-on-c younger than the minimum runtime: lab-c's node cannot be freed, c-x stays,
    # and lab-b waits (a-on-b alone would not make room, so nothing is taken either).
    nodes, run = _pushed_out(a_borrow_started=1800.0)
    pol = policy(["lab-a", "lab-b", "lab-c"], min_runtime_seconds=600)
    d = schedule(snapshot(nodes, [job("b-big", "lab-b", gpus=8)], run, now=2000.0), pol)
    assert d.preemptions == () and d.nominations == ()


def test_the_borrower_that_pushed_work_off_its_node_may_lose_both_of_its_jobs() -> None:
    # As above, but lab-a runs only 3 GPUs on its own a1: taking a-on-b and a-on-c
    # leaves it at 3 of its entitlement of 4 (and c-x does not fit on a1's free GPU).
    # It was above its entitlement until then, and both jobs run on nodes of the owners
    # they are taken for, so both go, as a reclaim takes back an owner's own nodes whole
    # (seed 36 of the sharing-incentive cases at x10: lab-b waited 15,650 s for its only
    # node otherwise).
    nodes, run = _pushed_out()
    run[0] = running("a-home", "lab-a", "a1", gpus=3, started_at=10.0)
    pol = policy(["lab-a", "lab-b", "lab-c"], min_runtime_seconds=600)
    d = schedule(snapshot(nodes, [job("b-big", "lab-b", gpus=8)], run, now=2000.0), pol)
    assert moved(d) == ["a-on-b", "a-on-c", "c-x"]
    assert [(n.job_id, n.nodes) for n in d.nominations] == [("b-big", {"b-big-0": "b1"})]


# -- why no move: the explanation names what keeps the nodes closed -------------------
def no_move(d: Decisions, job_id: str = "a-1") -> str:
    """The explanation's consolidation clause ("" when it has none)."""
    text = plain(d.explanations[job_id])
    at = text.find("consolidation found no move")
    if at < 0:
        at = text.find("consolidation made its")
    return "" if at < 0 else text[at:]


def test_a_refusal_names_owners_own_work_that_holds_the_nodes() -> None:
    run = [running(f"o-{n}-{k}", "lab-o", n) for n in ("o1", "o2", "o3") for k in range(3)]
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8)], run), POL)
    assert no_move(d) == (
        "consolidation found no move: o1, o2 and o3 hold their owners' own work within "
        "their entitlement, which moves only for them"
    )
    # For the owner's own job the same work may move, and what stops it is its cost.
    d = schedule(snapshot(NODES, [job("o-big", "lab-o", gpus=8)], run), POL)
    assert no_move(d, "o-big") == (
        "consolidation found no move: opening o1, o2 and o3 would throw away at least "
        "8.3 GPU-h of work, more than the 8 GPU-h a move may (maxConsolidationLossSeconds "
        "3600 s for each of its 8 GPUs)"
    )


def test_a_refusal_names_young_work_and_when_it_is_old_enough() -> None:
    # The pods on o1 started at 1,000 s, o2's at 2,000, o3's at 3,000; it is 10,000 s:
    # o1's are 20,000 s old at 21,000, in 11,000 s (183.3 min), before the others.
    pol = policy(MEMBERS, min_runtime_seconds=20_000)
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8)], scattered()), pol)
    assert no_move(d) == (
        "consolidation found no move: o1, o2 and o3 hold work younger than the minimum "
        "runtime of 20000 s (o1's is old enough first, in 3 h 4 min)"
    )
    # One node held by young work: its youngest pod decides (started at 9,500 s, old
    # enough in 500 s: whole minutes, so that the sentence changes once a minute at most).
    run = [running(f"o-{n}-{k}", "lab-o", n) for n in ("o1", "o2") for k in range(5)]
    run += [running("old", "lab-b", "o3", started_at=1000.0)]
    run += [running("late", "lab-b", "o3", started_at=9500.0)]
    pol = policy(MEMBERS, min_runtime_seconds=1_000)
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8)], run), pol)
    assert no_move(d) == (
        "consolidation found no move: o1 and o2 hold their owners' own work within their "
        "entitlement, which moves only for them; o3 holds work younger than the minimum "
        "runtime of 1000 s (old enough in 9 min)"
    )


def test_a_refusal_names_the_loss_budget_with_the_cheapest_nodes_loss() -> None:
    # The cheapest node, o3, throws away 3 x 7,000 GPU-seconds (5.8 GPU-h); the budget
    # is 8 GPUs x 1,800 s (4 GPU-h).
    pol = policy(MEMBERS, max_consolidation_loss_seconds=1800)
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8)], scattered()), pol)
    assert d.preemptions == ()
    assert no_move(d) == (
        "consolidation found no move: opening o1, o2 and o3 would throw away at least "
        "5.8 GPU-h of work, more than the 4 GPU-h a move may (maxConsolidationLossSeconds "
        "1800 s for each of its 8 GPUs)"
    )


def test_a_refusal_leaves_out_nodes_too_small_for_the_pod() -> None:
    # s1 and s2 have 4 GPUs: no move could ever make room there for an 8-GPU pod, so
    # neither lab-b's own work on s1 nor the empty s2 is what keeps the job waiting.
    nodes = [node("a1", "lab-a"), node("a2", "lab-a")]
    nodes += [node("s1", "lab-b", gpus=4), node("s2", "lab-b", gpus=4)]
    run = [running("x", "lab-a", "a1", gpus=4), running("y", "lab-a", "a2", gpus=4)]
    run.append(running("z", "lab-b", "s1", gpus=4))
    d = schedule(snapshot(nodes, [job("j", "lab-a", gpus=8)], run), policy(["lab-a", "lab-b"]))
    assert d.preemptions == ()
    assert no_move(d, "j") == (
        "consolidation found no move: opening a1 and a2 would throw away at least 11.1 "
        "GPU-h of work, more than the 8 GPU-h a move may (maxConsolidationLossSeconds 3600 "
        "s for each of its 8 GPUs)"
    )


def test_a_refusal_names_work_that_fits_nowhere_else() -> None:
    # lab-c checkpoints: opening any node loses nothing, but its 5-GPU pods fit on no
    # other node once lab-a holds the opened one, and lab-c is not above its fair share.
    run = [running(f"c-{n}", "lab-c", n, gpus=5) for n in ("o1", "o2", "o3")]
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8)], run), POL)
    assert d.preemptions == ()
    assert no_move(d) == (
        "consolidation found no move: o1, o2 and o3 could be opened, but the work leaving "
        "them would fit on no other node"
    )


def test_a_refusal_for_a_gang_says_the_openable_nodes_are_too_few() -> None:
    nodes = [*NODES, node("o4", "lab-o")]
    run = [running(f"c-{k}", "lab-c", "o1") for k in range(3)]
    run += [running(f"o-{n}-{k}", "lab-o", n) for n in ("o2", "o3") for k in range(3)]
    run += [running(f"o-o4-{k}", "lab-o", "o4") for k in range(7)]
    d = schedule(snapshot(nodes, [job("a-1", "lab-a", gpus=8, pods=2)], run), POL)
    assert d.preemptions == ()
    assert no_move(d) == (
        "consolidation found no move: o2, o3 and o4 hold their owners' own work within "
        "their entitlement, which moves only for them; o1 could be opened, but it is not "
        "enough for the whole job"
    )


def test_a_refusal_names_work_at_the_reclaim_limit() -> None:
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8)], scattered(reclaims=3)), POL)
    assert no_move(d) == (
        "consolidation found no move: o1, o2 and o3 hold work reclaimed 3 times already "
        "(maxReclaimsPerJob), never moved again"
    )


def test_a_refusal_tells_apart_what_nothing_may_move() -> None:
    # o1: 3 GPUs of another scheduler's, then b-n (4 GPUs) binds there in the cycle;
    # o2: work at the reclaim limit; o3: 4 GPUs of terminating pods, 2 of another
    # scheduler's. Each node is named for what holds most of its GPUs (it was one
    # clause for all four: "work consolidation never moves (another scheduler's,
    # terminating, or reclaimed maxReclaimsPerJob times) or GPUs held for other
    # waiting jobs").
    run = [running(f"x-{k}", None, "o1", scheduled_by_fairpool=False) for k in range(3)]
    run += [running(f"l-{k}", "lab-b", "o2", reclaims=3) for k in range(3)]
    run += [running(f"t-{k}", "lab-c", "o3", terminating=True) for k in range(4)]
    run += [running(f"y-{k}", None, "o3", scheduled_by_fairpool=False) for k in range(2)]
    pending = [job("a-1", "lab-a", gpus=8), job("b-n", "lab-b", gpus=4)]
    d = schedule(snapshot(NODES, pending, run), POL)
    assert [b.node for b in d.binds] == ["o1"]
    assert no_move(d) == (
        "consolidation found no move: o2 holds work reclaimed 3 times already "
        "(maxReclaimsPerJob), never moved again; o1 holds work started in this cycle; o3 "
        "holds pods still terminating"
    )


def test_a_refusal_names_gpus_held_for_other_jobs_and_pods_of_other_schedulers() -> None:
    run = [running(f"x-{k}", None, "o1", scheduled_by_fairpool=False) for k in range(3)]
    run += [running(f"y-{k}", "lab-b", "o2", scheduled_by_fairpool=False) for k in range(3)]
    snap = snapshot(NODES, [job("a-1", "lab-a", gpus=8)], run)
    state, mover = _mover(POL, snap, 0, 3600)
    state.hold("b-n", state.index["o3"], (6, 0, 0, 1))  # a nomination of another job
    state.hold("a-1", state.index["o2"], (1, 0, 0, 1))  # the claimant's own: its to use
    refusal = mover.refusal(snap.pending[0], H100, {}, snap.running, 3)
    assert (refusal.unscheduled, refusal.held, refusal.fixed) == (("o1", "o2"), ("o3",), ())
    assert no_move_detail(refusal, 8, 0, 3600, 3) == (
        "consolidation found no move: o3 holds GPUs held for other waiting jobs; o1 and o2 "
        "hold pods fairpool does not schedule"
    )


def test_the_moves_of_a_cycle_spent_are_said() -> None:
    pol = policy(MEMBERS, max_consolidations_per_cycle=1)
    jobs = [job("a-1", "lab-a", gpus=8), job("a-2", "lab-a", gpus=8)]
    d = schedule(snapshot(NODES, jobs, scattered()), pol)
    assert no_move(d, "a-1") == ""  # it got the move
    assert no_move(d, "a-2") == (
        "consolidation made its 1 move of this cycle already (maxConsolidationsPerCycle)"
    )
    # Turned off by the policy: nothing to say (the reference engine, which has no
    # consolidation, must write the very same sentences: test_engine_reference.py).
    pol = policy(MEMBERS, max_consolidations_per_cycle=0)
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8)], scattered()), pol)
    assert no_move(d) == "" and "no node has 8 free" in plain(d.explanations["a-1"])


def test_no_refusal_when_the_wait_is_not_fragmentation() -> None:
    # Nothing is free: too few GPUs, not scattered ones; reclaim says why, not consolidation.
    run = [running(f"o-{n}-{k}", "lab-o", n) for n in ("o1", "o2", "o3") for k in range(8)]
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8)], run), POL)
    assert plain(d.explanations["a-1"]) and no_move(d) == ""


def test_a_refusal_says_when_the_budget_may_be_what_stops_a_gangs_move() -> None:
    # Each node costs 2 x 5,000 GPU-seconds to open, within the gang's budget of 16 GPUs
    # x 800 s = 12,800; the two nodes it needs together cost 20,000.
    run = [
        running(f"b-{n}-{k}", "lab-b", n, started_at=5000.0)
        for n in ("o1", "o2", "o3")
        for k in range(2)
    ]
    pol = policy(MEMBERS, max_consolidation_loss_seconds=800)
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8, pods=2)], run), pol)
    assert d.preemptions == ()
    assert no_move(d) == (
        "consolidation found no move: o1, o2 and o3 could be opened, but not within the "
        "budget for the whole job, or not with the work leaving them placed elsewhere"
    )
    # With the budget for both nodes, the gang gets them.
    pol = policy(MEMBERS, max_consolidation_loss_seconds=1250)
    d = schedule(snapshot(NODES, [job("a-1", "lab-a", gpus=8, pods=2)], run), pol)
    assert len(d.preemptions) == 4


@given(scenarios())
@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_refusal_names_each_closed_node_once_and_no_open_one(
    scenario: tuple[Policy, Snapshot],
) -> None:
    # Every node of the job's model it may use and that has no room for its biggest pod,
    # but would have empty, is named under exactly one cause; no other node is named.
    pol, snap = scenario
    sharing = pol.sharing
    loss = sharing.max_consolidation_loss_seconds
    state, mover = _mover(pol, snap, sharing.min_runtime_seconds, loss)
    for waiting in snap.pending:
        for model in sorted({n.gpu_model for n in snap.nodes if n.gpu_model}):
            refusal = mover.refusal(waiting, model, {}, snap.running, sharing.max_reclaims_per_job)
            named = [
                *refusal.guaranteed,
                *refusal.young,
                *refusal.leaving,
                *refusal.at_limit,
                *refusal.held,
                *refusal.started,
                *refusal.terminating,
                *refusal.unscheduled,
                *refusal.fixed,
                *refusal.costly,
                *refusal.openable,
            ]
            biggest = max((spec_res(p.spec) for p in waiting.pods), key=lambda r: (r[0], r))
            feasible = state.feasible((p.spec for p in waiting.pods), model)
            closed = sorted(
                n.name
                for i in feasible
                if not state.fits(i, biggest)
                and (n := state.nodes[i]).gpus >= biggest[0]
                and n.cpu_milli >= biggest[1]
                and n.memory_bytes >= biggest[2]
            )
            assert sorted(named) == closed
            budget = waiting.gpus * sharing.max_consolidation_loss_seconds
            if refusal.costly:
                assert refusal.cheapest_loss_gpu_s > budget
            else:
                assert refusal.cheapest_loss_gpu_s == 0.0


def test_a_refusal_names_the_owners_when_many_nodes_hold_their_own_work() -> None:
    nodes = [*NODES, node("o4", "lab-o")]
    run = [running(f"o-{n.name}-{k}", "lab-o", n.name) for n in nodes for k in range(3)]
    d = schedule(snapshot(nodes, [job("a-1", "lab-a", gpus=8)], run), POL)
    assert no_move(d) == (
        "consolidation found no move: 4 nodes of lab-o hold its own work within its "
        "entitlement, which moves only for lab-o"
    )
    nodes = [*NODES, node("b1", "lab-b"), node("b2", "lab-b")]
    run = [running(f"x-{n.name}-{k}", n.owner, n.name) for n in nodes for k in range(3)]  # type: ignore[arg-type]
    d = schedule(snapshot(nodes, [job("a-1", "lab-a", gpus=8)], run), POL)
    assert no_move(d) == (
        "consolidation found no move: 5 nodes (3 of lab-o and 2 of lab-b) hold their "
        "owners' own work within their entitlement, which moves only for them"
    )
