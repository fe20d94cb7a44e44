"""Property: for any usage, capacity, prices and billing rules, the bill balances to the
cent: Σ member totals = pool cost, the settlement nets to zero, every invoice's lines add
up to its total, and every amount is whole cents."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.model import Policy
from reports.costmodel import build_month_report, check_invariants
from reports.costmodel.money import CENT, largest_remainder, money_str, split
from tests.examples import examples

MEMBERS = ["a", "b", "c"]
MODELS = ["H", "A"]
HOURS = list(pd.date_range("2026-10-10T00:00Z", periods=4, freq="h"))

prices = st.decimals(min_value="0.01", max_value="9.999999", places=6)
amounts = st.decimals(min_value="0", max_value="100000", places=2)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    shared = []
    for i in range(draw(st.integers(0, 3))):
        split_rule = draw(st.sampled_from(["equal", "by-contribution", "by-usage", "fixed"]))
        cost: dict[str, object] = {
            "name": f"cost-{i}",
            "monthlyAmount": str(draw(amounts)),
            "split": split_rule,
        }
        if split_rule == "fixed":
            first = draw(st.decimals(min_value="0", max_value="1", places=3))
            second = draw(st.decimals(min_value="0", max_value=str(1 - first), places=3))
            cost["shares"] = {"a": str(first), "b": str(second), "c": str(1 - first - second)}
        shared.append(cost)
    purchased = {
        m: {g: draw(st.integers(0, 2)) for g in MODELS if draw(st.booleans())} for m in MEMBERS
    }
    return Policy.model_validate(
        {
            "apiVersion": "fairpool.io/v1",
            "kind": "Policy",
            "spec": {
                "gpuModels": [{"name": g, "hourlyCost": str(draw(prices))} for g in MODELS],
                "members": [
                    {"name": m, "namespaces": [m], "purchased": purchased[m]} for m in MEMBERS
                ],
                "billing": {
                    "timeZone": draw(st.sampled_from(["Europe/Paris", "UTC", "America/New_York"])),
                    "idleCost": draw(st.sampled_from(["owner", "by-contribution", "by-usage"])),
                    "sharedFixedCosts": shared,
                },
            },
        }
    )


usage_rows = st.lists(
    st.tuples(
        st.sampled_from(HOURS),
        st.sampled_from([*MEMBERS, None]),
        st.sampled_from(MEMBERS),
        st.sampled_from(MODELS),
        st.floats(min_value=0, max_value=28800, allow_nan=False),
        st.one_of(st.none(), st.floats(min_value=0, max_value=1)),
    ),
    min_size=1,
    max_size=25,
)
capacity_rows = st.lists(
    st.tuples(
        st.sampled_from(HOURS),
        st.sampled_from(MEMBERS),
        st.sampled_from(MODELS),
        st.floats(min_value=0, max_value=28800, allow_nan=False),
    ),
    max_size=15,
)


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=policies(), usage=usage_rows, capacity=capacity_rows)
def test_the_bill_balances_to_the_cent(
    policy: Policy,
    usage: list[tuple[pd.Timestamp, str | None, str, str, float, float | None]],
    capacity: list[tuple[pd.Timestamp, str, str, float]],
) -> None:
    usage_frame = pd.DataFrame(
        usage, columns=["hour", "member", "owner", "gpu_model", "gpu_seconds", "utilization"]
    )
    usage_frame["pod_uid"] = [f"p{i}" for i in range(len(usage_frame))]
    usage_frame["coverage"] = 1.0
    usage_frame["policy_version"] = 0
    capacity_frame = pd.DataFrame(
        capacity, columns=["hour", "owner", "gpu_model", "gpu_seconds_available"]
    )
    report = build_month_report("2026-10", policy, usage_frame, capacity_frame)
    check_invariants(report)
    totals = sum(report.summary["total"], Decimal(0))
    assert totals == report.pool_cost
    assert sum(report.summary["net_settlement"], Decimal(0)) == 0
    row_sums = sum(report.settlement.sum(axis=1), Decimal(0))
    column_sums = sum(report.settlement.sum(axis=0), Decimal(0))
    assert row_sums == column_sums
    for amount in report.invoices["amount"]:
        if amount is not None:
            assert isinstance(amount, Decimal)
            assert amount == amount.quantize(CENT)
    fixed = {c.name: c.monthly_amount for c in policy.billing.shared_fixed_costs}
    lines = report.invoices[report.invoices["section"] == "shared"]
    for name, amount in fixed.items():
        part = lines[lines["description"].str.contains(f"{name} ")]["amount"]
        assert sum(part, Decimal(0)) == amount.quantize(CENT)


@given(
    whole=st.decimals(min_value="-1000", max_value="1000", places=2),
    weights=st.lists(st.integers(1, 1000), min_size=1, max_size=6),
)
def test_split_conserves_the_whole(whole: Decimal, weights: list[int]) -> None:
    keys = [f"m{i}" for i in range(len(weights))]
    parts = split(whole, {k: Decimal(w) for k, w in zip(keys, weights, strict=True)}, keys)
    assert sum(parts.values(), Decimal(0)) == whole
    for k, w in zip(keys, weights, strict=True):
        exact = whole * Decimal(w) / Decimal(sum(weights))
        assert abs(parts[k] - exact) < CENT


def test_largest_remainder_ties_go_in_order() -> None:
    thirds = {k: Decimal(1) / Decimal(3) for k in "xyz"}
    assert largest_remainder(thirds, Decimal("1.00"), list("xyz")) == {
        "x": Decimal("0.34"),
        "y": Decimal("0.33"),
        "z": Decimal("0.33"),
    }


def test_zero_money_is_never_negative() -> None:
    """A price of "-0" (the policy takes it) or a debt of -0.004 printed "-0.00"."""
    for amount in ("-0", "-0.004", "-0.005", "0.004"):
        assert money_str(Decimal(amount)) == "0.00", amount
    assert money_str(Decimal("-0.006")) == "-0.01"
