"""Hand-computed entitlements and water-filling fair shares."""

from __future__ import annotations

import pytest

from scheduler.engine import compute_shares
from scheduler.engine.entitlement import entitlements
from scheduler.engine.fairshare import water_fill
from scheduler.engine.shares import build
from tests.unit.engine_strategies import A100, H100, job, node, policy, running, snapshot


def test_equal_weights_split_surplus_evenly() -> None:
    # 32 GPUs; a owns 16, b owns 16; a wants 30, b wants 2: b gets 2, a gets 16 + 14.
    share = water_fill(32, {"a": 16, "b": 16}, {"a": 30, "b": 2}, {"a": 1, "b": 1})
    assert share == {"a": 30.0, "b": 2.0}


def test_surplus_divided_by_weight() -> None:
    # c owns 12 and wants nothing: the 12 are split 2:1 between a (w=2) and b (w=1).
    share = water_fill(
        24, {"a": 6, "b": 6, "c": 12}, {"a": 100, "b": 100}, {"a": 2, "b": 1, "c": 1}
    )
    assert share["a"] == pytest.approx(14.0)
    assert share["b"] == pytest.approx(10.0)
    assert share["c"] == 0.0


def test_capped_demand_spills_to_others() -> None:
    # Surplus 12 over a, b, c (equal weights): c only wants 1 more, a and b share the rest.
    share = water_fill(12, {}, {"a": 100, "b": 100, "c": 1}, {"a": 1, "b": 1, "c": 1})
    assert share == pytest.approx({"a": 5.5, "b": 5.5, "c": 1.0})


def test_purchased_entitlement_scaled_when_above_capacity() -> None:
    # Entitlements 8 + 8 on 12 GPUs, both want everything: scaled to 6 each.
    share = water_fill(12, {"a": 8, "b": 8}, {"a": 20, "b": 20}, {"a": 1, "b": 1})
    assert share == pytest.approx({"a": 6.0, "b": 6.0})


def test_cap_limits_share() -> None:
    share = water_fill(16, {"a": 8, "b": 8}, {"a": 16, "b": 16}, {"a": 1, "b": 1}, cap={"a": 4})
    assert share == pytest.approx({"a": 4.0, "b": 12.0})


def test_usage_lowers_only_the_surplus_part() -> None:
    # a and b own 4 each and want 20; surplus 16 from idle c. a used 3x the mean... :
    # usage a=30, b=0, c=0 -> mean 10 -> a's weight 1/(1+3) = 0.25, b's 1.
    share = water_fill(
        24,
        {"a": 4, "b": 4, "c": 16},
        {"a": 20, "b": 20},
        {"a": 1, "b": 1, "c": 1},
        usage={"a": 30, "b": 0, "c": 0},
    )
    assert share["a"] == pytest.approx(4 + 16 * 0.25 / 1.25)
    assert share["b"] == pytest.approx(4 + 16 * 1 / 1.25)
    # Its entitlement is untouched even with overwhelming usage.
    share = water_fill(
        8, {"a": 4, "b": 4}, {"a": 8, "b": 8}, {"a": 1, "b": 1}, usage={"a": 1e9, "b": 0}
    )
    assert share == pytest.approx({"a": 4.0, "b": 4.0})


def test_no_demand_no_share() -> None:
    assert water_fill(8, {"a": 8}, {}, {"a": 1}) == {"a": 0.0}


def test_entitlement_counts_ready_nodes_and_purchases() -> None:
    pol = policy({"lab-a": {"purchased": {A100: 4}}, "lab-b": {}})
    nodes = [
        node("a1", "lab-a", 8),
        node("a2", "lab-a", 8, ready=False),
        node("a3", "lab-a", 8, unschedulable=True),  # cordoned still contributes
        node("b1", "lab-b", 4, model=A100),
        node("x1", None, 8),
        node("z1", "stranger", 8),
    ]
    # lab-a's 4 purchased A100 have no hardware: nobody-owned A100 there is none, so
    # they are carved out of lab-b's 4 contributed A100 (which lab-b is paid for).
    assert entitlements(nodes, pol) == {
        ("lab-a", A100): 4,
        ("lab-a", H100): 16,
    }


