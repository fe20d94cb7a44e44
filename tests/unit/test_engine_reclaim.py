"""Reclaim: who is preempted, in which order, and what is held for whom."""

from __future__ import annotations

from policies.model import Policy
from scheduler.engine import schedule
from scheduler.engine.decisions import Decisions
from scheduler.engine.mentions import plain
from tests.unit.engine_strategies import (
    A100,
    H100,
    job,
    node,
    policy,
    running,
    snapshot,
    without_consolidation,
)

POL = policy(["lab-a", "lab-b", "lab-c"], reclaim_grace_period_seconds=45)


def preempted(d: object) -> list[str]:
    return [p.pod_uid for p in d.preemptions]  # type: ignore[attr-defined]


def test_reclaims_borrowed_pods_for_a_member_below_its_fair_share() -> None:
    nodes = [node("a1", "lab-a"), node("a2", "lab-a"), node("b1", "lab-b")]
    run = [
        running("b-own", "lab-b", "b1", gpus=8, started_at=0),
        running("b-x", "lab-b", "a1", gpus=4, started_at=100),
        running("b-y", "lab-b", "a1", gpus=4, started_at=200),
    ]
    pending = [job("a-1", "lab-a", gpus=8), job("a-2", "lab-a", gpus=8, submitted_at=1)]
    d = schedule(snapshot(nodes, pending, run), POL)
    # a-1 fits on a2; a-2 (lab-a: 8 held + 8 <= fair share 16) needs a1 back.
    assert [(b.job_id, b.node) for b in d.binds] == [("a-1", "a2")]
    assert sorted(preempted(d)) == ["b-x", "b-y"]
    p = d.preemptions[0]
    assert (p.victim_member, p.reclaimer, p.for_job, p.grace_period_seconds) == (
        "lab-b",
        "lab-a",
        "a-2",
        45,
    )
    assert "above its fair share of 8" in plain(p.reason)
    assert p.cause == "entitlement"  # lab-a's 16 GPUs are its own two nodes
    assert [(n.job_id, n.nodes) for n in d.nominations] == [("a-2", {"a-2-0": "a1"})]
    assert plain(d.explanations["a-2"]) == (
        f"member lab-a is below its fair share of 16 {H100} (holds 8); preempting 2 "
        "borrowed pods (lab-b/b-y of lab-b, lab-b/b-x of lab-b) with a grace period of "
        "45 s; their GPUs are held for this job"
    )
    # The pods within lab-b's entitlement (its own node) are never touched.
    assert "b-own" not in preempted(d)


def test_no_reclaim_from_members_at_their_fair_share() -> None:
    nodes = [node("a1", "lab-a"), node("b1", "lab-b"), node("c1", "lab-c")]
    run = [
        running("a-own", "lab-a", "a1", gpus=8),
        running("b-own", "lab-b", "b1", gpus=8),
        running("b-x", "lab-b", "c1", gpus=4),
        running("other", None, "c1", gpus=4),
    ]
    # Fair shares: 8 each plus half of lab-c's idle 8 -> 12 each. lab-b holds exactly 12.
    d = schedule(snapshot(nodes, [job("a-1", "lab-a", gpus=4)], run), POL)
    assert d.preemptions == ()
    assert plain(d.explanations["a-1"]) == (
        f"member lab-a is below its fair share of 12 {H100} (holds 8); all {H100} on nodes "
        "it may use are taken; nothing can be reclaimed: no member above its fair share "
        f"holds borrowed {H100} GPUs it could use"
    )


def test_no_reclaim_for_a_job_that_would_exceed_the_fair_share() -> None:
    nodes = [node("a1", "lab-a"), node("b1", "lab-b")]
    run = [
        running("a-own", "lab-a", "a1", gpus=4),
        running("b-own", "lab-b", "b1", gpus=8),
        running("b-x", "lab-b", "a1", gpus=4),
    ]
    d = schedule(snapshot(nodes, [job("a-1", "lab-a", gpus=8)], run), POL)
    assert d.preemptions == ()
    assert plain(d.explanations["a-1"]) == (
        f"member lab-a is below its fair share of 8 {H100} (holds 4); all {H100} on nodes "
        "it may use are taken; with this job it would hold 12, above its fair share of 8, "
        f"and no member further above its own fair share holds borrowed {H100} GPUs it "
        "could use"
    )


