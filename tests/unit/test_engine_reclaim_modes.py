"""Reclaim modes called directly: who may give GPUs up, and the typed answer when
nothing can be reclaimed."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.model import Policy
from scheduler.engine import shares
from scheduler.engine.gangs import plan_job
from scheduler.engine.placement import ClusterState, Res
from scheduler.engine.reclaim import (
    NoReclaim,
    Reclaimer,
    ReclaimResult,
    UpToFairShare,
    Why,
    _Room,
    _SlotCount,
)
from scheduler.engine.snapshot import Snapshot
from tests.examples import examples
from tests.unit.engine_strategies import H100, job, node, policy, running, scenarios, snapshot

POL = policy(["lab-a", "lab-b", "lab-c"])


def _reclaimer(
    snap: Snapshot, pol: Policy, reclaimable: set[str] | frozenset[str], young: bool = False
) -> Reclaimer:
    """The cycle's victim index for the snapshot (`young`: pods below the minimum
    runtime may be victims too)."""
    return Reclaimer(
        ClusterState(snap),
        snap.running,
        reclaimable,
        snap.now,
        pol.sharing.min_runtime_seconds,
        young or pol.sharing.preempt_below_min_runtime,
    )


def _within_entitlement(snap: Snapshot, pol: Policy) -> object:
    """Reclaim within the entitlement for the snapshot's only pending job."""
    (pending,) = snap.pending
    book = shares.build(snap, pol)
    reclaimer = _reclaimer(snap, pol, book.allocation.reclaimable_pods)
    return reclaimer.within_entitlement(
        pending.pods,
        pending.member,
        H100,
        book.allocation.allocated,
        book.fair,
        book.entitlement,
        {},
    )


def _up_to_fair_share(snap: Snapshot, pol: Policy, above_ratio: float | None) -> object:
    """Reclaim up to the fair share for the snapshot's only pending job."""
    (pending,) = snap.pending
    book = shares.build(snap, pol)
    reclaimer = _reclaimer(snap, pol, book.allocation.reclaimable_pods)
    return reclaimer.up_to_fair_share(
        pending.pods,
        pending.member,
        H100,
        book.allocation.allocated,
        book.fair,
        {},
        above_ratio,
    )


def _victims(result: object) -> list[str]:
    assert isinstance(result, ReclaimResult), result
    return [v.job_id for v in result.victims]


def test_only_members_further_above_their_fair_share_give_beyond_the_entitlement() -> None:
    # lab-b holds 12 of its fair share of 8 (12 / 8 = 1.5), 4 of them borrowed on lab-a's
    # node. A job taking lab-a to 1.5 times its own fair share may not take them.
    nodes = [node("a1", "lab-a"), node("b1", "lab-b")]
    run = [
        running("a-own", "lab-a", "a1", gpus=4),
        running("b-own", "lab-b", "b1", gpus=8),
        running("b-x", "lab-b", "a1", gpus=4),
    ]
    snap = snapshot(nodes, [job("a-1", "lab-a", gpus=4)], run)
    result = _up_to_fair_share(snap, POL, above_ratio=1.5)
    assert result == NoReclaim(
        Why.NOT_FURTHER_ABOVE,
        f"no member further above its own fair share holds borrowed {H100} GPUs it could use",
    )
    # Staying within its fair share, lab-a may take lab-b down to its fair share.
    assert _victims(_up_to_fair_share(snap, POL, above_ratio=None)) == ["b-x"]


def _borrower_straddling(b_big_on: str) -> Snapshot:
    """lab-b holds 12 of its entitlement of 8: b-own (4, oldest) fills it, b-big (8) is
    its reclaimable pod, and taking b-big would leave lab-b at 4. lab-c fills the node
    b-big does not use (within its entitlement). lab-a wants 8 GPUs on one node."""
    nodes = [node("a1", "lab-a"), node("b1", "lab-b"), node("c1", "lab-c")]
    c_on = "c1" if b_big_on == "a1" else "a1"
    run = [
        running("b-own", "lab-b", "b1", gpus=4, started_at=0),
        running("b-big", "lab-b", b_big_on, gpus=8, started_at=100),
        running("c-own", "lab-c", c_on, gpus=8, started_at=0),
    ]
    return snapshot(nodes, [job("a-1", "lab-a", gpus=8)], run)


