"""Shared fixed costs split among members, and the weights of a split rule."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from policies.model import Policy, SplitRule
from reports.costmodel.money import cents, split


def rule_weights(
    rule: str, contribution: Mapping[str, float], usage: Mapping[str, float], equal: list[str]
) -> tuple[dict[str, float], str]:
    """Weights for a split rule, with the fallback actually used (for the flags):
    `by-usage` falls back to contribution, then equal, when nobody used or contributed."""
    positive_contribution = {k: v for k, v in contribution.items() if v > 0}
    positive_usage = {k: v for k, v in usage.items() if v > 0}
    if rule == "by-usage" and positive_usage:
        return positive_usage, rule
    if rule in ("by-usage", "by-contribution") and positive_contribution:
        return positive_contribution, "by-contribution"
    return {k: 1.0 for k in equal}, "equal"


def shared_cost_shares(
    policy: Policy,
    contribution_weight: Mapping[str, float],
    usage_weight: Mapping[str, float],
    members: list[str],
    flags: list[str],
) -> dict[str, dict[str, Decimal]]:
    """Each shared fixed cost's `monthlyAmount` split among members by its rule."""
    shares: dict[str, dict[str, Decimal]] = {}
    for cost in policy.billing.shared_fixed_costs:
        amount = cents(cost.monthly_amount)
        if cost.split is SplitRule.FIXED:
            assert cost.shares is not None
            fixed: dict[str, Decimal | float] = dict(cost.shares)
            shares[cost.name] = split(amount, fixed, members)
            continue
        weights, used_rule = rule_weights(
            cost.split.value, contribution_weight, usage_weight, policy.member_names()
        )
        if used_rule != cost.split.value:
            flags.append(f"shared cost {cost.name!r} split {used_rule}: nobody qualified")
        shares[cost.name] = split(amount, dict(weights), members)
    return shares