def test_a_gang_beyond_the_fair_share_reclaims_from_members_further_above() -> None:
    # lab-a holds 4 of its fair share of 8 and wants a 2 x 4 gang (12 > 8, ratio 1.5);
    # lab-b holds 16 of its fair share of 8 (ratio 2) with 8 borrowed on lab-a's node.
    nodes = [node("a1", "lab-a"), node("b1", "lab-b"), node("c1", "lab-c")]
    run = [
        running("a-own", "lab-a", "c1", gpus=4),
        running("c-own", "lab-c", "c1", gpus=4),
        running("b-own", "lab-b", "b1", gpus=8),
        running("b-x", "lab-b", "a1", gpus=4, started_at=100),
        running("b-y", "lab-b", "a1", gpus=4, started_at=200),
    ]
    # lab-c's job would borrow too (4 + 8 > its 8), so both wait in fair-share order
    # (ratios 0.5 and 0.5, lab-a by name); fair shares stay 8 each (24 GPUs, demand 12 each).
    pending = [job("g", "lab-a", pods=2, gpus=4), job("c", "lab-c", gpus=8)]
    d = schedule(snapshot(nodes, pending, run), POL)
    # lab-b may only go down to its fair share: both pods are needed and 16 - 8 = 8 >= 8.
    assert sorted(preempted(d)) == ["b-x", "b-y"]
    # lab-a's gang takes it beyond its entitlement of 8: a reclaim for its fair share.
    assert {p.cause for p in d.preemptions} == {"fair_share"}
    assert [(n.job_id, sorted(n.nodes.values())) for n in d.nominations] == [("g", ["a1", "a1"])]
    # Had lab-c asked for 4 (4 + 4 <= its entitlement of 8), its entitled demand would go
    # first and take back lab-b's youngest borrowed pod; the gang then finds only b-x's 4.
    pending = [job("g", "lab-a", pods=2, gpus=4), job("c", "lab-c", gpus=4)]
    d = schedule(snapshot(nodes, pending, run), POL)
    assert preempted(d) == ["b-y"]
    assert [(n.job_id, n.nodes) for n in d.nominations] == [("c", {"c-0": "a1"})]
    assert {p.cause for p in d.preemptions} == {"entitlement"}


def test_owner_nodes_first() -> None:
    nodes = [node("a1", "lab-a"), node("c1", "lab-c")]
    run = [
        running("a-own", "lab-a", "a1", gpus=4),
        running("b-on-a", "lab-b", "a1", gpus=4, started_at=100),
        running("b-on-c1", "lab-b", "c1", gpus=4, started_at=9000),
        running("b-on-c2", "lab-b", "c1", gpus=4, started_at=9000),
    ]
    d = schedule(snapshot(nodes, [job("a-1", "lab-a", gpus=4)], run), POL)
    assert preempted(d) == ["b-on-a"]
    assert d.nominations[0].nodes == {"a-1-0": "a1"}


def _youngest_case(**sharing: object) -> tuple[list, list]:  # type: ignore[type-arg]
    nodes = [node("a1", "lab-a"), node("a2", "lab-a"), node("b1", "lab-b")]
    run = [
        running("a-own", "lab-a", "a2", gpus=8),
        running("b-own", "lab-b", "b1", gpus=8),
        running("b-old", "lab-b", "a1", gpus=4, started_at=100),
        running("b-young", "lab-b", "a1", gpus=4, started_at=5000),
    ]
    return nodes, run


def test_youngest_first() -> None:
    nodes, run = _youngest_case()
    d = schedule(snapshot(nodes, [job("a-1", "lab-a", gpus=4)], run, now=10_000), POL)
    assert preempted(d) == ["b-young"]


