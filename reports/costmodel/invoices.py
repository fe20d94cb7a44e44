"""Invoices: each member's lines (capacity, use of others' hardware, lent, purchases,
idle capacity, shared costs, information) and its summary row."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from decimal import Decimal
from typing import Any

import pandas as pd

from policies.model import IdleCostRule
from reports.costmodel.bill import BillParts, IdleUnderRule
from reports.costmodel.frames import LOST_CAUSES
from reports.costmodel.money import ZERO, cents, largest_remainder
from reports.costmodel.rated import Rated, RatedLines, split, split_models
from reports.costmodel.report import INVOICE_COLUMNS

OTHERS_HARDWARE = "others-hardware"
LENT = "lent"


class InvoiceLines:
    """Invoice lines in the order they are added."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, member: str, section: str, description: str, **values: Any) -> None:
        self.rows.append(
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

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=INVOICE_COLUMNS)


def invoices_and_summary(parts: BillParts) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(invoice lines of every member, one summary row per member)."""
    lines = InvoiceLines()
    rows = [member_invoice(member, parts, lines) for member in parts.members]
    return lines.frame(), pd.DataFrame(rows)


def member_invoice(m: str, parts: BillParts, lines: InvoiceLines) -> dict[str, Any]:
    """Add `m`'s lines; return its summary row."""
    capacity = capacity_lines(m, parts, lines)
    charges = others_hardware_lines(m, parts, lines)
    credits = lent_lines(m, parts, lines)
    paid, received = purchase_lines(m, parts, lines)
    idle_adjustment = idle_lines(m, parts, lines)
    shared = shared_cost_lines(m, parts, lines)
    within_value = info_lines(m, parts, lines)
    total = capacity + charges - credits + paid - received + idle_adjustment + shared
    money = {
        "capacity_cost": capacity,
        "charges": charges,
        "credits": credits,
        "purchase_paid": paid,
        "purchase_received": received,
        "idle_adjustment": idle_adjustment,
        "shared_fixed": shared,
        "total": total,
        "net_settlement": credits + received - charges - paid,
    }
    return summary_row(m, parts, money, within_value)


def capacity_lines(m: str, parts: BillParts, lines: InvoiceLines) -> Decimal:
    """Contributed capacity per GPU model (and rate) at price; returns their sum."""
    total = ZERO
    for (owner, model), amount in sorted(parts.prices.capacity_cost.items()):
        if owner != m:
            continue
        rated = parts.rated_capacity.get((owner, model), [])
        if not rated:
            hours = float(parts.hours.contributed_by_model.get((owner, model), 0.0))
            rated = [Rated(parts.book.price(model, parts.versions[-1]), hours, amount)]
        for part, piece in split(amount, rated):
            lines.add(
                m,
                "capacity",
                f"Contributed capacity, {model}",
                gpu_model=model,
                gpu_hours=part.gpu_hours,
                rate=part.rate,
                amount=piece,
            )
        total += amount
    return total


def others_hardware_lines(m: str, parts: BillParts, lines: InvoiceLines) -> Decimal:
    """One line per owner and GPU model whose hardware `m` used beyond its purchased
    GPUs; returns the charges."""
    charges = ZERO
    for owner in parts.members:
        cell = parts.charges.get((m, owner))
        if cell is not None:
            description = (
                f"Used on others' hardware: {owner}'s nodes (charged whether or not within "
                "entitlement; offset by what you lent)"
            )
            _settlement_lines(m, parts, lines, m, owner, cell, OTHERS_HARDWARE, description)
            charges += cell
    return charges


def lent_lines(m: str, parts: BillParts, lines: InvoiceLines) -> Decimal:
    """One credit line per member and GPU model that used `m`'s nodes and was charged
    for it; returns the credits."""
    credits = ZERO
    for user in parts.members:
        cell = parts.charges.get((user, m))
        if cell is not None:
            description = (
                f"Lent to {user}: its use of your nodes (credited; offsets your use of "
                "others' hardware)"
            )
            _settlement_lines(m, parts, lines, user, m, cell, LENT, description)
            credits += cell
    return credits