def test_within_the_entitlement_an_owner_takes_back_its_own_nodes_whole() -> None:
    # b-big is on lab-a's node: taken even though lab-b falls below its entitlement.
    assert _victims(_within_entitlement(_borrower_straddling("a1"), POL)) == ["b-big"]


def test_within_the_entitlement_victims_elsewhere_keep_their_entitlement() -> None:
    # b-big is on lab-c's node and lab-c (at its entitlement) fills lab-a's node.
    assert _within_entitlement(_borrower_straddling("c1"), POL) == NoReclaim(
        Why.BELOW_ENTITLEMENT,
        "the borrowed GPUs of other members would not make room without taking them below "
        "their entitlement",
    )


def test_within_the_entitlement_no_node_or_nothing_reclaimable() -> None:
    # lab-c's cordoned node still contributes: it is entitled to the 8 it runs on a1.
    nodes = [node("a1", "lab-a"), node("b1", "lab-b"), node("c1", "lab-c", unschedulable=True)]
    run = [running("b-own", "lab-b", "b1", gpus=8), running("c-on-a", "lab-c", "a1", gpus=8)]
    nowhere = job("a-1", "lab-a", gpus=8, node_selector={"zone": "nowhere"})
    assert _within_entitlement(snapshot(nodes, [nowhere], run), POL) == NoReclaim(
        Why.NO_NODE, "no node it may use exists"
    )
    # Both members are within their entitlement: nothing is reclaimable.
    snap = snapshot(nodes, [job("a-1", "lab-a", gpus=8)], run)
    assert _within_entitlement(snap, POL) == NoReclaim(
        Why.NO_BORROWER, f"no other member holds borrowed {H100} GPUs it could use"
    )


def test_young_victims_drain_or_refuse() -> None:
    young = policy(["lab-a", "lab-b", "lab-c"], min_runtime_seconds=20_000)
    # Only young pods would make room: nothing is preempted, the plan is held (a drain).
    result = _within_entitlement(_borrower_straddling("a1"), young)
    assert isinstance(result, ReclaimResult)
    assert result.wait
    assert _victims(result) == ["b-big"]
    # Even all of them would not: their age is not why it waits, and the answer is the
    # one it gets when they are old enough (it said "younger than the minimum runtime").
    result = _within_entitlement(_borrower_straddling("c1"), young)
    old_enough = _within_entitlement(_borrower_straddling("c1"), POL)
    assert (
        result
        == old_enough
        == NoReclaim(
            Why.BELOW_ENTITLEMENT,
            "the borrowed GPUs of other members would not make room without taking them below "
            "their entitlement",
        )
    )


def _check_count(
    state: ClusterState,
    room: _Room,
    count: _SlotCount,
    extra: dict[int, Res],
    lendable: dict[str, int],
) -> None:
    """The count kept so far equals a fresh one, and a plan exists only if it allows."""
    fresh = room.count(extra)
    assert (count.unlimited, count.held) == (fresh.unlimited, fresh.held)
    plan = plan_job(state, room.pods, room.member, lendable, extra, frozenset({room.model}))
    if count.total() < len(room.pods):
        assert plan is None, (count.total(), plan)