def test_lowest_priority_breaks_age_ties() -> None:
    nodes, run = _youngest_case()
    run[2] = running("b-low", "lab-b", "a1", gpus=4, started_at=5000, priority=0)
    run[3] = running("b-high", "lab-b", "a1", gpus=4, started_at=5000, priority=5)
    d = schedule(snapshot(nodes, [job("a-1", "lab-a", gpus=4)], run, now=10_000), POL)
    assert preempted(d) == ["b-low"]


def test_min_runtime_respected_unless_policy_allows() -> None:
    nodes, run = _youngest_case()
    pol = policy(["lab-a", "lab-b"], min_runtime_seconds=6000)
    d = schedule(snapshot(nodes, [job("a-1", "lab-a", gpus=4)], run, now=10_000), pol)
    assert preempted(d) == ["b-old"]  # b-young has run 5000 s < 6000 s
    pol = policy(["lab-a", "lab-b"], min_runtime_seconds=20_000)
    d = schedule(snapshot(nodes, [job("a-1", "lab-a", gpus=4)], run, now=10_000), pol)
    assert d.preemptions == () and d.nominations == ()
    assert plain(d.explanations["a-1"]).endswith(
        "the borrowed pods it needs back have run less than the minimum runtime of "
        "20000 s; none of the GPUs it will use is idle yet"
    )
    pol = policy(["lab-a", "lab-b"], min_runtime_seconds=20_000, preempt_below_min_runtime=True)
    d = schedule(snapshot(nodes, [job("a-1", "lab-a", gpus=4)], run, now=10_000), pol)
    assert preempted(d) == ["b-young"]


def test_gangs_preempted_whole_and_terminating_capacity_reused() -> None:
    nodes = [node("a1", "lab-a", gpus=4), node("c1", None, gpus=4)]
    run = [
        running("bg-0", "lab-b", "a1", gpus=2, job_id="bg", started_at=5000),
        running("bg-1", "lab-b", "c1", gpus=2, job_id="bg", started_at=5000),
        running("bs", "lab-b", "a1", gpus=2, started_at=0),
        running("bt", "lab-b", "c1", gpus=2, started_at=0),
    ]
    pending = [job("j1", "lab-a", gpus=2), job("j2", "lab-a", gpus=2, submitted_at=1)]
    d = schedule(snapshot(nodes, pending, run), POL)
    # The gang goes whole (its c1 pod too); j2 then fits on the capacity bg-1 frees:
    # nothing more is preempted for it.
    assert sorted(preempted(d)) == ["bg-0", "bg-1"]
    assert {n.job_id: n.nodes for n in d.nominations} == {
        "j1": {"j1-0": "a1"},
        "j2": {"j2-0": "c1"},
    }


def test_nominated_job_waits_for_terminating_pods_and_keeps_its_room() -> None:
    nodes = [node("a1", "lab-a", gpus=8)]
    run = [
        running("a-own", "lab-a", "a1", gpus=4),
        running("b-x", "lab-b", "a1", gpus=4, terminating=True),
    ]
    pending = [
        job("a-2", "lab-a", gpus=4, nominated={"a-2-0": "a1"}, submitted_at=5),
        job("c-1", "lab-c", gpus=4),
    ]
    d = schedule(snapshot(nodes, pending, run), POL)
    assert d.binds == () and d.preemptions == ()
    # Not "1 preempted pod": the engine cannot tell an eviction from a pod its user
    # deleted (a started PodGroup's pod, whose room its waiting pod is held).
    assert plain(d.explanations["a-2"]).endswith(
        f"{H100} (holds 4); 1 pod still terminating on a1; their GPUs are held for this job"
    ), plain(d.explanations["a-2"])
    # Once it is gone, the nominated job gets the room even though lab-c would go first.
    run = run[:1]
    nodes2 = [node("a1", "lab-a", gpus=8)]
    d = schedule(snapshot(nodes2, pending, run), POL)
    assert [(b.job_id, b.node) for b in d.binds] == [("a-2", "a1")]
    assert "c-1" in d.explanations