def _settlement_lines(
    m: str,
    parts: BillParts,
    lines: InvoiceLines,
    user: str,
    owner: str,
    cell: Decimal,
    section: str,
    description: str,
) -> None:
    """`m`'s lines for the settlement cell (user, owner), one per GPU model: a charge when
    `m` is the user, a credit (negative) when `m` is the owner."""
    sign = 1 if m == user else -1
    for model, amount in _by_model(parts, user, owner, cell).items():
        for part, piece in split(amount, parts.rated_charges.get((user, owner, model), [])):
            lines.add(
                m,
                section,
                description,
                counterparty=owner if m == user else user,
                gpu_model=model,
                gpu_hours=part.gpu_hours,
                rate=part.rate,
                amount=sign * piece,
            )


def _by_model(parts: BillParts, user: str, owner: str, cell: Decimal) -> dict[str, Decimal]:
    """The settlement cell (user, owner) split over GPU models so the lines add up to it."""
    exact: Mapping[str, Decimal] = {
        model: value
        for (u, o, model), value in sorted(parts.prices.charged_by_model.items())
        if u == user and o == owner and value
    }
    return largest_remainder(exact, cell, list(exact))


def purchase_lines(m: str, parts: BillParts, lines: InvoiceLines) -> tuple[Decimal, Decimal]:
    """What `m` pays for its purchased GPUs and receives for hosting others', one line per
    GPU model and rate."""
    paid = received = ZERO
    for host in parts.members:
        cell = parts.purchases.get((m, host))
        if cell is not None:
            _purchase_lines(m, parts, lines, m, host, cell, f"Purchased GPUs, hosted by {host}")
            paid += cell
    for buyer in parts.members:
        cell = parts.purchases.get((buyer, m))
        if cell is not None:
            _purchase_lines(m, parts, lines, buyer, m, cell, f"Hosting {buyer}'s purchased GPUs")
            received += cell
    return paid, received


def _purchase_lines(
    m: str,
    parts: BillParts,
    lines: InvoiceLines,
    buyer: str,
    host: str,
    cell: Decimal,
    description: str,
) -> None:
    sign = 1 if m == buyer else -1
    rated = {
        model: detail
        for (b, h, model), detail in sorted(parts.rated_purchases.items())
        if b == buyer and h == host
    }
    if not rated:
        lines.add(m, "purchase", description, counterparty=host, amount=sign * cell)
        return
    for model, amount in split_models(cell, rated).items():
        for part, piece in split(amount, rated[model]):
            lines.add(
                m,
                "purchase",
                description,
                counterparty=host if m == buyer else buyer,
                gpu_model=model,
                gpu_hours=part.gpu_hours,
                rate=part.rate,
                amount=sign * piece,
            )


def idle_lines(m: str, parts: BillParts, lines: InvoiceLines) -> Decimal:
    """Idle capacity on `m`'s nodes under the idle cost rule of each hour's policy
    version; returns the adjustment (share of the pooled idle capacity minus what `m`
    returned to the pool)."""
    several = len(parts.idle_by_rule) > 1
    return sum((_idle_lines(m, idle, lines, several) for idle in parts.idle_by_rule), start=ZERO)


def _idle_lines(m: str, idle: IdleUnderRule, lines: InvoiceLines, several: bool) -> Decimal:
    """`idle_lines` for the hours under one rule (`several`: the month has others, and
    the returned line names its rule)."""
    rule = idle.rule
    idle_h = float(idle.hours.get(m, 0.0))
    returned = idle.returned.get(m, ZERO)
    share = idle.share.get(m, ZERO)
    own_models = _member_models(idle.rated, m)
    if rule is IdleCostRule.OWNER:
        if idle_h > 0:
            _rated_lines(
                m,
                lines,
                "info",
                "Idle capacity on own nodes (in the capacity cost: idle cost rule 'owner')",
                own_models,
                cents(idle.value.get(m, ZERO)),
                "info_value",
                idle_h,
            )
        return share - returned
    if returned or idle_h > 0:
        _rated_lines(
            m,
            lines,
            "idle",
            "Idle capacity on own nodes, returned to the pool"
            + (f" ({rule.value})" if several else ""),
            own_models,
            -returned,
            "amount",
            idle_h,
        )
    if m in idle.share:
        lines.add(m, "idle", f"Share of pooled idle capacity ({rule.value})", amount=share)
    return share - returned


def shared_cost_lines(m: str, parts: BillParts, lines: InvoiceLines) -> Decimal:
    """`m`'s share of each shared fixed cost; returns their sum."""
    total = ZERO
    for cost in parts.policy.billing.shared_fixed_costs:
        piece = parts.shared[cost.name].get(m)
        if piece is None:
            continue
        lines.add(m, "shared", f"Shared cost: {cost.name} ({cost.split.value})", amount=piece)
        total += piece
    return total


