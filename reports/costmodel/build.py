"""The cost model: a month of usage and capacity becomes invoices and a settlement.

How the bill is built (the same for metered and simulated usage):

- **Price.** Every GPU-hour is priced at its GPU model's `hourlyCost` in the policy
  version in force in that hour (`PriceBook.price(model, version)`); an hour's version
  is the newest one its usage rows name, else the current policy's.
- **Capacity cost.** Each owner's contributed capacity (available GPU-seconds, or the
  GPU-seconds used on its nodes if more were reported) at price. The pool's cost is the
  capacity cost of every owner plus the shared fixed costs.
- **Own use, borrowing, lending.** Use on a member's own nodes costs nothing extra (it
  is inside its capacity cost). Use on another member's nodes is first counted against
  the user's *purchased* GPUs of that model in that hour; the rest is *borrowed*: the
  borrower is charged at the GPU model's price and the owner (lender) credited the same.
- **Purchased GPUs.** A member with purchased GPUs pays them whole: GPUs x hours of the
  month x price, paid to the other owners of that GPU model in proportion to their
  contributed GPU-hours of that model (they host the purchased entitlement). Use within
  the purchase is not charged again. A purchase of a model no other member contributes
  is not billed (there is no one to serve it) and is flagged.
- **Idle capacity** (capacity not used by anyone) under `billing.idleCost`: `owner` -
  the owner bears it (it stays in its capacity cost); `by-contribution` / `by-usage` -
  each owner's idle capacity cost is returned to a pool that is split by contributed
  GPU-hours / GPU-hours used.
- **Shared fixed costs**: each `monthlyAmount` split `equal` (policy members),
  `by-contribution`, `by-usage` (falling back to contribution, then equal, when nobody
  contributed or used anything) or by `fixed` shares.
- **Reclaim.** GPU-hours lost to reclaim are shown per member with their value at price,
  for information only: the lost GPU-hours were already billed as use, billing them
  again would double-count.
- **Settlement.** `settlement[payer][payee]` = borrowing charges + purchase payments;
  each member's net settlement = what it receives - what it pays; the pairwise net
  (A owes B minus B owes A) is what actually changes hands.
- **Pooling dividend.** GPU-hours a member used on other members' hardware, and in
  money: the credits its hardware earned while others used it, plus the value at price
  of what it used within its purchase, minus the purchase (borrowing is charged at
  price, so it adds no money either way).

Rounding is described in `reports.costmodel.money`: every whole is conserved, so member totals
add up to the pool's cost and the settlement nets to zero, to the cent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from policies.errors import InputError
from policies.model import IdleCostRule, Policy, SplitRule
from reports.costmodel.coverage import Coverage, local_days, measure_coverage, month_hour_index
from reports.costmodel.frames import (
    UNATTRIBUTED,
    normalise_capacity,
    normalise_hour_status,
    normalise_reclaim,
    normalise_usage,
)
from reports.costmodel.money import CONTEXT, ZERO, cents, hours_cost, largest_remainder, split
from reports.costmodel.months import month_bounds

ROUNDING_RULE = (
    "Amounts are computed exactly (Decimal) and rounded only for presentation: a single "
    "amount (capacity cost per owner and GPU model, a settlement cell, a shared cost) is "
    "rounded half-even to the cent; an amount split among members (a shared cost, pooled "
    "idle capacity) is split by largest remainder (floor to the cent, leftover cents to "
    "the largest remainders, ties in policy order), so the parts add up to the whole."
)


INVOICE_COLUMNS = [
    "member",
    "section",
    "description",
    "counterparty",
    "gpu_model",
    "gpu_hours",
    "rate",
    "amount",
    "info_value",
]


class NoDataError(Exception):
    """A month with no usage and no capacity at all: there is nothing to report."""


@dataclass(frozen=True)
class PriceBook:
    """Hourly prices per GPU model and policy version."""

    policy: Policy
    by_version: Mapping[int, Policy] = field(default_factory=dict)

    def price(self, gpu_model: str, policy_version: int | None = None) -> Decimal:
        policy = self.policy
        if policy_version is not None:
            policy = self.by_version.get(policy_version, self.policy)
        try:
            return policy.gpu_model(gpu_model).hourly_cost
        except KeyError:
            known = ", ".join(m.name for m in policy.spec.gpu_models)
            raise InputError(
                f"usage: GPU model {gpu_model!r} has no price in policy version "
                f"{policy.version} (known: {known})"
            ) from None


@dataclass
class MonthReport:
    """One month's bill for the consortium; tables are pandas, money is Decimal."""

    month: str
    start: datetime
    end: datetime
    time_zone: str
    currency: str
    policy_name: str
    policy_versions: list[int]
    members: list[str]
    source: str
    hours: int
    summary: pd.DataFrame
    """One row per member: GPU-hours, money lines, total, net settlement, dividend."""
    invoices: pd.DataFrame
    """Line items: member, section, description, counterparty, gpu_model, gpu_hours,
    rate, amount (Decimal, None for information lines), info_value."""
    consortium: pd.DataFrame
    """Pool facts: item, gpu_hours, amount."""
    settlement: pd.DataFrame
    """payer (index) x payee (columns), Decimal cents."""
    net_settlement: pd.DataFrame
    """payer, payee, amount: pairwise net transfers."""
    daily_gpu_hours: pd.DataFrame
    """local day (index) x member (columns)."""
    entitlement_vs_use: pd.DataFrame
    lending_flows: pd.DataFrame
    """borrower (index) x lender (columns), GPU-hours used on the lender's nodes."""
    utilization_daily: pd.DataFrame
    coverage_daily: pd.DataFrame
    flags: list[str]
    pool_cost: Decimal
    capacity_cost: Decimal
    shared_fixed_cost: Decimal
    complete: bool
    idle_cost_rule: str = "owner"
    rounding_rule: str = ROUNDING_RULE

    def invoice(self, member: str) -> pd.DataFrame:
        return self.invoices[self.invoices["member"] == member].reset_index(drop=True)

    def total(self, member: str) -> Decimal:
        row = self.summary.loc[self.summary["member"] == member, "total"]
        if row.empty:
            raise KeyError(member)
        return Decimal(row.iloc[0])