@given(scenarios(), st.data())
@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_slot_count_never_rules_out_a_plan_that_exists(
    scenario: tuple[Policy, Snapshot], data: st.DataObject
) -> None:
    # Reclaim skips the what-if plan while the slot count says the pods cannot fit. The
    # count must be an upper bound: whenever it is short, the plan really fails, owners'
    # lending headroom included; and kept step by step as victims come and go it equals
    # the count made afresh.
    pol, snap = scenario
    reclaimer = _reclaimer(snap, pol, frozenset(p.uid for p in snap.running))
    state, victims = reclaimer.state, reclaimer.jobs
    owners = sorted({n.owner for n in snap.nodes if n.owner})
    for pending in snap.pending:
        for model in sorted({n.gpu_model or "" for n in snap.nodes}):
            lendable = data.draw(
                st.dictionaries(st.sampled_from(owners), st.integers(-2, 24))
                if owners
                else st.just({})
            )
            room = reclaimer._room(pending.pods, pending.member, model, lendable)
            if room is None:
                continue
            extra = dict(room.freeing)
            count = room.count(extra)

            _check_count(state, room, count, extra, lendable)
            chosen = (
                data.draw(st.lists(st.sampled_from(victims), unique_by=lambda v: v.job_id))
                if victims
                else []
            )
            for victim in chosen:
                room.free(extra, victim, 1, count)
                _check_count(state, room, count, extra, lendable)
            for victim in reversed(chosen):
                room.free(extra, victim, -1, count)
                _check_count(state, room, count, extra, lendable)


