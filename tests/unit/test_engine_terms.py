"""The policy as the engine reads it (`scheduler.engine.terms`): copied once per policy
object, and a changed policy (a new object) is read afresh."""

from __future__ import annotations

from policies.model import Policy
from scheduler.engine.terms import terms_of
from tests.unit.engine_strategies import policy, without_consolidation


def _policy() -> Policy:
    return policy(
        {
            "lab-c": {"lending_limit": 4, "weight": 2.5, "checkpointable": True},
            "lab-a": {"max_gpus": 16},
            "lab-b": {"lending_limit": 0},
        },
        borrowing=False,
        min_runtime_seconds=900,
        reclaim_grace_period_seconds=45,
        max_reclaims_per_job=None,
        usage_half_life_hours=24.0,
        reclaim_overtaken_after_seconds=7200,
    )


def test_terms_copy_the_members_and_sharing_rules() -> None:
    pol = _policy()
    terms = terms_of(pol)
    assert terms.member_names == ["lab-c", "lab-a", "lab-b"]
    assert terms.weight == {"lab-c": 2.5, "lab-a": 1.0, "lab-b": 1.0}
    assert terms.max_gpus == {"lab-a": 16}
    assert terms.capped == {"lab-a"}
    assert terms.checkpointable == frozenset({"lab-c"})
    # By name for the reach rule, in the policy's order for the withheld sums.
    assert terms.lenders == [("lab-b", 0), ("lab-c", 4)]
    assert list(terms.lending_limit.items()) == [("lab-c", 4), ("lab-b", 0)]
    assert terms.members["lab-a"] is pol.members[1]
    sharing = pol.sharing
    assert terms.borrowing is False
    assert terms.min_runtime_seconds == sharing.min_runtime_seconds == 900
    assert terms.reclaim_grace_period_seconds == 45
    assert terms.max_reclaims_per_job is None
    assert terms.usage_half_life_hours == 24.0
    assert terms.reclaim_overtaken_after_seconds == 7200
    assert terms.reclaim_limit_window_seconds == sharing.reclaim_limit_window_seconds
    assert terms.max_consolidations_per_cycle == sharing.max_consolidations_per_cycle
    assert terms.max_consolidation_loss_seconds == sharing.max_consolidation_loss_seconds
    assert terms.preempt_below_min_runtime is sharing.preempt_below_min_runtime
    assert terms.head_start is sharing.head_start


def test_terms_are_kept_per_policy_object() -> None:
    pol = _policy()
    assert terms_of(pol) is terms_of(pol)
    # An equal policy that is another object, and a changed copy, get their own.
    twin = _policy()
    assert terms_of(twin) is not terms_of(pol)
    off = without_consolidation(pol)
    assert terms_of(off).max_consolidations_per_cycle == 0
    assert terms_of(pol).max_consolidations_per_cycle == pol.sharing.max_consolidations_per_cycle
