"""Prices per GPU model and policy version, and sums of GPU-seconds at price."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pandas as pd

from policies.errors import InputError
from policies.model import Policy
from reports.costmodel.money import CONTEXT, ZERO, hours_cost


@dataclass(frozen=True)
class PriceBook:
    """Hourly prices per GPU model and policy version."""

    policy: Policy
    by_version: Mapping[int, Policy] = field(default_factory=dict)

    def price(self, gpu_model: str, policy_version: int | None = None) -> Decimal:
        """The model's hourly price in `policy_version` (the book's policy when None, or
        unknown); a model that version does not price takes the price of the first later
        version that does (`later_price`)."""
        policy = self.policy
        if policy_version is not None:
            policy = self.by_version.get(policy_version, self.policy)
        try:
            return policy.gpu_model(gpu_model).hourly_cost
        except KeyError:
            later = self.later_price(gpu_model, policy.version)
            if later is not None:
                return later[1]
            known = ", ".join(m.name for m in policy.spec.gpu_models)
            raise InputError(
                f"usage: GPU model {gpu_model!r} has no price in policy version "
                f"{policy.version} (known: {known})"
            ) from None

    def later_price(self, gpu_model: str, version: int) -> tuple[int, Decimal] | None:
        """(version, price) of the first version after `version` that prices the model:
        a node of a new model joins before the policy that prices it is applied, and
        those hours were otherwise unpriceable for ever (the recorded history cannot
        change), so that no report of the month could be made."""
        for later in sorted(v for v in self.by_version if v > version):
            models = {m.name: m for m in self.by_version[later].spec.gpu_models}
            if gpu_model in models:
                return later, models[gpu_model].hourly_cost
        return None

    def rate(self, gpu_model: str, versions: list[int]) -> Decimal | None:
        """The one price of `gpu_model` over `versions`, None when it changed between them."""
        prices = {self.price(gpu_model, v) for v in versions}
        return prices.pop() if len(prices) == 1 else None


def priced(book: PriceBook, frame: pd.DataFrame, by: list[str], column: str) -> dict[Any, Decimal]:
    """Σ `column` (GPU-seconds) at price, exact, grouped by `by` (a key of one column is
    the value, of several a tuple). `frame` has `gpu_model` and `policy_version`; `by`
    must not name the version."""
    grouped = frame.groupby([*by, "gpu_model", "policy_version"])[column].sum()
    result: dict[Any, Decimal] = {}
    for index, value in grouped.items():
        *group, model, version = index if isinstance(index, tuple) else (index,)
        key = tuple(group) if len(group) > 1 else group[0]
        amount = hours_cost(value, book.price(str(model), int(version)))
        result[key] = CONTEXT.add(result.get(key, ZERO), amount)
    return result


def priced_by_model(
    book: PriceBook, frame: pd.DataFrame, by: list[str], column: str
) -> dict[Any, Decimal]:
    """As `priced`, with the GPU model as the last part of the key."""
    return priced(book, frame.assign(_model=frame["gpu_model"]), [*by, "_model"], column)


def gpu_hours(frame: pd.DataFrame, by: list[str] | str, column: str) -> pd.Series:
    """Σ `column` (GPU-seconds) in GPU-hours, grouped by `by`."""
    return frame.groupby(by)[column].sum() / 3600.0
