"""Jobs that can never run as the cluster and policy stand (docs/glossary.md, "can never
run") are not in their member's demand: they do not raise its fair share, lower the
others', or make its nodes look wanted. Each case also checks that the reference engine
decides the same (`tests/reference_engine`)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from policies.model import Policy
from scheduler.engine import compute_shares, schedule
from scheduler.engine.decisions import Decisions
from scheduler.engine.snapshot import Node, RunningPod, Snapshot
from tests.examples import examples
from tests.reference_engine import compute_shares as reference_shares
from tests.reference_engine.cycle import _Cycle as ReferenceCycle
from tests.unit import engine_strategies as es
from tests.unit.engine_strategies import without_consolidation

H = es.H100
A = es.A100


def _pol(members: dict[str, dict[str, Any]], **sharing: Any) -> Policy:
    return without_consolidation(
        es.policy(members, models=(H, A), min_runtime_seconds=0, **sharing)
    )


def _both(snap: Snapshot, pol: Policy) -> Decisions:
    """The engine's decisions, after checking the reference engine's are the same."""
    got = es.decided_alike(snap, pol)
    assert got.shares == reference_shares(snap, pol)
    return got


def _positions(snap: Snapshot, pol: Policy) -> dict[tuple[str, str], tuple[float, int, int]]:
    """(member, model) -> (fair share, pending, demand)."""
    return {
        (s.member, s.gpu_model): (s.fair_share, s.pending, s.demand)
        for s in compute_shares(snap, pol)
    }


def _three_nodes() -> list[Node]:
    """m-a's node, m-b's node (m-b lends nothing in `_lending`) and a node of no member."""
    return [
        es.node("n-a", "m-a", model=H),
        es.node("n-b", "m-b", model=H),
        es.node("u1", None, model=H),
    ]


_B_FULL = [es.running(f"b{k}", "m-b", "n-b") for k in range(8)]
_LENDING = {"m-a": {}, "m-b": {"lending_limit": 0}}


def _without(snap: Snapshot, job_id: str) -> Snapshot:
    return _without_all(snap, {job_id})


def test_a_gang_its_member_may_never_hold_is_not_in_its_demand() -> None:
    # m-a may hold 8 on its own node and 8 on u1, never m-b's: 16 of the gang's 24.
    pol = _pol(_LENDING)
    gang = es.job("gang", "m-a", pods=3, gpus=8, submitted_at=1.0)
    small = es.job("b-small", "m-b", submitted_at=2.0)
    snap = es.snapshot(_three_nodes(), [gang, small], _B_FULL)
    got = _both(snap, pol)
    assert _positions(snap, pol)[("m-a", H)] == (0.0, 0, 0)
    assert _positions(snap, pol) == _positions(_without(snap, "gang"), pol)
    # Its sentence still says why it waits, and its member's position is not inflated.
    assert got.explanations["gang"].startswith(
        f"member m-a is at its fair share of 0 {H} (holds 0); it can never run as the "
        "cluster and policy stand: it needs 24 GPUs of one model at once, and m-a can hold "
        f"at most 16 {H} in pods of 8"
    )
    # m-a's nodes do not look wanted: m-b's job, which restarts from zero, is placed as if
    # the gang were not there (counted, the gang had kept it off n-a, on u1).
    without = _both(_without(snap, "gang"), pol)
    assert got.binds == without.binds
    assert [(b.pod_uid, b.node) for b in got.binds] == [("b-small-0", "n-a")]


def test_a_gang_it_may_hold_counts_while_it_waits() -> None:
    # With m-b lending, m-a may hold the whole gang, once the nodes free: it counts.
    pol = _pol({"m-a": {}, "m-b": {}})
    gang = es.job("gang", "m-a", pods=3, gpus=8, submitted_at=1.0)
    snap = es.snapshot(_three_nodes(), [gang], _B_FULL)
    _both(snap, pol)
    assert _positions(snap, pol)[("m-a", H)] == (16.0, 24, 24)


@pytest.mark.parametrize(
    ("members", "sharing", "gpus", "model"),
    [
        pytest.param({"m-a": {"max_gpus": 8}, "m-b": {}}, {}, 16, H, id="beyond maxGpus"),
        pytest.param({"m-a": {}, "m-b": {}}, {"borrowing": False}, 16, H, id="beyond entitlement"),
        pytest.param(
            {"m-a": {}, "m-b": {}},
            {"borrowing": False},
            16,
            None,
            id="beyond entitlement, any model",
        ),
        pytest.param({"m-a": {}, "m-b": {}}, {}, 32, H, id="pods bigger than any node"),
    ],
)
def test_jobs_the_policy_or_the_nodes_never_let_run_are_not_in_demand(
    members: dict[str, dict[str, Any]], sharing: dict[str, Any], gpus: int, model: str | None
) -> None:
    pol = _pol(members, **sharing)
    spec: dict[str, Any] = {} if model is None else {"gpu_model": model}
    never = es.job("never", "m-a", pods=2, gpus=gpus // 2, submitted_at=1.0, **spec)
    runs = es.job("runs", "m-a", gpus=2, submitted_at=2.0)
    snap = es.snapshot(_three_nodes(), [never, runs], _B_FULL)
    got = _both(snap, pol)
    assert _positions(snap, pol) == _positions(_without(snap, "never"), pol)
    assert _positions(snap, pol)[("m-a", H)][1:] == (2, 2)
    assert "never" not in {b.job_id for b in got.binds}
    assert [b.job_id for b in got.binds] == ["runs"]


def test_a_pod_no_node_takes_is_not_in_demand() -> None:
    pol = _pol({"m-a": {}, "m-b": {}})
    never = es.job("never", "m-a", gpus=1, node_selector={"zone": "nowhere"})
    snap = es.snapshot(_three_nodes(), [never], _B_FULL)
    got = _both(snap, pol)
    assert _positions(snap, pol)[("m-a", H)] == (0.0, 0, 0)
    assert "no node can ever run its pods" in got.explanations["never"]


def test_a_job_of_no_model_that_never_runs_leaves_the_free_model_to_the_next() -> None:
    # A job of any model counts against the model with the most GPUs still free; one that
    # can never run takes none of them from the jobs after it.
    pol = _pol({"m-a": {"max_gpus": 4}, "m-b": {}})
    nodes: list[Node] = [*_three_nodes(), es.node("a1", "m-b", model=A)]
    never = es.job("never", "m-a", gpus=8, submitted_at=1.0)
    after = es.job("after", "m-a", gpus=4, submitted_at=2.0)
    run: list[RunningPod] = [*_B_FULL, es.running("b-a1", "m-b", "a1", gpus=8)]
    snap = es.snapshot(nodes, [never, after], run)
    _both(snap, pol)
    assert _positions(snap, pol) == _positions(_without(snap, "never"), pol)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(es.scenarios())
def test_jobs_that_can_never_run_change_no_other_decision(
    scenario: tuple[Policy, Snapshot],
) -> None:
    """Whatever the cluster, policy and queue: the jobs the reference engine finds can
    never run change no bind, preemption, nomination, share or other job's sentence."""
    pol, snap = scenario
    reference = ReferenceCycle(snap, pol)
    never = {j.job_id for j in snap.pending if reference._never_runs(j)}
    if len({j.job_id for j in snap.pending}) != len(snap.pending):
        return  # a repeated id: which of its jobs is left out would be ambiguous
    got = schedule(snap, pol)
    alone = schedule(_without_all(snap, never), pol)
    assert (got.binds, got.preemptions, got.nominations, got.shares) == (
        alone.binds,
        alone.preemptions,
        alone.nominations,
        alone.shares,
    )
    assert {k: v for k, v in got.explanations.items() if k not in never} == dict(alone.explanations)


def _without_all(snap: Snapshot, job_ids: set[str]) -> Snapshot:
    return es.snapshot(
        list(snap.nodes),
        [j for j in snap.pending if j.job_id not in job_ids],
        list(snap.running),
        now=snap.now,
        usage=dict(snap.usage_history),
    )
