"""Capacity per hour (billed and idle) and the idle cost rule."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import pandas as pd

from policies.model import IdleCostRule, Policy
from reports.costmodel.bill import IdleUnderRule
from reports.costmodel.money import ZERO, cents, split
from reports.costmodel.prices import PriceBook, gpu_hours, priced
from reports.costmodel.rated import by_rate
from reports.costmodel.shared import rule_weights


def hourly_capacity(
    capacity: pd.DataFrame,
    usage_split: pd.DataFrame,
    version_of_hour: pd.Series,
    current_version: int,
    flags: list[str],
) -> pd.DataFrame:
    """Per (hour, owner, GPU model): available, used, `billed` (the larger of the two:
    usage above the reported capacity is billed as capacity) and `idle` GPU-seconds, and
    the hour's policy version."""
    used_on = (
        usage_split.groupby(["hour", "owner", "gpu_model"])["gpu_seconds"].sum().rename("used")
    )
    hourly = pd.concat(
        [capacity.set_index(["hour", "owner", "gpu_model"])["gpu_seconds_available"], used_on],
        axis=1,
    ).fillna(0.0)
    over = hourly["used"] - hourly["gpu_seconds_available"]
    overused = over[over > 1.0]
    if not overused.empty:
        flags.append(
            f"usage exceeded reported capacity in {overused.index.get_level_values(0).nunique()} "
            f"hour(s) ({overused.sum() / 3600:.1f} GPU-hours): capacity billed at usage there"
        )
    hourly["billed"] = hourly[["gpu_seconds_available", "used"]].max(axis=1)
    hourly["idle"] = hourly["billed"] - hourly["used"]
    hourly = hourly.reset_index()
    hourly["policy_version"] = (
        hourly["hour"].map(version_of_hour).fillna(current_version).astype("int64")
    )
    return hourly


def idle_under_rules(
    policy: Policy,
    known: Mapping[int, Policy],
    book: PriceBook,
    capacity: pd.DataFrame,
    contribution_weight: Mapping[str, float],
    usage_weight: Mapping[str, float],
    members: list[str],
    flags: list[str],
) -> tuple[IdleUnderRule, ...]:
    """The idle capacity of `capacity` (`hourly_capacity`) under the idle cost rule of
    each hour's policy version (`known`, else `policy`), one part per rule in the order
    the rules first apply. Under the rule of the month's last version alone, a switch
    from `owner` to a pooled rule on the 20th pooled the idle capacity of the whole
    month."""
    versions = capacity.sort_values("hour")["policy_version"].astype("int64")
    under: dict[IdleCostRule, list[int]] = {}
    for version in dict.fromkeys(versions.tolist()):
        under.setdefault(known.get(version, policy).billing.idle_cost, []).append(version)
    parts = []
    for rule, of_rule in under.items() or [(policy.billing.idle_cost, [])]:
        rows = capacity[capacity["policy_version"].isin(of_rule)] if len(under) > 1 else capacity
        value = priced(book, rows, ["owner"], "idle")
        returned, share = idle_cost_split(
            rule, policy, value, contribution_weight, usage_weight, members, flags
        )
        parts.append(
            IdleUnderRule(
                rule=rule,
                hours=gpu_hours(rows, "owner", "idle"),
                value=value,
                returned=returned,
                share=share,
                rated=by_rate(book, rows, ["owner"], "idle"),
            )
        )
    return tuple(parts)


def idle_cost_split(
    rule: IdleCostRule,
    policy: Policy,
    idle_exact: Mapping[str, Decimal],
    contribution_weight: Mapping[str, float],
    usage_weight: Mapping[str, float],
    members: list[str],
    flags: list[str],
) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    """(idle capacity cost each owner returns to the pool, each member's share of the
    pool) under the idle cost `rule`; both empty under `owner` (the owner bears it)."""
    if rule is IdleCostRule.OWNER:
        return {}, {}
    returned = {owner: cents(v) for owner, v in idle_exact.items()}
    pool_idle = sum(returned.values(), ZERO)
    weights, used_rule = rule_weights(
        rule.value, contribution_weight, usage_weight, policy.member_names()
    )
    if used_rule != rule.value:
        flags.append(f"idle capacity split {used_rule}: nobody qualified for {rule.value}")
    return returned, split(pool_idle, weights, members)
