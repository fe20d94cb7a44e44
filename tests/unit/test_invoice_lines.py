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

D = Decimal

PRICED_SECTIONS = ("capacity", "others-hardware", "lent", "purchase")


def history_with_new_price(idle: str = "owner") -> PolicyHistory:
    """Version 0 (H at 2.00) until H1, version 1 (H at 4.00) from H1 on; both with the
    idle cost rule `idle` (each hour's idle capacity follows its version's rule)."""
    old = make_policy(idle=idle, c_purchased="{A: 1}", version=0)
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
    idleCost: IDLE
    sharedFixedCosts: [{name: ops, monthlyAmount: "100.00", split: equal}]
""".replace("IDLE", idle)
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


# Two hours on 2026-10-10 (H at 2.00, A at 1.00; 4.00 for H from H1 on with the history):
# a owns 3 H and 1 A GPUs and leaves 1 H and 1 A idle every hour; c uses 1 A on b's nodes within
# its purchased A GPU; a and b lose GPU-hours of both models to reclaim.
H0_ = pd.Timestamp("2026-10-10T00:00Z")
H1_ = pd.Timestamp("2026-10-10T01:00Z")
TWO_MODEL_CAPACITY = pd.DataFrame(
    [
        (h, owner, model, seconds)
        for h in (H0_, H1_)
        for owner, model, seconds in (("a", "H", 10800.0), ("a", "A", 3600.0), ("b", "A", 7200.0))
    ],
    columns=["hour", "owner", "gpu_model", "gpu_seconds_available"],
)
LOST = pd.DataFrame(
    [
        (H0_, "a", "H", 1800.0),
        (H1_, "a", "H", 900.0),
        (H1_, "a", "A", 1200.0),
        (H0_, "b", "A", 600.0),
    ],
    columns=["hour", "member", "gpu_model", "gpu_seconds_lost"],
)
IDLE_RETURNED = "Idle capacity on own nodes, returned to the pool"
IDLE_OWNER = "Idle capacity on own nodes (in the capacity cost"
WITHIN = "Used within purchased GPUs"
RECLAIM = "GPU-hours lost to reclaim"


def _two_model_report(idle: str, with_history: bool) -> MonthReport:
    usage = USAGE[USAGE["gpu_model"] == "H"].copy()
    usage = pd.concat(
        [
            usage,
            USAGE[(USAGE["member"] == "c")],  # c on b's A node, within its purchase
        ],
        ignore_index=True,
    )
    history = history_with_new_price(idle) if with_history else None
    return build_month_report(
        "2026-10",
        make_policy(idle=idle, c_purchased="{A: 1}"),
        usage,
        TWO_MODEL_CAPACITY,
        reclaim_lost=LOST,
        history=history,
    )


def _lines(report: MonthReport, member: str, description: str) -> pd.DataFrame:
    invoice = report.invoice(member)
    return invoice[invoice["description"].str.startswith(description)]


def _checkable(lines: pd.DataFrame, value: str) -> Decimal:
    """Every line names its model and rate, value = GPU-hours x rate to the cent; the sum."""
    assert len(lines)
    for line in lines.to_dict("records"):
        assert line["gpu_model"] in ("H", "A"), line
        assert line["rate"] is not None, line
        expected = Decimal(repr(line["gpu_hours"])) * line["rate"]
        assert abs(abs(line[value]) - expected) <= Decimal("0.01"), line
    return sum(lines[value], Decimal(0))


@pytest.mark.parametrize("with_history", [False, True])
def test_idle_capacity_returned_is_split_per_model_and_rate(with_history: bool) -> None:
    report = _two_model_report("by-contribution", with_history)
    check_invariants(report)
    idle = _lines(report, "a", IDLE_RETURNED)
    assert set(idle["gpu_model"]) == {"H", "A"}
    returned = _checkable(idle, "amount")
    summary = report.summary.set_index("member")
    share = _lines(report, "a", "Share of pooled idle capacity")["amount"].sum()
    assert returned + share == summary.loc["a", "idle_adjustment"]
    assert idle["gpu_hours"].sum() == pytest.approx(summary.loc["a", "idle_gpu_hours"])
    if with_history:
        assert sorted(idle.loc[idle["gpu_model"] == "H", "rate"]) == [D("2.00"), D("4.00")]


def test_idle_capacity_under_the_owner_rule_is_split_per_model() -> None:
    report = _two_model_report("owner", False)
    idle = _lines(report, "a", IDLE_OWNER)
    assert set(idle["gpu_model"]) == {"H", "A"}
    _checkable(idle, "info_value")
    # 2 idle H-hours (4.00) + 2 idle A-hours (2.00) on a's nodes over the two hours.
    assert sum(idle["info_value"], D(0)) == D("6.00")
    assert idle["gpu_hours"].sum() == pytest.approx(4.0)


@pytest.mark.parametrize("with_history", [False, True])
def test_use_within_purchase_names_model_and_rate(with_history: bool) -> None:
    report = _two_model_report("owner", with_history)
    within = _lines(report, "c", WITHIN)
    assert within["gpu_model"].tolist() == ["A"]
    assert within["rate"].tolist() == [D("1.00")]
    assert _checkable(within, "info_value") == D("1.00")
    summary = report.summary.set_index("member")
    assert within["gpu_hours"].sum() == pytest.approx(
        summary.loc["c", "used_within_purchase_gpu_hours"]
    )


@pytest.mark.parametrize("with_history", [False, True])
def test_reclaim_lost_is_split_per_model_and_rate(with_history: bool) -> None:
    report = _two_model_report("owner", with_history)
    lost = _lines(report, "a", RECLAIM)
    total = _checkable(lost, "info_value")
    summary = report.summary.set_index("member")
    assert lost["gpu_hours"].sum() == pytest.approx(summary.loc["a", "reclaim_lost_gpu_hours"])
    if with_history:
        # 0.5 H-hour at 2.00, 0.25 H-hour at 4.00, 1/3 A-hour at 1.00.
        assert sorted(zip(lost["gpu_model"], lost["rate"], strict=True)) == [
            ("A", D("1.00")),
            ("H", D("2.00")),
            ("H", D("4.00")),
        ]
        assert total == D("2.33")
    else:
        assert set(lost["gpu_model"]) == {"H", "A"}
        assert total == D("1.83")  # 0.75 H-hour at 2.00 + 1/3 A-hour at 1.00
    b = _lines(report, "b", RECLAIM)
    assert b["gpu_model"].tolist() == ["A"] and _checkable(b, "info_value") == D("0.17")