def test_no_preemption_when_the_job_fits() -> None:
    nodes = [node("a1", "lab-a"), node("b1", "lab-b")]
    run = [running("b-x", "lab-b", "a1", gpus=4)]
    d = schedule(snapshot(nodes, [job("a-1", "lab-a", gpus=4)], run), POL)
    assert d.preemptions == () and len(d.binds) == 1


def _young_borrower_on_a1() -> tuple[Policy, list, list]:  # type: ignore[type-arg]
    """lab-b's 4-GPU pod on lab-a's node a1, 1000 s old, under a 6000 s minimum runtime:
    a1's other 4 GPUs idle."""
    pol = policy(["lab-a", "lab-b"], min_runtime_seconds=6000)
    nodes = [node("a1", "lab-a"), node("b1", "lab-b")]
    run = [
        running("b-own", "lab-b", "b1", gpus=8),
        running("b-young", "lab-b", "a1", gpus=4, started_at=9000),
    ]
    return pol, nodes, run


def test_free_gpus_are_held_while_young_victims_age() -> None:
    pol, nodes, run = _young_borrower_on_a1()
    pending = [job("a-big", "lab-a", gpus=8), job("b-more", "lab-b", gpus=4)]
    d = schedule(snapshot(nodes, pending, run, now=10_000), pol)
    # Without the hold, b-more would take a1's 4 idle GPUs and a-big would starve.
    assert d.binds == () and d.preemptions == () and d.nominations == ()
    assert plain(d.explanations["a-big"]).endswith(
        "; the 4 idle GPUs it will use are held for it meanwhile"
    )
    # Once b-young is old enough, it is preempted and a1 is nominated for a-big.
    d = schedule(snapshot(nodes, pending, run, now=20_000), pol)
    assert [p.pod_uid for p in d.preemptions] == ["b-young"]
    assert d.nominations[0].nodes == {"a-big-0": "a1"}


def test_a_members_next_job_is_told_what_its_waiting_jobs_hold() -> None:
    # a-big's drain holds a1 for it; a-next then finds lab-a at its fair share once that
    # is counted, which "holds 0" alone would hide.
    pol, nodes, run = _young_borrower_on_a1()
    pending = [job("a-big", "lab-a", gpus=8), job("a-next", "lab-a", gpus=4)]
    d = schedule(snapshot(nodes, pending, run, now=10_000), pol)
    assert plain(d.explanations["a-next"]) == (
        f"member lab-a is below its fair share of 8 {H100} (holds 0; 8 more in nominations "
        f"for its other waiting jobs); all {H100} on nodes it may use are taken"
    )
    # A job's own nomination is said by its own detail, not counted again.
    assert plain(d.explanations["a-big"]).startswith(
        f"member lab-a is below its fair share of 8 {H100} (holds 0); "
    )


# -- within the entitlement: any borrowed pods, down to their member's entitlement ------

ENT_POL = policy(["physics", "ai-startup", "lab-c"], reclaim_grace_period_seconds=45)


def _fragmented(ai_pods: list) -> tuple[list, list]:  # type: ignore[type-arg]
    """physics owns p1, p2 (entitlement 16); ai-startup owns s1 (8); lab-c owns c1, c2
    (4 each, 2 used on each: 2 + 2 free); x1 (8, no owner) is full of a foreign pod."""
    nodes = [
        node("p1", "physics"),
        node("p2", "physics"),
        node("c1", "lab-c", 4),
        node("c2", "lab-c", 4),
        node("x1", None),
    ]
    run = [
        running("c-1", "lab-c", "c1", gpus=2),
        running("c-2", "lab-c", "c2", gpus=2),
        running("foreign", None, "x1", gpus=8),
        *ai_pods,
    ]
    return nodes, run