def test_the_slot_count_allows_an_owners_nodes_exactly_what_its_headroom_lends() -> None:
    # lab-b's job of two 2-GPU pods on lab-a's two empty nodes: lab-a lends at most its
    # headroom. With 4 GPUs of it both pods fit, and the count says so; with 3 only one
    # does, and the count says no plan exists, before any is tried.
    pol = policy()
    snap = snapshot([node("a-0", gpus=4), node("a-1", gpus=4)], [job("j", "lab-b", pods=2, gpus=2)])
    reclaimer = _reclaimer(snap, pol, frozenset())
    (pending,) = snap.pending
    for headroom, fits in ((4, True), (3, False), (0, False)):
        lendable = {"lab-a": headroom}
        room = reclaimer._room(pending.pods, "lab-b", H100, lendable)
        assert room is not None
        count = room.count({})
        assert count.total() == (2 if fits else headroom // 2)
        plan = plan_job(reclaimer.state, pending.pods, "lab-b", lendable, {}, frozenset({H100}))
        assert (plan is not None) == fits
        assert (room.plan({}) is not None) == fits
    # The member's own nodes lend nothing to it: no cap there.
    room = reclaimer._room(pending.pods, "lab-a", H100, {"lab-a": 0})
    assert room is not None and room.count({}).total() == 4


@given(scenarios(), st.sampled_from([None, 1.0, 1.5]))
@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_most_members_may_give_bounds_what_the_walk_finds(
    scenario: tuple[Policy, Snapshot], above_ratio: float | None
) -> None:
    # A reclaim beyond the entitlement gives up before walking a victim when the giving
    # members, each kept at its fair share, could not give enough GPUs: the walk would
    # have found nothing either.
    pol, snap = scenario
    # Young pods count too: the bound holds whatever the walk may take.
    for attempt in _attempts_beyond(snap, pol, above_ratio, {}, young=True):
        if attempt.room.have + attempt._most_given() < attempt.room.need:
            assert attempt.select(attempt._walk(include_young=True)) is None


def _attempts_beyond(
    snap: Snapshot, pol: Policy, above_ratio: float | None, lendable: dict[str, int], young: bool
) -> Iterator[UpToFairShare]:
    """A reclaim beyond the entitlement for every pending job on every GPU model of the
    snapshot that has a node it may use."""
    book = shares.build(snap, pol)
    reclaimer = _reclaimer(snap, pol, book.allocation.reclaimable_pods, young=young)
    for pending in snap.pending:
        for model in sorted({n.gpu_model or "" for n in snap.nodes}):
            room = reclaimer._room(pending.pods, pending.member, model, lendable)
            if room is not None:
                yield UpToFairShare(
                    reclaimer, room, book.allocation.allocated, book.fair, above_ratio
                )


@given(
    scenarios(),
    st.sampled_from([None, 1.0, 1.5]),
    st.booleans(),
    st.dictionaries(st.sampled_from(["lab-a", "lab-b", "lab-c"]), st.integers(0, 9)),
)
@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_too_few_slots_means_the_walk_finds_no_victims(
    scenario: tuple[Policy, Snapshot],
    above_ratio: float | None,
    young: bool,
    lendable: dict[str, int],
) -> None:
    # `_too_few_slots` spares a failing attempt its walk (of old victims, or of young
    # ones too for a drain): the walk may not find a victim set when it says so.
    pol, snap = scenario
    # Owners' lending headroom caps the slots on their nodes.
    for attempt in _attempts_beyond(snap, pol, above_ratio, lendable, young):
        for include_young in (False, True):
            if attempt._too_few_slots(include_young):
                assert attempt.select(attempt._walk(include_young)) is None


def _lab_c_on_lab_a(
    pol: Policy, terminating: bool = False, young: bool = False
) -> tuple[Reclaimer, UpToFairShare]:
    """lab-c borrows 5 GPUs on each of two of lab-a's nodes, where lab-a runs 1 GPU of
    its own (`terminating`: the one on a-0 is on its way out; `young`: lab-c's pod on
    a-0 started a minute ago); a-2 has 4 free; lab-b waits with two 8-GPU jobs. The
    reclaim for the first of them."""
    run = [
        running(f"{m}-{n}", m, f"a-{n}", gpus=g, started_at=0.0)
        for n in (0, 1)
        for m, g in (("lab-a", 1), ("lab-c", 5))
    ]
    if terminating:
        run[0] = dataclasses.replace(run[0], terminating=True)
    if young:
        run[1] = dataclasses.replace(run[1], started_at=10_000.0 - 60)  # the snapshot's now
    run.append(running("lab-a-2", "lab-a", "a-2", gpus=4, started_at=0.0))
    snap = snapshot(
        [node("a-0", "lab-a"), node("a-1", "lab-a"), node("a-2", "lab-a")],
        [job("j", "lab-b", gpus=8), job("k", "lab-b", gpus=8, submitted_at=1.0)],
        run,
    )
    book = shares.build(snap, pol)
    reclaimer = _reclaimer(snap, pol, book.allocation.reclaimable_pods)
    room = reclaimer._room(snap.pending[0].pods, "lab-b", H100, {})
    assert room is not None
    attempt = UpToFairShare(reclaimer, room, book.allocation.allocated, book.fair, None)
    return reclaimer, attempt


def test_too_few_slots_when_no_node_could_hold_a_pod_even_emptied() -> None:
    # With lab-c gone, 7 GPUs would be free on each of a-0 and a-1, and the 8-GPU pod
    # fits none of them, though the free GPUs and the one lab-c gives up (above its fair
    # share of 9) add up to the 8 it lacks.
    pol = policy(["lab-a", "lab-b", "lab-c"])
    reclaimer, attempt = _lab_c_on_lab_a(pol)
    assert attempt.fair[("lab-c", H100)] == 9.0
    assert attempt.room.have + attempt._most_given() >= attempt.room.need
    assert attempt._too_few_slots(False) and attempt._too_few_slots(True)
    # One more GPU of lab-c's on a node would make it worth the walk.
    reclaimer.freeable(False)[0]["lab-c"] += 1
    assert not attempt._too_few_slots(False)


def test_terminating_pods_count_in_what_an_emptied_node_could_hold() -> None:
    # lab-a's own pod on a-0 is on its way out: a-0 holds the 8-GPU pod once lab-c's pods
    # there are gone too, and the walk finds them (lab-b's weight keeps lab-c's fair share
    # low enough for it to give them up).
    pol = policy({"lab-a": {}, "lab-b": {"weight": 3.0}, "lab-c": {}}, min_runtime_seconds=600)
    _, attempt = _lab_c_on_lab_a(pol, terminating=True)
    assert not attempt._too_few_slots(False)
    found = attempt.select(attempt._walk(include_young=False))
    assert found is not None and [v.job_id for v in found[0]] == ["lab-c-0"]
    # lab-c's pod on a-0 started a minute ago: only a drain's walk may count it.
    _, attempt = _lab_c_on_lab_a(pol, terminating=True, young=True)
    assert attempt._too_few_slots(False) and not attempt._too_few_slots(True)
