"""What a month's bill is made of, before it becomes lines: GPU-hours and amounts."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pandas as pd

from policies.model import IdleCostRule, Policy
from reports.costmodel.money import cents
from reports.costmodel.prices import PriceBook, gpu_hours, priced, priced_by_model
from reports.costmodel.rated import RatedLines
from reports.costmodel.usage_split import CHARGED, on_own_nodes


@dataclass(frozen=True)
class GpuHours:
    """GPU-hours per member (floats), and the few splits the lines need."""

    used: pd.Series
    own: pd.Series
    """Used on the member's own nodes."""
    within_purchase: pd.Series
    """Used on others' hardware, covered by the member's purchased GPUs."""
    used_on_others_charged: pd.Series
    """Used on others' hardware beyond the purchased GPUs: charged."""
    lent: pd.Series
    """Others' use of the member's nodes."""
    lent_credited: pd.Series
    """The part of `lent` the users were charged for, credited to the member."""
    charged_by_owner_model: pd.Series
    """(member, owner, GPU model) -> `used_on_others_charged`."""
    contributed: pd.Series
    contributed_by_model: pd.Series
    """(owner, GPU model) -> contributed (billed capacity)."""
    idle: pd.Series
    lost: pd.Series
    """Lost to reclaim."""
    lost_by_cause: pd.Series
    """(member, cause) -> lost to reclaim; a cause "" is lost work whose cause was not
    recorded (`LOST_CAUSES`)."""


def month_gpu_hours(
    usage_split: pd.DataFrame, capacity: pd.DataFrame, lost: pd.DataFrame
) -> GpuHours:
    on_others = usage_split[~on_own_nodes(usage_split)]
    return GpuHours(
        used=gpu_hours(usage_split, "member", "gpu_seconds"),
        own=gpu_hours(usage_split, "member", "own"),
        within_purchase=gpu_hours(usage_split, "member", "within_purchase"),
        used_on_others_charged=gpu_hours(usage_split, "member", CHARGED),
        lent=gpu_hours(on_others, "owner", "gpu_seconds"),
        lent_credited=gpu_hours(usage_split, "owner", CHARGED),
        charged_by_owner_model=gpu_hours(usage_split, ["member", "owner", "gpu_model"], CHARGED),
        contributed=gpu_hours(capacity, "owner", "billed"),
        contributed_by_model=gpu_hours(capacity, ["owner", "gpu_model"], "billed"),
        idle=gpu_hours(capacity, "owner", "idle"),
        lost=gpu_hours(lost, "member", "gpu_seconds_lost"),
        lost_by_cause=gpu_hours(lost, ["member", "cause"], "gpu_seconds_lost"),
    )


@dataclass(frozen=True)
class Prices:
    """Usage and capacity at price: exact Decimal, except `capacity_cost` (cents)."""

    capacity_cost: dict[tuple[str, str], Decimal]
    """(owner, GPU model) -> contributed capacity at price, in cents."""
    charged: dict[tuple[str, str], Decimal]
    """(user, owner) -> use of the owner's hardware beyond purchased GPUs."""
    charged_by_model: dict[tuple[str, str, str], Decimal]
    within_purchase: dict[str, Decimal]
    lost: dict[str, Decimal]


def month_prices(
    book: PriceBook,
    usage_split: pd.DataFrame,
    capacity: pd.DataFrame,
    lost: pd.DataFrame,
    version_of_hour: pd.Series,
    current_version: int,
) -> Prices:
    capacity_exact: dict[Any, Decimal] = priced_by_model(book, capacity, ["owner"], "billed")
    return Prices(
        capacity_cost={k: cents(v) for k, v in capacity_exact.items()},
        charged=priced(book, usage_split, ["member", "owner"], CHARGED),
        charged_by_model=priced_by_model(book, usage_split, ["member", "owner"], CHARGED),
        within_purchase=priced(book, usage_split, ["member"], "within_purchase"),
        lost=priced(book, lost_versions(lost, version_of_hour, current_version), ["member"], LOST),
    )


LOST = "gpu_seconds_lost"


def lost_versions(lost: pd.DataFrame, version_of_hour: pd.Series, current: int) -> pd.DataFrame:
    """GPU-seconds lost to reclaim with the policy version in force at each hour (the
    version of the prices they are valued at)."""
    versions = lost["hour"].map(version_of_hour).fillna(current).astype("int64")
    return lost.assign(policy_version=versions)


@dataclass(frozen=True)
class IdleUnderRule:
    """The idle capacity of the month's hours whose policy version has one idle cost
    rule (`billing.idleCost`), and what that rule makes of it."""

    rule: IdleCostRule
    hours: pd.Series
    """owner -> idle GPU-hours."""
    value: dict[str, Decimal]
    """owner -> their value at price, exact."""
    returned: dict[str, Decimal]
    """owner -> what it returns to the pool, cents (none under `owner`)."""
    share: dict[str, Decimal]
    """member -> its share of the pool, cents (none under `owner`)."""
    rated: RatedLines = field(default_factory=dict)
    """(owner, GPU model) -> idle GPU-hours at each rate."""


@dataclass(frozen=True)
class BillParts:
    """Everything the invoice lines and summary rows are made from."""

    policy: Policy
    members: list[str]
    hours_in_month: int
    versions: list[int]
    """Policy versions in force during the month."""
    book: PriceBook
    hours: GpuHours
    prices: Prices
    charges: dict[tuple[str, str], Decimal]
    """(user, owner) -> charge for use of the owner's hardware, cents."""
    purchases: dict[tuple[str, str], Decimal]
    """(buyer, owner) -> purchase payment, cents."""
    shared: dict[str, dict[str, Decimal]]
    """shared cost name -> member -> share, cents."""
    has_data: set[str]
    efficiency: dict[str, float | None]
    pooling_dividend: dict[str, float]
    """member -> pooling dividend in GPU-hours, from a simulator's summary.json."""
    rated_charges: RatedLines = field(default_factory=dict)
    """(user, owner, GPU model) -> charged GPU-hours at each rate."""
    rated_capacity: RatedLines = field(default_factory=dict)
    """(owner, GPU model) -> billed capacity GPU-hours at each rate."""
    rated_own: RatedLines = field(default_factory=dict)
    """(member, GPU model) -> GPU-hours used on its own nodes at each rate."""
    rated_purchases: RatedLines = field(default_factory=dict)
    """(buyer, host, GPU model) -> purchased GPU-hours that host serves at each rate."""
    purchased_hours: dict[tuple[str, str], float] = field(default_factory=dict)
    """(member, GPU model) -> purchased GPU-hours of the month (each hour's version)."""
    rated_within_purchase: RatedLines = field(default_factory=dict)
    """(member, GPU model) -> GPU-hours used within its purchased GPUs at each rate."""
    rated_lost: RatedLines = field(default_factory=dict)
    """(member, GPU model) -> GPU-hours lost to reclaim at each rate."""
    idle_by_rule: tuple[IdleUnderRule, ...] = ()
    """The month's idle capacity split by the idle cost rule of each hour's policy
    version, in the order the rules first apply (one part in most months)."""
