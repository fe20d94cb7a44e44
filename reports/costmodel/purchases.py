"""Purchased GPUs: paid whole to the other owners of the GPU model."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd

from policies.model import Policy
from reports.costmodel.money import CONTEXT, ZERO, cents
from reports.costmodel.prices import PriceBook
from reports.costmodel.rated import Rated


def purchase_payments(
    policy: Policy,
    book: PriceBook,
    contributed_model_hours: pd.Series,
    version_of_hour: pd.Series,
    flags: list[str],
) -> dict[tuple[str, str], Decimal]:
    """(buyer, owner) -> what the buyer pays that owner, in cents.

    A purchase costs GPUs x hours of the month x price (the price of each hour's policy
    version), shared among the other owners of that GPU model in proportion to their
    contributed GPU-hours of it: they host the purchased entitlement. A purchase of a
    model nobody else contributed is not billed, and flagged."""
    payments: dict[tuple[str, str], Decimal] = {}
    hours_per_version = version_of_hour.value_counts()
    for buyer in policy.members:
        for model, gpus in buyer.purchased.items():
            if not gpus:
                continue
            hosts = {
                owner: float(h)
                for (owner, g), h in contributed_model_hours.items()
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
                payments[(buyer.name, owner)] = payments.get((buyer.name, owner), ZERO) + share
    return {k: cents(v) for k, v in payments.items()}


def purchase_detail(
    policy: Policy,
    book: PriceBook,
    contributed_model_hours: pd.Series,
    version_of_hour: pd.Series,
) -> dict[tuple[str, str, str], list[Rated]]:
    """(buyer, host, GPU model) -> the purchased GPU-hours that host serves, at each rate:
    the invoice lines behind `purchase_payments` (same shares, same prices)."""
    detail: dict[tuple[str, str, str], list[Rated]] = {}
    hours_per_version = version_of_hour.value_counts()
    for buyer in policy.members:
        for model, gpus in buyer.purchased.items():
            hosts = {
                owner: float(h)
                for (owner, g), h in contributed_model_hours.items()
                if g == model and owner != buyer.name and h > 0
            }
            if not gpus or not hosts:
                continue
            total_h = sum(hosts.values())
            for owner, h in hosts.items():
                by_rate: dict[Decimal, tuple[float, Decimal]] = {}
                for version, count in hours_per_version.items():
                    rate = book.price(model, int(version))
                    whole = Decimal(gpus) * Decimal(int(count))
                    share_hours = CONTEXT.divide(CONTEXT.multiply(whole, _dec(h)), _dec(total_h))
                    hours, exact = by_rate.get(rate, (0.0, ZERO))
                    by_rate[rate] = (
                        hours + float(share_hours),
                        exact + CONTEXT.multiply(share_hours, rate),
                    )
                detail[(buyer.name, owner, model)] = [
                    Rated(r, hh, e) for r, (hh, e) in sorted(by_rate.items())
                ]
    return detail


def purchased(policy: Policy, member: str) -> dict[str, int]:
    """A member's purchased GPUs per model (none for a name outside the policy)."""
    try:
        return dict(policy.member(member).purchased)
    except KeyError:
        return {}


def _dec(value: float) -> Decimal:
    return Decimal(repr(float(value)))
