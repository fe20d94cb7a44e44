"""The month's bill as tables (`MonthReport`), and the checks that it balances."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import pandas as pd

from reports.costmodel.money import ZERO

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
    """One row per member: GPU-hours, money lines, total, net settlement, lent and purchase
    net, pooling dividend (from a simulation)."""
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
    lent_flows: pd.DataFrame
    """member (index) x owner (columns), GPU-hours the member used on the owner's nodes:
    what the owner lent it."""
    utilization_daily: pd.DataFrame
    coverage_daily: pd.DataFrame
    flags: list[str]
    pool_cost: Decimal
    capacity_cost: Decimal
    shared_fixed_cost: Decimal
    complete: bool
    idle_cost_rule: str = "owner"
    rounding_rule: str = ROUNDING_RULE
    period_note: str = ""
    """What the period covers when it is not the whole month (a simulated window)."""
    price_basis: str = ""
    """Where the prices came from: the ledger's policy history, or the policy file alone."""
    unattributed: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Pod-hours with no GPU model (hour, namespace, pod, node, member, owner,
    gpu_seconds): not priced, billed to no one, listed so that nothing disappears."""

    def invoice(self, member: str) -> pd.DataFrame:
        return self.invoices[self.invoices["member"] == member].reset_index(drop=True)

    def total(self, member: str) -> Decimal:
        row = self.summary.loc[self.summary["member"] == member, "total"]
        if row.empty:
            raise KeyError(member)
        return Decimal(row.iloc[0])


def check_invariants(report: MonthReport) -> None:
    """Raise AssertionError unless the bill balances to the cent (used by tests and the CLI)."""
    totals = sum(report.summary["total"], ZERO)
    assert totals == report.pool_cost, f"Σ member totals {totals} != pool cost {report.pool_cost}"
    # The settlement matrix (who pays whom) and the members' own money must agree:
    # what a member receives less what it pays is its net in the summary.
    matrix = report.settlement
    net = dict(zip(report.summary["member"], report.summary["net_settlement"], strict=True))
    for member in matrix.index:
        paid = sum(matrix.loc[member], ZERO)
        received = sum(matrix[member], ZERO) if member in matrix.columns else ZERO
        assert received - paid == net.get(member, ZERO), (
            f"{member}: settlement {received - paid} != net {net.get(member)}"
        )
    nets = sum(report.summary["net_settlement"], ZERO)
    assert nets == 0, f"Σ net settlement {nets} != 0"
    for member in report.members:
        lines = report.invoice(member)
        billed = sum((a for a in lines["amount"] if a is not None), ZERO) if len(lines) else ZERO
        assert billed == report.total(member), f"{member}: lines {billed} != total"