def test_below_its_entitlement_reclaims_from_a_borrower_at_its_fair_share() -> None:
    nodes, run = _fragmented(
        [
            running("ai-own", "ai-startup", "s1", gpus=8, started_at=0),
            running("ai-1", "ai-startup", "p1", gpus=8, started_at=100),
            running("ai-2", "ai-startup", "p2", gpus=8, started_at=200),
        ]
    )
    nodes.append(node("s1", "ai-startup"))
    d = schedule(snapshot(nodes, [job("p-1", "physics", gpus=8)], run), ENT_POL)
    # Capacity 40; guaranteed 8 (physics) + 8 (ai) + 4 (lab-c), surplus 20 -> ai's fair
    # share is its demand, 24: it holds exactly that, nobody is above its fair share.
    shares = {s.member: s for s in d.shares}
    assert (shares["ai-startup"].allocated, shares["ai-startup"].fair_share) == (24, 24.0)
    # physics holds 0 + 8 <= 16 entitled: ai-startup's borrowed pods on physics' own nodes
    # are taken back, the youngest first, and only as many as needed (ai -> 16 >= 8).
    assert preempted(d) == ["ai-2"]
    assert plain(d.preemptions[0].reason) == (
        f"reclaim for member physics (holds 0 of its entitlement of 16 {H100}, job p-1 of "
        "physics needs 8): member ai-startup holds 24, above its entitlement of 8, and job "
        "ai-startup/ai-2 runs on borrowed GPUs"
    )
    assert [(n.job_id, n.nodes) for n in d.nominations] == [("p-1", {"p-1-0": "p2"})]
    assert plain(d.explanations["p-1"]) == (
        f"member physics is below its fair share of 8 {H100} (holds 0); preempting 1 "
        "borrowed pod (ai-startup/ai-2 of ai-startup) with a grace period of 45 s; their "
        "GPUs are held for this job"
    )


def test_an_owner_gets_its_nodes_back_from_a_gang_straddling_the_entitlement() -> None:
    # The demo's 21 h breach, shrunk: ai-startup's node s1 is cordoned (still entitled to
    # 8) and it runs a 2 x 8 gang on physics' two nodes: one pod within its entitlement,
    # one borrowed (16 > 8). physics holds 0 of its 16 and wants 8; only 2 + 2 are free
    # elsewhere. Keeping ai-startup at its entitlement would keep the owner at 0 of its
    # contribution for the gang's whole run, so the gang goes (whole).
    nodes, run = _fragmented(
        [
            running("ai-g-0", "ai-startup", "p1", gpus=8, job_id="ai-g", started_at=100),
            running("ai-g-1", "ai-startup", "p2", gpus=8, job_id="ai-g", started_at=100),
        ]
    )
    nodes.append(node("s1", "ai-startup", unschedulable=True))
    d = schedule(snapshot(nodes, [job("p-1", "physics", gpus=8)], run), ENT_POL)
    assert preempted(d) == ["ai-g-0", "ai-g-1"]
    assert {(p.victim_member, p.reclaimer, p.for_job) for p in d.preemptions} == {
        ("ai-startup", "physics", "p-1")
    }
    assert [(n.job_id, n.nodes) for n in d.nominations] == [("p-1", {"p-1-0": "p1"})]


def test_an_owner_does_not_take_a_gang_of_a_member_within_its_entitlement() -> None:
    # Control: the same gang, but ai-startup bought 8 H100, backed by x1 (no owner), so
    # its entitlement is 16 and it holds 16: no borrowed pod, nothing to take back.
    pol = policy(
        {"physics": {}, "ai-startup": {"purchased": {H100: 8}}, "lab-c": {}},
        reclaim_grace_period_seconds=45,
    )
    nodes, run = _fragmented(
        [
            running("ai-g-0", "ai-startup", "p1", gpus=8, job_id="ai-g", started_at=100),
            running("ai-g-1", "ai-startup", "p2", gpus=8, job_id="ai-g", started_at=100),
        ]
    )
    nodes.append(node("s1", "ai-startup", unschedulable=True))
    d = schedule(snapshot(nodes, [job("p-1", "physics", gpus=8)], run), pol)
    assert d.preemptions == ()