def info_lines(m: str, parts: BillParts, lines: InvoiceLines) -> Decimal:
    """Information lines (not money due): own use, use within purchased GPUs, GPU-hours
    lost to reclaim. Returns the value at price of the use within purchased GPUs."""
    hours = parts.hours
    for (member, model), rated in sorted(parts.rated_own.items()):
        if member != m:
            continue
        for part in rated:
            lines.add(
                m,
                "info",
                "Used on own nodes (in the capacity cost)",
                gpu_model=model,
                gpu_hours=part.gpu_hours,
                rate=part.rate,
                info_value=cents(part.exact),
            )
    within_value = cents(parts.prices.within_purchase.get(m, ZERO))
    if hours.within_purchase.get(m, 0.0) > 0:
        _rated_lines(
            m,
            lines,
            "info",
            "Used within purchased GPUs (paid by the purchase)",
            _member_models(parts.rated_within_purchase, m),
            within_value,
            "info_value",
            float(hours.within_purchase.get(m, 0.0)),
        )
    if hours.lost.get(m, 0.0) > 0:
        _rated_lines(
            m,
            lines,
            "info",
            "GPU-hours lost to reclaim (not billed: already billed as use)",
            _member_models(parts.rated_lost, m),
            cents(parts.prices.lost.get(m, ZERO)),
            "info_value",
            float(hours.lost.get(m, 0.0)),
        )
    return within_value


def _member_models(rated: RatedLines, m: str) -> dict[Hashable, list[Rated]]:
    """`m`'s entries of (member, GPU model)-keyed rated lines, by GPU model."""
    return {str(model): parts for (member, model), parts in sorted(rated.items()) if member == m}


def _rated_lines(
    m: str,
    lines: InvoiceLines,
    section: str,
    description: str,
    rated: Mapping[Hashable, list[Rated]],
    total: Decimal,
    field: str,
    gpu_hours: float,
) -> None:
    """One line per GPU model and rate, its GPU-hours and its part of `total` (cents, in
    `field`: `amount` for money due, `info_value` for information), the parts rounded by
    largest remainder so they add up to `total` exactly. Without rated parts (nothing
    priced), one line of `gpu_hours` and `total`."""
    if not rated:
        lines.add(m, section, description, gpu_hours=gpu_hours, **{field: total})
        return
    sign = -1 if total < 0 else 1
    for model, amount in split_models(abs(total), rated).items():
        for part, piece in split(amount, rated[model]):
            lines.add(
                m,
                section,
                description,
                gpu_model=model,
                gpu_hours=part.gpu_hours,
                rate=part.rate,
                **{field: sign * piece},
            )


def summary_row(
    m: str, parts: BillParts, money: dict[str, Decimal], within_value: Decimal
) -> dict[str, Any]:
    """`m`'s GPU-hours and money; GPU-hours are None for a member without data."""
    hours = parts.hours
    nodata = m not in parts.has_data

    def qty(series: pd.Series) -> float | None:
        return None if nodata else float(series.get(m, 0.0))

    purchased_h = sum(h for (member, _), h in parts.purchased_hours.items() if member == m)
    contributed = float(hours.contributed.get(m, 0.0))
    return {
        "member": m,
        "status": "no data" if nodata else "ok",
        "contributed_gpu_hours": qty(hours.contributed),
        "purchased_gpu_hours": None if nodata else purchased_h,
        "entitlement_gpu_hours": None if nodata else contributed + purchased_h,
        "used_gpu_hours": qty(hours.used),
        "used_own_gpu_hours": qty(hours.own),
        "used_within_purchase_gpu_hours": qty(hours.within_purchase),
        "used_on_others_charged_gpu_hours": qty(hours.used_on_others_charged),
        "lent_gpu_hours": qty(hours.lent),
        "lent_credited_gpu_hours": qty(hours.lent_credited),
        "idle_gpu_hours": qty(hours.idle),
        "reclaim_lost_gpu_hours": qty(hours.lost),
        **{
            f"reclaim_lost_{cause}_gpu_hours": None
            if nodata
            else float(hours.lost_by_cause.get((m, cause), 0.0))
            for cause in LOST_CAUSES
        },
        "efficiency": parts.efficiency[m],
        **money,
        "lent_and_purchase_net_money": money["credits"] + within_value - money["purchase_paid"],
        "pooling_dividend_gpu_hours": parts.pooling_dividend.get(m),
    }
