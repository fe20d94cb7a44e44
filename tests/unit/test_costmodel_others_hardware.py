"""Use of others' hardware on the invoice: charged per owner and GPU model, whatever the
user's entitlement, and credited to the owner as lent (the glossary's example)."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd

from policies.loader import parse_policy
from policies.model import Policy
from reports.costmodel import MonthReport, build_month_report, check_invariants

D = Decimal
T0 = pd.Timestamp("2026-10-10T00:00Z")
HOURS = [T0 + pd.Timedelta(hours=h) for h in range(10)]


def policy() -> Policy:
    return parse_policy(
        """
apiVersion: fairpool.io/v1
kind: Policy
metadata: {name: swap, version: 0}
spec:
  gpuModels:
    - {name: H, hourlyCost: "2.50"}
    - {name: A, hourlyCost: "1.10"}
  members:
    - {name: lab-a, namespaces: [lab-a]}
    - {name: lab-b, namespaces: [lab-b]}
  billing:
    timeZone: UTC
    sharedFixedCosts: []
"""
    )


def usage(rows: list[tuple[pd.Timestamp, str, str, str, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["hour", "member", "owner", "gpu_model", "gpu_seconds"])
    frame["pod_uid"] = [f"pod-{i}" for i in range(len(frame))]
    return frame


def capacity(models: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame(
        [(h, o, g, 8 * 3600.0) for h in HOURS for o in ("lab-a", "lab-b") for g in models],
        columns=["hour", "owner", "gpu_model", "gpu_seconds_available"],
    )


Rows = list[tuple[pd.Timestamp, str, str, str, float]]


def report(rows: Rows, models: tuple[str, ...]) -> MonthReport:
    built = build_month_report("2026-10", policy(), usage(rows), capacity(models))
    check_invariants(built)
    return built


def test_swapping_nodes_within_entitlement_is_charged_and_nets_to_zero() -> None:
    # lab-a and lab-b each own an 8-GPU node and are each entitled to 8; for 10 hours
    # each runs an 8-GPU job on the other's node. Neither borrowed anything.
    swap = [(h, "lab-a", "lab-b", "H", 8 * 3600.0) for h in HOURS] + [
        (h, "lab-b", "lab-a", "H", 8 * 3600.0) for h in HOURS
    ]
    bill = report(swap, ("H",))
    for member, other in (("lab-a", "lab-b"), ("lab-b", "lab-a")):
        lines = bill.invoice(member).set_index("section")
        used = lines.loc["others-hardware"]
        assert (used["counterparty"], used["gpu_model"]) == (other, "H")
        assert (used["gpu_hours"], used["rate"], used["amount"]) == (80.0, D("2.50"), D("200.00"))
        assert "charged whether or not within entitlement" in used["description"]
        assert "offset by what you lent" in used["description"]
        lent = lines.loc["lent"]
        assert (lent["counterparty"], lent["gpu_model"]) == (other, "H")
        assert (lent["gpu_hours"], lent["rate"], lent["amount"]) == (80.0, D("2.50"), D("-200.00"))
    summary = bill.summary.set_index("member")
    assert list(summary["net_settlement"]) == [D(0), D(0)]
    assert list(summary["total"]) == list(summary["capacity_cost"])
    assert list(summary["used_on_others_charged_gpu_hours"]) == [80.0, 80.0]
    assert list(summary["lent_credited_gpu_hours"]) == [80.0, 80.0]


def test_one_line_per_gpu_model_adding_up_to_the_settlement_cell() -> None:
    # lab-a uses lab-b's nodes for 1807.2 H-GPU-seconds (1.255 at 2.50) and 18 A-GPU-seconds
    # (0.0055 at 1.10): the cell is 1.2605 -> 1.26, but each part rounded alone would
    # make 1.26 + 0.01 = 1.27. The cell is split by largest remainder instead.
    rows = [(T0, "lab-a", "lab-b", "H", 1807.2), (T0, "lab-a", "lab-b", "A", 18.0)]
    bill = report(rows, ("H", "A"))
    used = bill.invoice("lab-a")
    used = used[used["section"] == "others-hardware"]
    assert list(used["gpu_model"]) == ["A", "H"]
    assert list(used["rate"]) == [D("1.10"), D("2.50")]
    assert list(used["amount"]) == [D("0.01"), D("1.25")]
    assert sum(used["amount"]) == bill.settlement.loc["lab-a", "lab-b"] == D("1.26")
    assert list(used["gpu_hours"]) == [18.0 / 3600, 1807.2 / 3600]
    lent = bill.invoice("lab-b")
    lent = lent[lent["section"] == "lent"]
    assert list(lent["amount"]) == [D("-0.01"), D("-1.25")]
