"""Every invoice line a member pays or is credited names its GPU model, GPU-hours and
rate, amount = GPU-hours x rate to the cent, and the lines add up to the total."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
import pytest

from policies.loader import parse_policy
from reports.costmodel import MonthReport, build_month_report, check_invariants
from reports.costmodel.policy_history import PolicyHistory
from tests.unit.test_costmodel import CAPACITY, H1, USAGE, make_policy

PRICED_SECTIONS = ("capacity", "others-hardware", "lent", "purchase")


def history_with_new_price() -> PolicyHistory:
    """Version 0 (H at 2.00) until H1, version 1 (H at 4.00) from H1 on."""
    old = make_policy(c_purchased="{A: 1}", version=0)
    new = parse_policy(
        """
apiVersion: fairpool.io/v1
kind: Policy
metadata: {name: test-pool, version: 1}
spec:
  gpuModels:
    - {name: H, hourlyCost: "4.00"}
    - {name: A, hourlyCost: "1.00"}
  members:
    - {name: a, namespaces: [a]}
    - {name: b, namespaces: [b]}
    - {name: c, namespaces: [c], purchased: {A: 1}}
  billing:
    timeZone: Europe/Paris
    idleCost: owner
    sharedFixedCosts: [{name: ops, monthlyAmount: "100.00", split: equal}]
"""
    )
    return PolicyHistory((datetime(2026, 9, 1, tzinfo=UTC), H1.to_pydatetime()), (old, new), True)


def lines_checkable(report: MonthReport) -> None:
    check_invariants(report)
    for member in report.members:
        invoice = report.invoice(member)
        priced = invoice[invoice["section"].isin(PRICED_SECTIONS)]
        for line in priced.to_dict("records"):
            assert line["gpu_model"], line
            assert line["rate"] is not None, line
            assert not pd.isna(line["gpu_hours"]), line
            expected = Decimal(repr(line["gpu_hours"])) * line["rate"]
            assert abs(abs(line["amount"]) - expected) <= Decimal("0.01"), line
        billed = sum((a for a in invoice["amount"] if a is not None), Decimal(0))
        assert billed == report.total(member)


@pytest.mark.parametrize("with_history", [False, True])
def test_every_priced_line_can_be_checked(with_history: bool) -> None:
    policy = make_policy(c_purchased="{A: 1}")
    history = history_with_new_price() if with_history else None
    report = build_month_report("2026-10", policy, USAGE, CAPACITY, history=history)
    lines_checkable(report)
    purchase = report.invoice("c")
    purchase = purchase[purchase["section"] == "purchase"]
    assert set(purchase["gpu_model"]) == {"A"} and len(purchase) >= 1


def test_a_price_change_splits_the_line_per_rate() -> None:
    report = build_month_report(
        "2026-10", make_policy(), USAGE, CAPACITY, history=history_with_new_price()
    )
    capacity = report.invoice("a")
    capacity = capacity[(capacity["section"] == "capacity") & (capacity["gpu_model"] == "H")]
    assert sorted(capacity["rate"].tolist()) == [Decimal("2.00"), Decimal("4.00")]
    lines_checkable(report)