def _member_order(policy: Policy, *names: pd.Series) -> list[str]:
    order = policy.member_names()
    extra: set[str] = set()
    for series in names:
        extra.update(str(v) for v in series.unique())
    extra -= set(order)
    tail = sorted(extra - {UNATTRIBUTED}) + ([UNATTRIBUTED] if UNATTRIBUTED in extra else [])
    return order + tail


def _dec(value: float) -> Decimal:
    return Decimal(repr(float(value)))


def _weights(
    rule: str, contribution: Mapping[str, float], usage: Mapping[str, float], equal: list[str]
) -> tuple[dict[str, float], str]:
    """Weights for a split rule, with the fallback actually used (for the flags)."""
    positive_contribution = {k: v for k, v in contribution.items() if v > 0}
    positive_usage = {k: v for k, v in usage.items() if v > 0}
    if rule == "by-usage" and positive_usage:
        return positive_usage, rule
    if rule in ("by-usage", "by-contribution") and positive_contribution:
        return positive_contribution, "by-contribution"
    return {k: 1.0 for k in equal}, "equal"


def build_month_report(
    month: str,
    policy: Policy,
    usage: pd.DataFrame | None,
    capacity: pd.DataFrame | None,
    reclaim_lost: pd.DataFrame | None = None,
    hour_status: pd.DataFrame | None = None,
    *,
    policies: Mapping[int, Policy] | None = None,
    simulation_summary: Mapping[str, Any] | None = None,
    source: str = "ledger",
) -> MonthReport:
    tz = policy.billing.zone
    start, end = month_bounds(month, tz)
    hours_in_month = int((end - start) / timedelta(hours=1))
    book = PriceBook(policy, dict(policies or {}))
    u = normalise_usage(usage, start, end, policy.version)
    cap = normalise_capacity(capacity, start, end)
    lost = normalise_reclaim(reclaim_lost, start, end)
    status = normalise_hour_status(hour_status, start, end)
    if u.empty and cap.empty:
        raise NoDataError(
            f"no usage and no capacity recorded for {month} "
            f"({start:%Y-%m-%d %H:%M}Z to {end:%Y-%m-%d %H:%M}Z): nothing to report"
        )
    flags: list[str] = []
    members = _member_order(policy, u["member"], u["owner"], cap["owner"], lost["member"])
    policy_members = policy.member_names()

    # Policy version in force per hour: the newest one the hour's usage names.
    all_hours = month_hour_index(start, end)
    version_of_hour = (
        u.groupby("hour")["policy_version"].max().reindex(all_hours).fillna(policy.version)
    ).astype("int64")

    # --- usage per hour, split into own / within purchase / borrowed -------------------
    keys = ["hour", "member", "owner", "gpu_model", "policy_version"]
    agg = u.groupby(keys, as_index=False, sort=False)["gpu_seconds"].sum()
    own = (agg["member"] == agg["owner"]).to_numpy()
    purchased_seconds = {
        (m.name, model): float(gpus) * 3600.0
        for m in policy.members
        for model, gpus in m.purchased.items()
        if gpus
    }
    other = agg[~own]
    other_total = other.groupby(["hour", "member", "gpu_model"])["gpu_seconds"].transform("sum")
    entitled = np.array(
        [
            purchased_seconds.get((m, g), 0.0)
            for m, g in zip(other["member"], other["gpu_model"], strict=True)
        ],
        dtype="float64",
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(other_total > 0, np.minimum(1.0, entitled / other_total), 0.0)
    agg["within_purchase"] = 0.0
    agg["borrowed"] = 0.0
    agg.loc[~own, "within_purchase"] = other["gpu_seconds"].to_numpy() * fraction
    agg.loc[~own, "borrowed"] = other["gpu_seconds"].to_numpy() - agg.loc[~own, "within_purchase"]
    agg["own"] = np.where(own, agg["gpu_seconds"], 0.0)

    # --- capacity per hour: billed capacity and idle -----------------------------------
    used_on = agg.groupby(["hour", "owner", "gpu_model"])["gpu_seconds"].sum().rename("used")
    capacity_hourly = pd.concat(
        [cap.set_index(["hour", "owner", "gpu_model"])["gpu_seconds_available"], used_on], axis=1
    ).fillna(0.0)
    over = capacity_hourly["used"] - capacity_hourly["gpu_seconds_available"]
    overused = over[over > 1.0]
    if not overused.empty:
        flags.append(
            f"usage exceeded reported capacity in {overused.index.get_level_values(0).nunique()} "
            f"hour(s) ({overused.sum() / 3600:.1f} GPU-hours): capacity billed at usage there"
        )
    capacity_hourly["billed"] = capacity_hourly[["gpu_seconds_available", "used"]].max(axis=1)
    capacity_hourly["idle"] = capacity_hourly["billed"] - capacity_hourly["used"]
    capacity_hourly = capacity_hourly.reset_index()
    capacity_hourly["policy_version"] = (
        capacity_hourly["hour"].map(version_of_hour).fillna(policy.version).astype("int64")
    )

    # --- money, exact --------------------------------------------------------------
    def priced(frame: pd.DataFrame, by: list[str], column: str) -> dict[Any, Decimal]:
        """Σ column at price, grouped by `by` (which must not include the version)."""
        grouped = frame.groupby([*by, "gpu_model", "policy_version"])[column].sum()
        result: dict[Any, Decimal] = {}
        for index, value in grouped.items():
            *group, model, version = index if isinstance(index, tuple) else (index,)
            key = tuple(group) if len(group) > 1 else group[0]
            amount = hours_cost(value, book.price(str(model), int(version)))
            result[key] = CONTEXT.add(result.get(key, ZERO), amount)
        return result

    def priced_by_model(frame: pd.DataFrame, by: str, column: str) -> dict[Any, Decimal]:
        return priced(frame.assign(_model=frame["gpu_model"]), [by, "_model"], column)

    capacity_exact = priced_by_model(capacity_hourly, "owner", "billed")  # (owner, model)
    idle_exact = priced(capacity_hourly, ["owner"], "idle")  # owner
    borrowed_exact = priced(agg, ["member", "owner"], "borrowed")  # (borrower, lender)
    within_exact = priced(agg, ["member"], "within_purchase")  # member
    lost_exact = priced(
        lost.assign(
            policy_version=lost["hour"].map(version_of_hour).fillna(policy.version).astype("int64")
        ),
        ["member"],
        "gpu_seconds_lost",
    )

    # --- GPU-hours (floats, for quantities) ----------------------------------------
    def hours_by(frame: pd.DataFrame, by: list[str] | str, column: str) -> pd.Series:
        return frame.groupby(by)[column].sum() / 3600.0

    used_h = hours_by(agg, "member", "gpu_seconds")
    own_h = hours_by(agg, "member", "own")
    within_h = hours_by(agg, "member", "within_purchase")
    borrowed_h = hours_by(agg, "member", "borrowed")
    lent_h = hours_by(agg[~own], "owner", "gpu_seconds")
    lent_billed_h = hours_by(agg, "owner", "borrowed")
    borrowed_pair_h = hours_by(agg, ["member", "owner"], "borrowed")
    contributed_h = hours_by(capacity_hourly, "owner", "billed")
    contributed_model_h = hours_by(capacity_hourly, ["owner", "gpu_model"], "billed")
    idle_h = hours_by(capacity_hourly, "owner", "idle")
    lost_h = hours_by(lost, "member", "gpu_seconds_lost")

    # --- rounded money ----------------------------------------------------------------
    capacity_cost = {k: cents(v) for k, v in capacity_exact.items()}
    settlement: dict[tuple[str, str], Decimal] = {}
    borrow_cells = {k: cents(v) for k, v in borrowed_exact.items() if k[0] != k[1] and v}
    purchase_cells: dict[tuple[str, str], Decimal] = {}
    hours_per_version = version_of_hour.value_counts()
    for buyer in policy.members:
        for model, gpus in buyer.purchased.items():
            if not gpus:
                continue
            hosts = {
                owner: float(h)
                for (owner, g), h in contributed_model_h.items()
                if g == model and owner != buyer.name and h > 0
            }
            if not hosts:
                flags.append(
                    f"{buyer.name} holds {gpus} purchased {model} but no other member contributed "
                    f"{model} this month: purchase not billed"
                )
                continue
            whole = ZERO
            for version, count in hours_per_version.items():
                whole += Decimal(gpus) * Decimal(int(count)) * book.price(model, int(version))
            total_h = sum(hosts.values())
            for owner, h in hosts.items():
                share = CONTEXT.divide(CONTEXT.multiply(whole, _dec(h)), _dec(total_h))
                purchase_cells[(buyer.name, owner)] = (
                    purchase_cells.get((buyer.name, owner), ZERO) + share
                )
    purchase_cells = {k: cents(v) for k, v in purchase_cells.items()}
    for cells in (borrow_cells, purchase_cells):
        for key, value in cells.items():
            settlement[key] = settlement.get(key, ZERO) + value

    contribution_weight = {m: float(contributed_h.get(m, 0.0)) for m in members}
    usage_weight = {m: float(used_h.get(m, 0.0)) for m in members}

    idle_rule = policy.billing.idle_cost
    idle_returned: dict[str, Decimal] = {}
    idle_share: dict[str, Decimal] = {}
    if idle_rule is not IdleCostRule.OWNER:
        idle_returned = {owner: cents(v) for owner, v in idle_exact.items()}
        pool_idle = sum(idle_returned.values(), ZERO)
        weights, used_rule = _weights(
            idle_rule.value, contribution_weight, usage_weight, policy_members
        )
        if used_rule != idle_rule.value:
            flags.append(f"idle capacity split {used_rule}: nobody qualified for {idle_rule.value}")
        idle_share = split(pool_idle, weights, members)

    fixed_shares: dict[str, dict[str, Decimal]] = {}
    for cost in policy.billing.shared_fixed_costs:
        amount = cents(cost.monthly_amount)
        if cost.split is SplitRule.FIXED:
            assert cost.shares is not None
            weights_d: dict[str, Decimal | float] = dict(cost.shares)
            fixed_shares[cost.name] = split(amount, weights_d, members)
            continue
        weights, used_rule = _weights(
            cost.split.value, contribution_weight, usage_weight, policy_members
        )
        if used_rule != cost.split.value:
            flags.append(f"shared cost {cost.name!r} split {used_rule}: nobody qualified")
        fixed_shares[cost.name] = split(amount, dict(weights), members)

    # --- invoices ------------------------------------------------------------------------
    lines: list[dict[str, Any]] = []
    versions_seen = sorted(set(version_of_hour.unique().tolist()))

    def rate(model: str) -> Decimal | None:
        prices = {book.price(model, v) for v in versions_seen}
        return prices.pop() if len(prices) == 1 else None

    def line(member: str, section: str, description: str, **values: Any) -> None:
        lines.append(
            {
                "member": member,
                "section": section,
                "description": description,
                "counterparty": values.get("counterparty"),
                "gpu_model": values.get("gpu_model"),
                "gpu_hours": values.get("gpu_hours", float("nan")),
                "rate": values.get("rate"),
                "amount": values.get("amount"),
                "info_value": values.get("info_value"),
            }
        )

    has_data = set(u["member"]) | set(u["owner"]) | set(cap["owner"]) | set(lost["member"])
    efficiency: dict[str, float | None] = {}
    known = u[u["utilization"].notna()]
    busy = (known["gpu_seconds"] * known["utilization"]).groupby(known["member"]).sum()
    known_seconds = known.groupby("member")["gpu_seconds"].sum()
    for m in members:
        seconds_known = float(known_seconds.get(m, 0.0))
        efficiency[m] = float(busy.get(m, 0.0)) / seconds_known if seconds_known > 0 else None

    summary_rows: list[dict[str, Any]] = []
    sim_dividend = _simulated_dividends(simulation_summary)
    for m in members:
        total = ZERO
        for (owner, model), amount in sorted(capacity_cost.items()):
            if owner != m:
                continue
            line(
                m,
                "capacity",
                f"Contributed capacity, {model}",
                gpu_model=model,
                gpu_hours=float(contributed_model_h.get((owner, model), 0.0)),
                rate=rate(model),
                amount=amount,
            )
            total += amount
        charges = credits = paid = received = ZERO
        for other_member in members:
            cell = borrow_cells.get((m, other_member))
            if cell is not None:
                line(
                    m,
                    "borrowing",
                    f"GPU-hours borrowed from {other_member}",
                    counterparty=other_member,
                    gpu_hours=float(borrowed_pair_h.get((m, other_member), 0.0)),
                    amount=cell,
                )
                charges += cell
        for other_member in members:
            cell = borrow_cells.get((other_member, m))
            if cell is not None:
                line(
                    m,
                    "lending",
                    f"GPU-hours lent to {other_member}",
                    counterparty=other_member,
                    gpu_hours=float(borrowed_pair_h.get((other_member, m), 0.0)),
                    amount=-cell,
                )
                credits += cell
        for other_member in members:
            cell = purchase_cells.get((m, other_member))
            if cell is not None:
                line(
                    m,
                    "purchase",
                    f"Purchased GPUs, hosted by {other_member}",
                    counterparty=other_member,
                    amount=cell,
                )
                paid += cell
        for other_member in members:
            cell = purchase_cells.get((other_member, m))
            if cell is not None:
                line(
                    m,
                    "purchase",
                    f"Hosting {other_member}'s purchased GPUs",
                    counterparty=other_member,
                    amount=-cell,
                )
                received += cell
        total += charges - credits + paid - received
        returned = idle_returned.get(m, ZERO)
        share = idle_share.get(m, ZERO)
        if idle_rule is IdleCostRule.OWNER:
            if idle_h.get(m, 0.0) > 0:
                line(
                    m,
                    "info",
                    "Idle capacity on own nodes (in the capacity cost: idle cost rule 'owner')",
                    gpu_hours=float(idle_h.get(m, 0.0)),
                    info_value=cents(idle_exact.get(m, ZERO)),
                )
        else:
            if returned or idle_h.get(m, 0.0) > 0:
                line(
                    m,
                    "idle",
                    "Idle capacity on own nodes, returned to the pool",
                    gpu_hours=float(idle_h.get(m, 0.0)),
                    amount=-returned,
                )
            if m in idle_share:
                line(m, "idle", f"Share of pooled idle capacity ({idle_rule.value})", amount=share)
            total += share - returned
        fixed_total = ZERO
        for cost in policy.billing.shared_fixed_costs:
            piece = fixed_shares[cost.name].get(m)
            if piece is None:
                continue
            line(m, "shared", f"Shared cost: {cost.name} ({cost.split.value})", amount=piece)
            fixed_total += piece
        total += fixed_total
        if own_h.get(m, 0.0) > 0:
            line(
                m,
                "info",
                "Used on own nodes (in the capacity cost)",
                gpu_hours=float(own_h.get(m, 0.0)),
            )
        within_value = cents(within_exact.get(m, ZERO))
        if within_h.get(m, 0.0) > 0:
            line(
                m,
                "info",
                "Used within purchased GPUs (paid by the purchase)",
                gpu_hours=float(within_h.get(m, 0.0)),
                info_value=within_value,
            )
        if lost_h.get(m, 0.0) > 0:
            line(
                m,
                "info",
                "GPU-hours lost to reclaim (not billed: already billed as use)",
                gpu_hours=float(lost_h.get(m, 0.0)),
                info_value=cents(lost_exact.get(m, ZERO)),
            )
        member_status = "ok" if m in has_data else "no data"
        nodata = member_status == "no data"

        def qty(series: pd.Series, key: str = m, nodata: bool = nodata) -> float | None:
            return None if nodata else float(series.get(key, 0.0))

        purchased_h = sum(float(g) * hours_in_month for g in _purchased(policy, m).values())
        summary_rows.append(
            {
                "member": m,
                "status": member_status,
                "contributed_gpu_hours": qty(contributed_h),
                "purchased_gpu_hours": None if nodata else purchased_h,
                "entitlement_gpu_hours": None
                if nodata
                else float(contributed_h.get(m, 0.0)) + purchased_h,
                "used_gpu_hours": qty(used_h),
                "used_own_gpu_hours": qty(own_h),
                "used_within_purchase_gpu_hours": qty(within_h),
                "borrowed_gpu_hours": qty(borrowed_h),
                "lent_gpu_hours": qty(lent_h),
                "lent_billed_gpu_hours": qty(lent_billed_h),
                "idle_gpu_hours": qty(idle_h),
                "reclaim_lost_gpu_hours": qty(lost_h),
                "efficiency": efficiency[m],
                "capacity_cost": sum((v for (o, _), v in capacity_cost.items() if o == m), ZERO),
                "charges": charges,
                "credits": credits,
                "purchase_paid": paid,
                "purchase_received": received,
                "idle_adjustment": share - returned,
                "shared_fixed": fixed_total,
                "total": total,
                "net_settlement": credits + received - charges - paid,
                "dividend_gpu_hours": None
                if nodata
                else float(borrowed_h.get(m, 0.0)) + float(within_h.get(m, 0.0)),
                "dividend_money": credits + within_value - paid,
                "simulated_dividend_gpu_hours": sim_dividend.get(m),
            }
        )
    summary = pd.DataFrame(summary_rows)
    invoices = pd.DataFrame(lines, columns=INVOICE_COLUMNS)

    capacity_total = sum(capacity_cost.values(), ZERO)
    fixed_total_all = sum(
        (cents(c.monthly_amount) for c in policy.billing.shared_fixed_costs), ZERO
    )
    pool_cost = capacity_total + fixed_total_all
    totals_sum = sum(summary["total"], ZERO)
    if totals_sum != pool_cost:  # the rounding rule makes this impossible; guard it anyway
        raise AssertionError(f"member totals {totals_sum} != pool cost {pool_cost}")

    settlement_frame = pd.DataFrame(
        [[settlement.get((p, q), ZERO) for q in members] for p in members],
        index=pd.Index(members, name="payer"),
        columns=pd.Index(members, name="payee"),
    )
    net_rows = []
    for i, a in enumerate(members):
        for b in members[i + 1 :]:
            diff = settlement.get((a, b), ZERO) - settlement.get((b, a), ZERO)
            if diff > 0:
                net_rows.append({"payer": a, "payee": b, "amount": diff})
            elif diff < 0:
                net_rows.append({"payer": b, "payee": a, "amount": -diff})
    net_settlement = pd.DataFrame(net_rows, columns=["payer", "payee", "amount"])

    # --- tables for the charts -------------------------------------------------------
    day_of = local_days(all_hours, tz)
    days = sorted(set(day_of.values))
    usage_days = agg["hour"].map(day_of)
    daily = (
        (agg.groupby([usage_days, agg["member"]])["gpu_seconds"].sum() / 3600.0)
        .unstack(fill_value=0.0)
        .reindex(index=days, columns=[m for m in members if m in used_h.index], fill_value=0.0)
    )
    daily.index.name = "day"

    coverage: Coverage = measure_coverage(start, end, tz, u, cap, status)
    flags = coverage.flags[:2] + flags + coverage.flags[2:]
    for m in members:
        if m not in has_data:
            flags.append(f"no data for member {m} this month")
    if UNATTRIBUTED in members:
        flags.append(
            f"{float(used_h.get(UNATTRIBUTED, 0.0)):.1f} GPU-hours used by pods no member "
            "could be found for (namespace not in the policy): shown as 'unattributed'"
        )

    cap_days = capacity_hourly["hour"].map(day_of)
    available_d = capacity_hourly.groupby(cap_days)["billed"].sum().reindex(days) / 3600.0
    used_d = agg.groupby(usage_days)["gpu_seconds"].sum().reindex(days) / 3600.0
    known_days = known["hour"].map(day_of)
    busy_d = (known["gpu_seconds"] * known["utilization"]).groupby(known_days).sum()
    known_d = known.groupby(known_days)["gpu_seconds"].sum()
    activity = (busy_d / known_d.where(known_d > 0)).reindex(days)
    missing_days = coverage.daily.set_index("day")
    utilization_daily = pd.DataFrame(
        {
            "day": days,
            "available_gpu_hours": available_d.to_numpy(),
            "used_gpu_hours": used_d.fillna(0.0).to_numpy(),
            "allocation": (used_d.fillna(0.0) / available_d.where(available_d > 0)).to_numpy(),
            "gpu_activity": activity.to_numpy(),
        }
    )
    # A day with every hour missing has no utilization, not zero.
    all_missing = (missing_days["hours_missing"] == missing_days["hours"]).reindex(days)
    utilization_daily.loc[all_missing.to_numpy(), ["allocation", "used_gpu_hours"]] = np.nan

    ent_rows = []
    used_model_h = hours_by(agg, ["member", "gpu_model"], "gpu_seconds")
    models = [g.name for g in policy.spec.gpu_models]
    for m in members:
        for model in models:
            contributed = float(contributed_model_h.get((m, model), 0.0))
            purchased = float(_purchased(policy, m).get(model, 0)) * hours_in_month
            used = float(used_model_h.get((m, model), 0.0))
            if contributed or purchased or used:
                ent_rows.append(
                    {
                        "member": m,
                        "gpu_model": model,
                        "contributed_gpu_hours": contributed,
                        "purchased_gpu_hours": purchased,
                        "entitlement_gpu_hours": contributed + purchased,
                        "used_gpu_hours": used,
                    }
                )
    entitlement_vs_use = pd.DataFrame(
        ent_rows,
        columns=[
            "member",
            "gpu_model",
            "contributed_gpu_hours",
            "purchased_gpu_hours",
            "entitlement_gpu_hours",
            "used_gpu_hours",
        ],
    )
    flows = hours_by(agg[~own], ["member", "owner"], "gpu_seconds")
    lending_flows = pd.DataFrame(
        [[float(flows.get((b, lender), 0.0)) for lender in members] for b in members],
        index=pd.Index(members, name="borrower"),
        columns=pd.Index(members, name="lender"),
    )

    used_total_h = float(used_h.sum())
    available_total_h = float(contributed_h.sum())
    consortium = pd.DataFrame(
        [
            {"item": "capacity cost", "gpu_hours": available_total_h, "amount": capacity_total},
            {"item": "shared fixed costs", "gpu_hours": float("nan"), "amount": fixed_total_all},
            {"item": "pool cost", "gpu_hours": float("nan"), "amount": pool_cost},
            {"item": "sum of member totals", "gpu_hours": float("nan"), "amount": totals_sum},
            {"item": "GPU-hours used", "gpu_hours": used_total_h, "amount": None},
            {"item": "GPU-hours idle", "gpu_hours": float(idle_h.sum()), "amount": None},
            {
                "item": "GPU-hours borrowed",
                "gpu_hours": float(borrowed_h.sum()),
                "amount": sum(borrow_cells.values(), ZERO),
            },
            {
                "item": "purchased GPUs paid",
                "gpu_hours": float("nan"),
                "amount": sum(purchase_cells.values(), ZERO),
            },
            {
                "item": "GPU-hours lost to reclaim",
                "gpu_hours": float(lost_h.sum()),
                "amount": None,
            },
            {
                "item": "allocation utilization",
                "gpu_hours": used_total_h / available_total_h if available_total_h else None,
                "amount": None,
            },
            {"item": "hours in month", "gpu_hours": float(hours_in_month), "amount": None},
            {"item": "hours missing", "gpu_hours": float(coverage.hours_missing), "amount": None},
            {"item": "hours partial", "gpu_hours": float(coverage.hours_partial), "amount": None},
        ]
    )

    return MonthReport(
        month=month,
        start=start,
        end=end,
        time_zone=policy.billing.time_zone,
        currency=policy.billing.currency,
        policy_name=policy.metadata.name,
        policy_versions=[int(v) for v in versions_seen],
        members=members,
        source=source,
        hours=hours_in_month,
        summary=summary,
        invoices=invoices,
        consortium=consortium,
        settlement=settlement_frame,
        net_settlement=net_settlement,
        daily_gpu_hours=daily,
        entitlement_vs_use=entitlement_vs_use,
        lending_flows=lending_flows,
        utilization_daily=utilization_daily,
        coverage_daily=coverage.daily,
        flags=flags,
        pool_cost=pool_cost,
        capacity_cost=capacity_total,
        shared_fixed_cost=fixed_total_all,
        complete=coverage.complete,
        idle_cost_rule=idle_rule.value,
    )


def _purchased(policy: Policy, member: str) -> dict[str, int]:
    try:
        return dict(policy.member(member).purchased)
    except KeyError:
        return {}


def _simulated_dividends(summary: Mapping[str, Any] | None) -> dict[str, float]:
    """`pooling_dividend_gpu_hours` per member from a simulator's summary.json."""
    if not summary:
        return {}
    for key in ("members", "per_member", "by_member"):
        block = summary.get(key)
        if isinstance(block, Mapping):
            return {
                str(name): float(values["pooling_dividend_gpu_hours"])
                for name, values in block.items()
                if isinstance(values, Mapping)
                and values.get("pooling_dividend_gpu_hours") is not None
            }
        if isinstance(block, list):
            return {
                str(values.get("member") or values.get("name")): float(
                    values["pooling_dividend_gpu_hours"]
                )
                for values in block
                if isinstance(values, Mapping)
                and values.get("pooling_dividend_gpu_hours") is not None
            }
    return {}


def check_invariants(report: MonthReport) -> None:
    """Raise AssertionError unless the bill balances to the cent (used by tests and the CLI)."""
    totals = sum(report.summary["total"], ZERO)
    assert totals == report.pool_cost, f"Σ member totals {totals} != pool cost {report.pool_cost}"
    paid = sum((v for row in report.settlement.to_numpy() for v in row), ZERO)
    received = sum((report.settlement[c].sum() for c in report.settlement.columns), ZERO)
    assert paid == received
    nets = sum(report.summary["net_settlement"], ZERO)
    assert nets == 0, f"Σ net settlement {nets} != 0"
    for member in report.members:
        lines = report.invoice(member)
        billed = sum((a for a in lines["amount"] if a is not None), ZERO) if len(lines) else ZERO
        assert billed == report.total(member), f"{member}: lines {billed} != total"


__all__ = [
    "ROUNDING_RULE",
    "MonthReport",
    "NoDataError",
    "PriceBook",
    "build_month_report",
    "check_invariants",
    "largest_remainder",
]
