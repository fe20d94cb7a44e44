"""Purchased GPUs: paid whole to the other owners of the GPU model, hour by hour as each
policy version of the month holds them."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd

from policies.model import Policy
from reports.costmodel.flags import Flag
from reports.costmodel.money import CONTEXT, ZERO, cents, split
from reports.costmodel.prices import PriceBook
from reports.costmodel.rated import Rated


def purchase_payments(
    policy: Policy,
    book: PriceBook,
    contributed_model_hours: pd.Series,
    version_hours: pd.Series,
    members: list[str],
    flags: list[str],
) -> dict[tuple[str, str], Decimal]:
    """(buyer, owner) -> what the buyer pays that owner, in cents.

    A purchase costs, for each hour of the month, the GPUs the buyer held purchased in
    that hour's policy version x that version's price, shared among the other owners of
    that GPU model in proportion to their contributed GPU-hours of it: they host the
    purchased entitlement. A purchase of a model nobody else contributed is not billed,
    and flagged. (Each hour's version, not the month's last: a purchase applied on the
    20th used to be charged from the 1st, and one ended mid-month not at all.)
    `version_hours`: the hours billed under each policy version (`version_hours`);
    `members`: the report's members in policy order, which breaks ties for a cent."""
    payments: dict[tuple[str, str], Decimal] = {}
    for (buyer, model), held in _purchased_hours(policy, book, version_hours).items():
        hosts = _hosts(contributed_model_hours, model, buyer)
        if not hosts:
            gpus = max(gpus for _, gpus, _ in held)
            flags.append(
                Flag(
                    f"{buyer} holds {gpus} purchased {model} but no other member "
                    f"contributed {model} this month: purchase not billed",
                    [buyer],
                )
            )
            continue
        whole = ZERO
        for version, gpus, count in held:
            whole += Decimal(gpus) * _dec(count) * book.price(model, version)
        # The purchase is paid whole: rounded once, then split to the cent by largest
        # remainder (each host's share rounded alone lost or added a cent). Ties go in
        # policy order, as the rounding rule says (by name, zeta lost its cent to alpha).
        order = [*members, *sorted(h for h in hosts if h not in members)]
        shares = split(cents(whole), hosts, order)
        for owner, share in shares.items():
            payments[(buyer, owner)] = payments.get((buyer, owner), ZERO) + share
    return payments


def version_hours(version_of_hour: pd.Series, hour_share: pd.Series) -> pd.Series:
    """Policy version -> the hours billed under it: each hour of the period counts the
    part of it the period covers (a simulated window may end inside an hour; every hour
    of a ledger's month counts whole)."""
    return hour_share.groupby(version_of_hour.to_numpy()).sum().sort_index()


def _purchased_hours(
    policy: Policy, book: PriceBook, version_hours: pd.Series
) -> dict[tuple[str, str], list[tuple[int, int, float]]]:
    """(buyer, GPU model) -> [(policy version, purchased GPUs in it, hours billed under
    it)], for the purchases any version of the month holds, by buyer and model."""
    held: dict[tuple[str, str], list[tuple[int, int, float]]] = {}
    for version, count in version_hours.items():
        in_force = book.by_version.get(int(version), policy)
        for member in in_force.members:
            for model, gpus in member.purchased.items():
                if gpus:
                    held.setdefault((member.name, model), []).append(
                        (int(version), int(gpus), float(count))
                    )
    return dict(sorted(held.items()))


def purchased_gpu_hours(
    policy: Policy, book: PriceBook, version_hours: pd.Series
) -> dict[tuple[str, str], float]:
    """(member, GPU model) -> purchased GPUs x the hours each version held them."""
    return {
        key: float(sum(gpus * count for _, gpus, count in held))
        for key, held in _purchased_hours(policy, book, version_hours).items()
    }


def _hosts(contributed_model_hours: pd.Series, model: str, buyer: str) -> dict[str, float]:
    return {
        owner: float(h)
        for (owner, g), h in contributed_model_hours.items()
        if g == model and owner != buyer and h > 0
    }


def purchase_detail(
    policy: Policy,
    book: PriceBook,
    contributed_model_hours: pd.Series,
    version_hours: pd.Series,
) -> dict[tuple[str, str, str], list[Rated]]:
    """(buyer, host, GPU model) -> the purchased GPU-hours that host serves, at each rate:
    the invoice lines behind `purchase_payments` (same shares, same prices)."""
    detail: dict[tuple[str, str, str], list[Rated]] = {}
    for (buyer, model), held in _purchased_hours(policy, book, version_hours).items():
        hosts = _hosts(contributed_model_hours, model, buyer)
        if not hosts:
            continue
        total_h = sum(hosts.values())
        for owner, h in hosts.items():
            by_rate: dict[Decimal, tuple[float, Decimal]] = {}
            for version, gpus, count in held:
                rate = book.price(model, version)
                whole = Decimal(gpus) * _dec(count)
                share_hours = CONTEXT.divide(CONTEXT.multiply(whole, _dec(h)), _dec(total_h))
                hours, exact = by_rate.get(rate, (0.0, ZERO))
                by_rate[rate] = (
                    hours + float(share_hours),
                    exact + CONTEXT.multiply(share_hours, rate),
                )
            detail[(buyer, owner, model)] = [
                Rated(r, hh, e) for r, (hh, e) in sorted(by_rate.items())
            ]
    return detail


def _dec(value: float) -> Decimal:
    return Decimal(repr(float(value)))