def test_within_the_entitlement_members_furthest_above_their_fair_share_go_first() -> None:
    # physics (p1, p2) wants 8; lab-b (weight 3) and lab-c (weight 1) each own 8 and
    # borrow 8 on physics' nodes. Capacity 32: guaranteed 8 + 8 + 8, the surplus 8 split
    # 3 : 1 -> lab-b 14, lab-c 10. lab-c is further above (16 / 10 > 16 / 14): its older
    # pod goes rather than lab-b's younger one. Neither would be taken under the fair
    # share rules (both would fall below their fair share).
    pol = policy({"physics": {}, "lab-b": {"weight": 3}, "lab-c": {"weight": 1}})
    nodes = [
        node("p1", "physics"),
        node("p2", "physics"),
        node("b1", "lab-b"),
        node("c1", "lab-c"),
    ]
    run = [
        running("b-own", "lab-b", "b1", gpus=8),
        running("b-x", "lab-b", "p1", gpus=8, started_at=900),
        running("c-own", "lab-c", "c1", gpus=8),
        running("c-x", "lab-c", "p2", gpus=8, started_at=100),
    ]
    d = schedule(snapshot(nodes, [job("p-1", "physics", gpus=8)], run), pol)
    shares = {s.member: s.fair_share for s in d.shares}
    assert (shares["lab-b"], shares["lab-c"]) == (14.0, 10.0)
    assert preempted(d) == ["c-x"]
    assert "member lab-c holds 16, above its fair share of 10" in plain(d.preemptions[0].reason)


def test_within_the_entitlement_young_borrowed_pods_are_drained_not_preempted() -> None:
    nodes, run = _fragmented(
        [
            running("ai-own", "ai-startup", "s1", gpus=8, started_at=0),
            running("ai-1", "ai-startup", "p1", gpus=8, started_at=9_800),
            running("ai-2", "ai-startup", "p2", gpus=8, started_at=9_900),
        ]
    )
    nodes.append(node("s1", "ai-startup"))
    pol = policy(
        ["physics", "ai-startup", "lab-c"], reclaim_grace_period_seconds=45, min_runtime_seconds=600
    )
    d = schedule(snapshot(nodes, [job("p-1", "physics", gpus=8)], run, now=10_000), pol)
    assert d.preemptions == ()
    assert plain(d.explanations["p-1"]) == (
        f"member physics is below its fair share of 8 {H100} (holds 0); the borrowed pods "
        "it needs back have run less than the minimum runtime of 600 s; none of the GPUs it "
        "will use is idle yet"
    )


def _scattered(with_extra: bool, consolidation: bool = True) -> Decisions:
    # physics owns p1, p2 and ai-startup owns s1 (8 GPUs each; entitlements 16 and 8).
    # ai-startup runs 5 on s1 (3 free there), 2 on p1 and, if `with_extra`, 2 on p2:
    # 9 > 8, and only the p2 pod counts as borrowed (own nodes first, then the oldest).
    nodes = [node("p1", "physics"), node("p2", "physics"), node("s1", "ai-startup")]
    run = [
        running("ai-own", "ai-startup", "s1", gpus=5, started_at=0),
        running("ai-a", "ai-startup", "p1", gpus=2, started_at=100),
    ]
    if with_extra:
        run.append(running("ai-b", "ai-startup", "p2", gpus=2, started_at=200))
    gang = job("p-g", "physics", pods=2, gpus=8)
    pol = ENT_POL if consolidation else without_consolidation(ENT_POL)
    return schedule(snapshot(nodes, [gang], run), pol)


def test_an_owner_takes_back_all_its_nodes_from_a_member_above_its_entitlement() -> None:
    # physics (0 of 16) wants a 2 x 8 gang: both its nodes. Taking only the borrowed ai-b
    # frees p2, not p1; ai-a sits on physics' own node and ai-startup is above its
    # entitlement, so ai-a goes too (ai-startup falls to 5 < 8, and takes its own node
    # back by the same rules). ai-own, on ai-startup's node, stays.
    d = _scattered(with_extra=True)
    assert sorted(preempted(d)) == ["ai-a", "ai-b"]
    assert [(n.job_id, n.nodes) for n in d.nominations] == [("p-g", {"p-g-0": "p1", "p-g-1": "p2"})]