def test_purchases_are_carved_out_of_the_other_contributors() -> None:
    # The demo: lab-bio contributes 2 x 4 A100 and buys 4; physics contributes 3 x 8.
    # Only physics can sell: lab-bio 8 + 4 = 12, physics 24 - 4 = 20; 12 + 20 = 32.
    pol = policy({"lab-bio": {"purchased": {A100: 4}}, "physics": {}})
    nodes = [node(f"bio{k}", "lab-bio", 4, A100) for k in range(2)]
    nodes += [node(f"phys{k}", "physics", 8, A100) for k in range(3)]
    assert entitlements(nodes, pol) == {("lab-bio", A100): 12, ("physics", A100): 20}
    # Contribution stays the hardware; both want everything: nothing is scaled down.
    pending = [
        job(f"{m}{k}", m, gpus=8, gpu_model=A100) for m in ("lab-bio", "physics") for k in range(5)
    ]
    rows = {s.member: s for s in compute_shares(snapshot(nodes, pending), pol)}
    assert (rows["lab-bio"].contribution, rows["lab-bio"].entitlement) == (8, 12)
    assert (rows["physics"].contribution, rows["physics"].entitlement) == (24, 20)
    assert rows["lab-bio"].fair_share == pytest.approx(12.0)
    assert rows["physics"].fair_share == pytest.approx(20.0)


def test_purchases_use_unowned_capacity_first_then_largest_remainder() -> None:
    # 16 A100: 4 on a node of no member, 8 of lab-a, 4 of lab-b; lab-c buys 6.
    # 4 come from the unowned node; 2 are carved from lab-a : lab-b = 8 : 4, quotas
    # 1.33 and 0.67 -> floors 1 and 0, the remaining 1 to the larger remainder (lab-b).
    pol = policy({"lab-a": {}, "lab-b": {}, "lab-c": {"purchased": {A100: 6}}})
    nodes = [
        node("x1", None, 4, A100),
        node("a1", "lab-a", 8, A100),
        node("b1", "lab-b", 4, A100),
    ]
    assert entitlements(nodes, pol) == {
        ("lab-a", A100): 7,
        ("lab-b", A100): 3,
        ("lab-c", A100): 6,
    }


def test_carving_ties_go_by_member_name_and_purchases_are_capped() -> None:
    # One GPU carved from two equal sellers: the tie goes to the first name.
    pol = policy({"lab-a": {}, "lab-b": {}, "lab-c": {"purchased": {A100: 1}}})
    nodes = [node("a1", "lab-a", 4, A100), node("b1", "lab-b", 4, A100)]
    assert entitlements(nodes, pol) == {
        ("lab-a", A100): 3,
        ("lab-b", A100): 4,
        ("lab-c", A100): 1,
    }
    # Buying more than the others contribute: capped at what exists (4 of lab-a's),
    # and the buyer's own contribution is never sold to itself.
    pol = policy({"lab-a": {}, "lab-c": {"purchased": {A100: 10}}})
    nodes = [node("a1", "lab-a", 4, A100), node("c1", "lab-c", 4, A100)]
    assert entitlements(nodes, pol) == {("lab-c", A100): 8}
    # No hardware of that model at all (or none Ready): nothing to be entitled to.
    nodes = [node("a1", "lab-a", 4, A100, ready=False), node("h1", "lab-a", 8, H100)]
    assert entitlements(nodes, pol) == {("lab-a", H100): 8}


def test_shares_rows_borrowed_and_reclaimable() -> None:
    pol = policy(["lab-a", "lab-b"])
    nodes = [node("a1", "lab-a"), node("b1", "lab-b")]
    run = [
        # lab-b holds 11 H100 with 8 entitled: 3 borrowed. Own node first, then the
        # oldest: b-own 6 + b-old 2 fill the 8; b-new (3 GPUs) is the reclaimable pod.
        running("b-own", "lab-b", "b1", gpus=6, started_at=5),
        running("b-old", "lab-b", "a1", gpus=2, started_at=1),
        running("b-new", "lab-b", "a1", gpus=3, started_at=9),
    ]
    pending = [job("a-job", "lab-a", gpus=4), job("b-job", "lab-b", gpus=2)]
    rows = {s.member: s for s in compute_shares(snapshot(nodes, pending, run), pol)}
    a, b = rows["lab-a"], rows["lab-b"]
    assert (a.entitlement, a.allocated, a.lent, a.pending, a.demand) == (8, 0, 5, 4, 4)
    assert (b.entitlement, b.allocated, b.pending, b.demand) == (8, 11, 2, 13)
    assert (b.borrowed, b.reclaimable, a.borrowed, a.reclaimable) == (3, 3, 0, 0)
    # a gets min(8, 4) = 4, b gets 8 + the surplus 4.
    assert a.fair_share == pytest.approx(4.0)
    assert b.fair_share == pytest.approx(12.0)


