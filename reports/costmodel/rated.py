"""GPU-hours at each rate, so that every invoice line names its GPU model, GPU-hours and
rate and a member can check amount = GPU-hours x rate.

When the price of a GPU model changed during the month (a new policy version), a line
is split into one line per rate; the parts of a line are rounded by largest remainder
so that they add up to the line's amount to the cent.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pandas as pd

from reports.costmodel.money import ZERO, hours_cost, largest_remainder
from reports.costmodel.prices import PriceBook


@dataclass(frozen=True)
class Rated:
    """GPU-hours billed at one rate, and their exact amount."""

    rate: Decimal
    gpu_hours: float
    exact: Decimal


RatedLines = Mapping[Any, list[Rated]]


def by_rate(
    book: PriceBook, frame: pd.DataFrame, keys: list[str], column: str
) -> dict[Any, list[Rated]]:
    """Σ `column` (GPU-seconds) per (*keys, GPU model) and rate, from the policy version
    of each row (`policy_version`)."""
    if frame.empty:
        return {}
    grouped = frame.groupby([*keys, "gpu_model", "policy_version"])[column].sum()
    found: dict[Any, dict[Decimal, tuple[float, Decimal]]] = {}
    for index, seconds in grouped.items():
        if not seconds > 0:
            continue
        *key, model, version = index
        rate = book.price(str(model), int(version))
        hours, exact = found.setdefault((*key, model), {}).get(rate, (0.0, ZERO))
        found[(*key, model)][rate] = (
            hours + float(seconds) / 3600.0,
            exact + hours_cost(seconds, rate),
        )
    return {k: [Rated(r, h, e) for r, (h, e) in sorted(v.items())] for k, v in found.items()}


def split(amount: Decimal, rated: list[Rated]) -> list[tuple[Rated, Decimal]]:
    """`amount` (cents) over the rates in proportion to their exact amounts."""
    if len(rated) <= 1:
        return [(rated[0], amount)] if rated else []
    keys = [str(i) for i in range(len(rated))]
    parts = largest_remainder({k: r.exact for k, r in zip(keys, rated, strict=True)}, amount, keys)
    return [(r, parts[k]) for k, r in zip(keys, rated, strict=True)]


def split_models(amount: Decimal, rated: Mapping[Hashable, list[Rated]]) -> dict[Hashable, Decimal]:
    """`amount` (cents) over several keys (e.g. GPU models), each with its rated parts."""
    exact = {str(k): sum((r.exact for r in v), ZERO) for k, v in rated.items()}
    order = [str(k) for k in rated]
    parts = largest_remainder(exact, amount, order)
    return {k: parts[str(k)] for k in rated}