def test_an_owner_leaves_a_member_within_its_entitlement_on_its_nodes() -> None:
    # Without ai-b, ai-startup holds 7 <= 8: nothing of it is borrowed, so nothing is
    # reclaimed. Consolidation moves ai-a instead (17 GPUs are free: physics waits only
    # for fragmentation, and ai-a fits on ai-startup's own node s1).
    d = _scattered(with_extra=False)
    assert [(p.pod_uid, p.cause) for p in d.preemptions] == [("ai-a", "consolidation")]
    d = _scattered(with_extra=False, consolidation=False)
    assert d.preemptions == ()


def _borrowed_a100(lab_a: dict[str, object]) -> Decisions:
    """lab-a owns an idle 2-GPU H100 node and runs a 1-GPU pod on the only A100 node
    anyone can use now, an unowned one; lab-b owns a cordoned 2-GPU A100 node and wants
    1 A100."""
    nodes = [
        node("a1", "lab-a", gpus=2, model=H100),
        node("u1", None, gpus=1, model=A100),
        node("b1", "lab-b", gpus=2, model=A100, unschedulable=True),
    ]
    run = [running("a-x", "lab-a", "u1", gpus=1)]
    pol = policy({"lab-a": lab_a, "lab-b": {}})
    return schedule(snapshot(nodes, [job("b-1", "lab-b", gpus=1, gpu_model=A100)], run), pol)


def test_an_entitlement_on_another_model_does_not_protect_borrowed_pods() -> None:
    """Entitlements are per GPU model: an H100 entitlement does not protect A100 pods.

    lab-a is entitled to 2 H100 (its node) and holds none: it asks for no H100. On A100 it
    is entitled to 0 and holds 1 on the unowned node: 1 borrowed A100, a reclaimable pod.
    lab-b holds 0 of its 2 A100 (its node is cordoned but Ready, so it still contributes)
    and its 1-GPU job keeps it within that entitlement: reclaim within the entitlement
    takes back a-x, leaving lab-a at 0 A100, exactly its A100 entitlement.

    Hypothesis reported this as "a member within its entitlement preempted": the property
    compared lab-a's position after the cycle with its entitlement on every model, so the
    H100 row (0 of 2, untouched by the cycle) failed it. The engine is right and the
    property was wrong; it now checks the floors on the models where a member loses GPUs.
    """
    d = _borrowed_a100({})
    shares = {(s.member, s.gpu_model): s for s in d.shares}
    a_h100, a_a100 = shares[("lab-a", H100)], shares[("lab-a", A100)]
    assert (a_h100.allocated, a_h100.entitlement) == (0, 2)
    assert (a_a100.allocated, a_a100.entitlement, a_a100.borrowed) == (1, 0, 1)
    assert (shares[("lab-b", A100)].allocated, shares[("lab-b", A100)].entitlement) == (0, 2)
    assert preempted(d) == ["a-x"]
    p = d.preemptions[0]
    assert (p.victim_member, p.reclaimer, p.for_job) == ("lab-a", "lab-b", "b-1")
    assert "above its entitlement of 0" in plain(p.reason)
    assert [(n.job_id, n.nodes) for n in d.nominations] == [("b-1", {"b-1-0": "u1"})]


def test_a_pod_within_the_entitlement_of_its_model_is_never_reclaimed() -> None:
    """The same cluster with lab-a entitled to 1 A100 (a purchase, backed by the unowned
    node): a-x is within lab-a's A100 entitlement, so it is not reclaimable and lab-b's
    job waits although lab-b is within its own entitlement."""
    d = _borrowed_a100({"purchased": {A100: 1}})
    shares = {(s.member, s.gpu_model): s for s in d.shares}
    assert (shares[("lab-a", A100)].allocated, shares[("lab-a", A100)].entitlement) == (1, 1)
    assert d.preemptions == () and d.nominations == () and d.binds == ()
    assert "b-1" in d.explanations