def test_reclaimable_pods_are_whole_so_can_exceed_borrowed() -> None:
    # The glossary's example: entitlement 6 and two 4-GPU pods: 2 GPUs borrowed, one pod
    # of 4 GPUs reclaimable (the younger: the older fills 4 of the 6).
    pol = policy(["lab-a", "lab-b"])
    nodes = [node("a1", "lab-a", 6), node("b1", "lab-b", 8)]
    run = [
        running("old", "lab-a", "b1", gpus=4, started_at=1),
        running("new", "lab-a", "b1", gpus=4, started_at=2),
    ]
    snap = snapshot(nodes, [], run)
    a = {s.member: s for s in compute_shares(snap, pol)}["lab-a"]
    assert (a.entitlement, a.allocated, a.borrowed, a.reclaimable) == (6, 8, 2, 4)
    book = build(snap, pol)
    assert book.allocation.reclaimable_pods == {"new"}


def test_max_gpus_caps_fair_share() -> None:
    pol = policy({"lab-a": {"max_gpus": 6}, "lab-b": {}})
    nodes = [node("a1", "lab-a"), node("b1", "lab-b")]
    pending = [job(f"a{k}", "lab-a", gpus=4) for k in range(4)] + [job("b", "lab-b", gpus=2)]
    rows = {s.member: s for s in compute_shares(snapshot(nodes, pending), pol)}
    assert rows["lab-a"].fair_share == pytest.approx(6.0)
    assert rows["lab-b"].fair_share == pytest.approx(2.0)


def test_no_borrowing_caps_fair_share_at_entitlement() -> None:
    pol = policy(["lab-a", "lab-b"], borrowing=False)
    nodes = [node("a1", "lab-a"), node("b1", "lab-b")]
    pending = [job(f"a{k}", "lab-a", gpus=8) for k in range(2)]
    rows = {s.member: s for s in compute_shares(snapshot(nodes, pending), pol)}
    assert rows["lab-a"].fair_share == pytest.approx(8.0)


def test_model_agnostic_demand_counts_once_on_freest_model() -> None:
    pol = policy(["lab-a", "lab-b"])
    nodes = [node("a1", "lab-a", 8, H100), node("b1", "lab-b", 4, A100)]
    pending = [job("j1", "lab-a", gpus=2), job("j2", "lab-a", gpus=2), job("j3", "lab-a", gpus=2)]
    rows = {(s.member, s.gpu_model): s for s in compute_shares(snapshot(nodes, pending), pol)}
    # j1, j2 -> H100 (8, then 6 free); j3: H100 and A100 both have 4 free -> A100 by name
    assert rows[("lab-a", A100)].pending + rows[("lab-a", H100)].pending == 6
    assert rows[("lab-a", H100)].pending == 4
    assert rows[("lab-a", A100)].pending == 2


def test_half_life_usage_lowers_a_heavy_users_surplus_in_compute_shares() -> None:
    nodes = [node("a1", "lab-a"), node("b1", "lab-b"), node("c1", "lab-c")]
    pending = [job(f"{m}{k}", f"lab-{m}", gpus=8) for m in "ab" for k in range(3)]
    usage = {"lab-a": 300.0, "lab-b": 0.0, "lab-c": 0.0}  # mean 100: lab-a weight 1/4
    pol = policy(["lab-a", "lab-b", "lab-c"], usage_half_life_hours=24)
    rows = {s.member: s for s in compute_shares(snapshot(nodes, pending, usage=usage), pol)}
    # Entitlements 8 + 8, then lab-c's idle 8 split 0.25 : 1.
    assert rows["lab-a"].fair_share == pytest.approx(8 + 8 * 0.25 / 1.25)
    assert rows["lab-b"].fair_share == pytest.approx(8 + 8 * 1 / 1.25)
    # Without a half-life in the policy the history is ignored.
    pol = policy(["lab-a", "lab-b", "lab-c"])
    rows = {s.member: s for s in compute_shares(snapshot(nodes, pending, usage=usage), pol)}
    assert rows["lab-a"].fair_share == pytest.approx(12.0)


def test_lending_limit_withholds_idle_capacity() -> None:
    pol = policy({"lab-a": {}, "lab-c": {"lending_limit": 4}})
    nodes = [node("a1", "lab-a"), node("c1", "lab-c"), node("c2", "lab-c")]
    pending = [job(f"a{k}", "lab-a", gpus=8) for k in range(4)]
    rows = {s.member: s for s in compute_shares(snapshot(nodes, pending), pol)}
    assert rows["lab-a"].fair_share == pytest.approx(12.0)  # 8 own + at most 4 lent
