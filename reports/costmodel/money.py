"""Money arithmetic: Decimal everywhere, cents only at presentation.

Rounding rule (the one printed on every report):
- a single amount (an owner's capacity cost per GPU model, one settlement cell, a
  shared fixed cost) is rounded half-even to the cent;
- an amount split among members (a shared fixed cost, the pooled idle capacity) is
  split by the largest-remainder method: every share is floored to the cent and the
  cents left over go one by one to the largest remainders (ties: policy order), so the
  shares add up to the rounded whole exactly.
Because every allocation conserves its own whole, member totals add up to the pool's
cost to the cent, and the settlement matrix nets to zero to the cent.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping, Sequence
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

CENT = Decimal("0.01")
ZERO = Decimal(0)
SECONDS_PER_HOUR = Decimal(3600)

# Enough digits that GPU-seconds x price / 3600 loses nothing a cent can see.
CONTEXT = decimal.Context(prec=40, rounding=ROUND_HALF_EVEN)


def cents(amount: Decimal) -> Decimal:
    """Half-even to the cent; zero is 0.00, never -0.00 (a price of "-0", or a debt of
    -0.004, was printed so on an invoice)."""
    rounded = amount.quantize(CENT, rounding=ROUND_HALF_EVEN, context=CONTEXT)
    return rounded if rounded else rounded.copy_abs()


def seconds(value: float) -> Decimal:
    """GPU-seconds (a float from the meter) as a Decimal, to the millisecond."""
    return Decimal(repr(round(float(value), 3)))


def hours_cost(gpu_seconds: float | Decimal, hourly_price: Decimal) -> Decimal:
    """The exact (unrounded) money for GPU-seconds at an hourly price."""
    secs = gpu_seconds if isinstance(gpu_seconds, Decimal) else seconds(gpu_seconds)
    return CONTEXT.divide(CONTEXT.multiply(secs, hourly_price), SECONDS_PER_HOUR)


def split(
    whole: Decimal, weights: Mapping[str, Decimal | float], order: Sequence[str]
) -> dict[str, Decimal]:
    """`whole` (already in cents) split in proportion to `weights`, summing exactly."""
    keys = [k for k in order if k in weights]
    weight = {k: _decimal(weights[k]) for k in keys}
    total = sum(weight.values(), ZERO)
    if not keys or total == 0:
        raise ValueError("cannot split among zero weights")
    exact = {k: CONTEXT.divide(CONTEXT.multiply(whole, weight[k]), total) for k in keys}
    return largest_remainder(exact, whole, keys)


def _decimal(value: Decimal | float) -> Decimal:
    return Decimal(repr(float(value))) if isinstance(value, float) else Decimal(value)


def largest_remainder(
    exact: Mapping[str, Decimal], target: Decimal, order: Sequence[str]
) -> dict[str, Decimal]:
    """Round `exact` to cents so that the parts add up to `target` (in cents)."""
    keys = [k for k in order if k in exact]
    floors = {k: exact[k].quantize(CENT, rounding=ROUND_FLOOR) for k in keys}
    left = int(((target - sum(floors.values(), ZERO)) / CENT).to_integral_value())
    rank = {k: i for i, k in enumerate(keys)}
    by_remainder = sorted(keys, key=lambda k: (-(exact[k] - floors[k]), rank[k]))
    result = dict(floors)
    if left >= 0:
        for i in range(left):
            result[by_remainder[i % len(keys)]] += CENT
    else:
        for i in range(-left):
            result[by_remainder[-1 - (i % len(keys))]] -= CENT
    return result


def money_str(amount: Decimal | None) -> str | None:
    """Money as a string for CSV/JSON ("1234.56"), None stays None."""
    return None if amount is None else f"{cents(amount):.2f}"


def rate_str(rate: Decimal | None, grouping: bool = False) -> str | None:
    """A price per GPU-hour as a string, exact: at least two decimals, more when the
    price has them ("2.00", "0.125"). Rounded to the cent like an amount, a price of
    0.125 read 0.12 and a line's GPU-hours x rate no longer gave its amount. With
    `grouping`, thousands are separated by commas (the HTML page). None stays None."""
    if rate is None:
        return None
    exact = Decimal(rate).normalize(CONTEXT)
    in_cents = exact.quantize(CENT, context=CONTEXT)
    if in_cents == exact:
        exact = in_cents if in_cents else in_cents.copy_abs()  # never -0.00
    return f"{exact:,f}" if grouping else f"{exact:f}"