def test_an_owner_takes_back_its_node_from_a_member_its_own_bind_took_above_entitlement() -> None:
    """A victim's position counts its binds of the same cycle.

    lab-c is entitled to 2 H100 (c1) and 2 A100 (c2, which takes no pod) and holds 1 H100 on
    lab-b's node b1, within its H100 entitlement: no reclaimable pod. Its job c-1 asks 2
    GPUs of no model; its demand counts against A100 (the most free), so it goes first as
    entitled demand, and it is placed on c1: lab-c now holds 3 of its 2 H100. lab-b's
    job b-1 (2 of its 2 H100 with it) finds b1 full and takes back its own node: c-x goes,
    leaving lab-c at 2 H100, exactly its entitlement.

    Hypothesis found this with an unrelated terminating pod in the cluster, and the
    property (measuring the victim on the snapshot alone) called lab-c "not above its
    entitlement"; it now counts the victim's own binds. Without a terminating pod the
    engine did nothing here: it skipped reclaim when no other member borrowed in the
    snapshot or no reclaimable pod was left, ignoring the cycle's binds, so whether lab-b
    got its node back depended on a pod elsewhere. It must decide the same either way.
    """
    nodes = [
        node("b1", "lab-b", gpus=2),
        node("c1", "lab-c", gpus=2),
        node("c2", "lab-c", gpus=2, model=A100, max_pods=0),
    ]
    run = [running("b-own", "lab-b", "b1"), running("c-x", "lab-c", "b1")]
    pending = [job("c-1", "lab-c", gpus=2), job("b-1", "lab-b", gpu_model=H100, submitted_at=1)]
    d = schedule(snapshot(nodes, pending, run), POL)
    shares = {(s.member, s.gpu_model): s for s in d.shares}
    c = shares[("lab-c", H100)]
    assert (c.allocated, c.entitlement, c.reclaimable) == (1, 2, 0)
    assert [(b.job_id, b.node, b.reclaimable) for b in d.binds] == [("c-1", "c1", True)]
    assert preempted(d) == ["c-x"]
    assert (d.preemptions[0].victim_member, d.preemptions[0].reclaimer) == ("lab-c", "lab-b")
    assert [(n.job_id, n.nodes) for n in d.nominations] == [("b-1", {"b-1-0": "b1"})]
    nodes.append(node("u1", None, gpus=0))
    run.append(running("gone", "lab-a", "u1", gpus=0, terminating=True))
    again = schedule(snapshot(nodes, pending, run), POL)
    assert (again.binds, again.preemptions, again.nominations) == (
        d.binds,
        d.preemptions,
        d.nominations,
    )


def test_a_reclaimed_pod_stays_lent_until_it_is_gone() -> None:
    # lab-b lends at most 4 GPUs and lab-a holds all 4 on b-h; lab-b takes them back.
    # While lab-a's pod terminates it still holds those GPUs, so lab-c's pod must not be
    # lent b-a's GPUs in the same cycle: lab-b would lend 5.
    pol = policy(
        {"lab-a": {}, "lab-b": {"lending_limit": 4}, "lab-c": {}},
        reclaim_grace_period_seconds=30,
    )
    nodes = [node("b-h", "lab-b", gpus=4, model=H100), node("b-a", "lab-b", gpus=2, model=A100)]
    run = [running("a-x", "lab-a", "b-h", gpus=4, started_at=0)]
    pending = [
        job("b-1", "lab-b", gpus=1, gpu_model=H100),
        job("c-1", "lab-c", gpus=1, submitted_at=1),
    ]
    d = schedule(snapshot(nodes, pending, run), pol)
    assert preempted(d) == ["a-x"]
    assert [b.job_id for b in d.binds] == []
