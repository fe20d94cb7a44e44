"""The settlement checked against figures worked out by hand, one small consortium case
at a time: an owner that used nothing, a member that owns nothing, prices and owners
that change mid-month, a pod across the month's boundary, each idle cost rule, GPU
models of different prices, pods of no member and nodes of no owner. Every expected
amount below is computed in the comment above it, not by the cost model."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
import pytest

from policies.loader import parse_policy
from policies.model import Policy
from reports.costmodel import MonthReport, build_month_report, check_invariants
from reports.costmodel.frames import UNATTRIBUTED
from reports.costmodel.policy_history import PolicyHistory

D = Decimal
H0 = pd.Timestamp("2026-10-10T00:00Z")
H1 = pd.Timestamp("2026-10-10T01:00Z")
# October 2026 in UTC: 744 hours. A version applied at 2026-10-10 01:00 UTC governs
# 9 x 24 + 1 = 217 hours before it and 744 - 217 = 527 from it on.
SWITCH = datetime(2026, 10, 10, 1, tzinfo=UTC)


def policy(
    *,
    idle: str = "owner",
    h_price: str = "2.00",
    version: int = 0,
    members: str = "",
    time_zone: str = "UTC",
    shared: str = "[]",
) -> Policy:
    members = members or (
        "- {name: a, namespaces: [a]}\n    - {name: b, namespaces: [b]}\n"
        "    - {name: c, namespaces: [c]}"
    )
    return parse_policy(
        f"""
apiVersion: fairpool.io/v1
kind: Policy
metadata: {{name: by-hand, version: {version}}}
spec:
  gpuModels:
    - {{name: H, hourlyCost: "{h_price}"}}
    - {{name: A, hourlyCost: "1.00"}}
  members:
    {members}
  billing:
    timeZone: {time_zone}
    idleCost: {idle}
    sharedFixedCosts: {shared}
"""
    )


Row = tuple[pd.Timestamp, str | None, str | None, str, float]
CapacityRow = tuple[pd.Timestamp, str | None, str, float]


def usage(rows: Sequence[Row]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["hour", "member", "owner", "gpu_model", "gpu_seconds"])
    frame["pod_uid"] = [f"pod-{i}" for i in range(len(frame))]
    return frame


def capacity(rows: Sequence[CapacityRow]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["hour", "owner", "gpu_model", "gpu_seconds_available"])


def bill(
    p: Policy, u: Sequence[Row], c: Sequence[CapacityRow], history: PolicyHistory | None = None
) -> MonthReport:
    report = build_month_report("2026-10", p, usage(u), capacity(c), history=history)
    check_invariants(report)
    return report


def col(report: MonthReport, name: str) -> dict[str, Decimal]:
    return {r["member"]: r[name] for r in report.summary.to_dict("records")}


def cell(report: MonthReport, payer: str, payee: str) -> Decimal:
    return report.settlement.loc[payer, payee]


# a owns one H GPU (2 GPU-hours over H0, H1: 4.00), c one A GPU (2 GPU-hours: 2.00) and
# uses nothing; b owns nothing and uses half an H GPU-hour on a's node (1.00); a uses its
# own GPU in H1. Pool cost 6.00. Idle: a 0.5 H GPU-hour (1.00), c 2 A GPU-hours (2.00).
IDLE_USAGE: list[Row] = [(H0, "b", "a", "H", 1800.0), (H1, "a", "a", "H", 3600.0)]
IDLE_CAPACITY = [(h, o, g, 3600.0) for h in (H0, H1) for o, g in (("a", "H"), ("c", "A"))]


@pytest.mark.parametrize(
    ("idle", "totals", "idle_adjustment"),
    [
        # owner: each bears its idle. a 4 - 1 (lent) = 3.00, b 1.00, c 2.00.
        ("owner", {"a": "3.00", "b": "1.00", "c": "2.00"}, {"a": "0", "b": "0", "c": "0"}),
        # by-contribution: 3.00 returned (a 1.00, c 2.00), split 2:0:2 contributed
        # GPU-hours: 1.50 each. a 3 - 1 + 1.5 = 3.50, c 2 - 2 + 1.5 = 1.50.
        (
            "by-contribution",
            {"a": "3.50", "b": "1.00", "c": "1.50"},
            {"a": "0.50", "b": "0", "c": "-0.50"},
        ),
        # by-usage: 3.00 split 1 : 0.5 : 0 GPU-hours used: a 2.00, b 1.00, c nothing.
        # a 3 - 1 + 2 = 4.00, b 1 + 1 = 2.00, c 2 - 2 = 0.00.
        (
            "by-usage",
            {"a": "4.00", "b": "2.00", "c": "0.00"},
            {"a": "1.00", "b": "1.00", "c": "-2.00"},
        ),
    ],
)
def test_an_owner_that_used_nothing_and_a_member_that_owns_nothing_under_each_idle_rule(
    idle: str, totals: dict[str, str], idle_adjustment: dict[str, str]
) -> None:
    report = bill(policy(idle=idle), IDLE_USAGE, IDLE_CAPACITY)
    assert report.pool_cost == D("6.00")
    assert col(report, "total") == {m: D(v) for m, v in totals.items()}
    assert col(report, "idle_adjustment") == {m: D(v) for m, v in idle_adjustment.items()}
    # Whatever the idle rule, the settlement is b paying a for half an H GPU-hour.
    assert cell(report, "b", "a") == D("1.00")
    assert sum(report.settlement.sum(axis=1), D(0)) == D("1.00")
    assert col(report, "net_settlement") == {"a": D("1.00"), "b": D("-1.00"), "c": D("0.00")}
    assert col(report, "used_gpu_hours")["c"] == 0.0


def test_gpu_models_of_different_prices_are_each_charged_at_their_own() -> None:
    # b uses a's H GPU 1.5 h (3.00) and c's A GPU 2.5 h (2.50) over two hours; c uses
    # a's H GPU 0.25 h (0.50). Capacity: a 2 H GPU-hours (4.00), c 3 A GPU-hours (3.00).
    u: list[Row] = [
        (H0, "b", "a", "H", 3600.0),
        (H1, "b", "a", "H", 1800.0),
        (H0, "b", "c", "A", 5400.0),
        (H1, "b", "c", "A", 3600.0),
        (H1, "c", "a", "H", 900.0),
    ]
    c = [(h, "a", "H", 3600.0) for h in (H0, H1)] + [(H0, "c", "A", 5400.0), (H1, "c", "A", 5400.0)]
    report = bill(policy(), u, c)
    assert cell(report, "b", "a") == D("3.00")
    assert cell(report, "b", "c") == D("2.50")
    assert cell(report, "c", "a") == D("0.50")
    assert col(report, "net_settlement") == {"a": D("3.50"), "b": D("-5.50"), "c": D("2.00")}
    # a 4.00 - 3.50 = 0.50; b 5.50; c 3.00 + 0.50 - 2.50 = 1.00.
    assert col(report, "total") == {"a": D("0.50"), "b": D("5.50"), "c": D("1.00")}
    lines = report.invoice("b").set_index(["section", "gpu_model"])
    assert lines.loc[("others-hardware", "H"), "rate"] == D("2.00")
    assert lines.loc[("others-hardware", "A"), "rate"] == D("1.00")


def test_a_price_change_mid_month_prices_each_hour_at_its_version() -> None:
    # H costs 2.00 in version 1 and 3.00 in version 2, applied at H1. b uses a's H GPU
    # all of H0 (2.00) and H1 (3.00): it pays a 5.00, in two lines at the two rates.
    # a's capacity, one H GPU in both hours: 2.00 + 3.00 = 5.00, all lent.
    v1, v2 = policy(version=1), policy(version=2, h_price="3.00")
    history = PolicyHistory((datetime(2026, 9, 1, tzinfo=UTC), SWITCH), (v1, v2), True)
    u: list[Row] = [(H0, "b", "a", "H", 3600.0), (H1, "b", "a", "H", 3600.0)]
    report = bill(v2, u, [(h, "a", "H", 3600.0) for h in (H0, H1)], history=history)
    assert cell(report, "b", "a") == D("5.00")
    assert col(report, "capacity_cost")["a"] == D("5.00")
    assert col(report, "total") == {"a": D("0.00"), "b": D("5.00"), "c": D("0")}
    lines = report.invoice("b")
    charged = lines[lines["section"] == "others-hardware"]
    assert sorted(zip(charged["rate"], charged["amount"], strict=True)) == [
        (D("2.00"), D("2.00")),
        (D("3.00"), D("3.00")),
    ]


def test_a_purchase_across_a_price_change_is_paid_at_each_versions_price() -> None:
    # c holds 1 purchased H GPU all month; H costs 2.00 for the 217 hours of version 1
    # and 3.00 for the 527 of version 2: 434.00 + 1581.00 = 2015.00, paid to a, the only
    # other owner of H. c uses a's H GPU all of H0 and H1: covered by the purchase.
    members = (
        "- {name: a, namespaces: [a]}\n    - {name: b, namespaces: [b]}\n"
        "    - {name: c, namespaces: [c], purchased: {H: 1}}"
    )
    v1 = policy(version=1, members=members)
    v2 = policy(version=2, members=members, h_price="3.00")
    history = PolicyHistory((datetime(2026, 9, 1, tzinfo=UTC), SWITCH), (v1, v2), True)
    u: list[Row] = [(H0, "c", "a", "H", 3600.0), (H1, "c", "a", "H", 3600.0)]
    report = bill(v2, u, [(h, "a", "H", 3600.0) for h in (H0, H1)], history=history)
    assert cell(report, "c", "a") == D("2015.00")
    assert col(report, "charges")["c"] == D("0")
    assert col(report, "purchase_received")["a"] == D("2015.00")


def test_a_node_that_changes_owner_mid_month_pays_each_owner_its_hours() -> None:
    # A 2-GPU H node is a's in H0 and b's from H1. a uses one GPU in both hours, c one.
    # H0: c pays a 2.00 (a's own use is in its capacity). H1: a and c each pay b 2.00.
    # Capacity: a 2 GPU-hours (4.00), b 2 GPU-hours (4.00).
    u: list[Row] = [
        (H0, "a", "a", "H", 3600.0),
        (H0, "c", "a", "H", 3600.0),
        (H1, "a", "b", "H", 3600.0),
        (H1, "c", "b", "H", 3600.0),
    ]
    report = bill(policy(), u, [(H0, "a", "H", 7200.0), (H1, "b", "H", 7200.0)])
    assert cell(report, "c", "a") == D("2.00")
    assert cell(report, "a", "b") == D("2.00")
    assert cell(report, "c", "b") == D("2.00")
    assert col(report, "total") == {"a": D("4.00"), "b": D("0.00"), "c": D("4.00")}
    assert col(report, "net_settlement") == {"a": D("0.00"), "b": D("4.00"), "c": D("-4.00")}


def test_a_node_that_changes_owner_within_an_hour() -> None:
    # The 2-GPU H node moves from a to b at 00:30: each owner has half of H0, 1 GPU-hour
    # (2.00). c runs on both GPUs all hour, 1 GPU-hour on each owner's half: 2.00 each.
    u: list[Row] = [(H0, "c", "a", "H", 3600.0), (H0, "c", "b", "H", 3600.0)]
    report = bill(policy(), u, [(H0, "a", "H", 3600.0), (H0, "b", "H", 3600.0)])
    assert cell(report, "c", "a") == D("2.00")
    assert cell(report, "c", "b") == D("2.00")
    assert col(report, "total") == {"a": D("0.00"), "b": D("0.00"), "c": D("4.00")}


@pytest.mark.parametrize(
    ("time_zone", "first", "last"),
    [
        # October in UTC: 2026-10-01 00:00Z to 2026-11-01 00:00Z.
        ("UTC", "2026-10-01T00:00Z", "2026-10-31T23:00Z"),
        # October in Paris: 2026-09-30 22:00Z (CEST) to 2026-10-31 23:00Z (CET).
        ("Europe/Paris", "2026-09-30T22:00Z", "2026-10-31T22:00Z"),
    ],
)
def test_a_pod_across_the_months_boundaries_is_billed_this_months_hours_only(
    time_zone: str, first: str, last: str
) -> None:
    # b runs one H GPU on a's node from the hour before the month to the hour after it;
    # only its two hours inside the month are billed: 2 x 2.00.
    start, end = pd.Timestamp(first), pd.Timestamp(last)
    hours = [start - pd.Timedelta(hours=1), start, end, end + pd.Timedelta(hours=1)]
    u: list[Row] = [(h, "b", "a", "H", 3600.0) for h in hours]
    report = bill(policy(time_zone=time_zone), u, [(h, "a", "H", 3600.0) for h in hours])
    assert cell(report, "b", "a") == D("4.00")
    assert col(report, "used_gpu_hours")["b"] == 2.0
    assert col(report, "capacity_cost")["a"] == D("4.00")


def test_pods_of_no_member_and_nodes_of_no_owner() -> None:
    # A pod of no member runs 1 GPU-hour on a's H node: `unattributed` pays a 2.00.
    # b runs 1 GPU-hour on a node of no owner (A, 2 GPU-hours of capacity, 2.00): b
    # pays `unattributed` 1.00, whose capacity cost is the node's.
    u: list[Row] = [(H0, None, "a", "H", 3600.0), (H0, "b", None, "A", 3600.0)]
    c = [(H0, "a", "H", 3600.0), (H0, None, "A", 7200.0)]
    report = bill(policy(), u, c)
    assert report.members[-1] == UNATTRIBUTED
    assert cell(report, UNATTRIBUTED, "a") == D("2.00")
    assert cell(report, "b", UNATTRIBUTED) == D("1.00")
    assert report.pool_cost == D("4.00")
    assert col(report, "total") == {
        "a": D("0.00"),
        "b": D("1.00"),
        "c": D("0"),
        UNATTRIBUTED: D("3.00"),
    }


def test_a_node_whose_owner_label_names_no_member_is_billed_as_a_node_of_no_owner() -> None:
    # The engine gives a node labelled `lab-bioo` (a typo) to nobody's entitlement; the
    # bill agrees. b runs 1 GPU-hour on it (A, 2 GPU-hours of capacity, 2.00): b pays
    # `unattributed` 1.00, whose capacity cost is the node's, as for a node of no owner.
    # a's H node: 1 GPU-hour, idle, 2.00. Before, `lab-bioo` was a member of the report.
    u = usage([(H0, "b", "lab-bioo", "A", 3600.0)]).assign(node="gpu-7")
    c = capacity([(H0, "a", "H", 3600.0), (H0, "lab-bioo", "A", 7200.0)])
    c["node"] = ["a-1", "gpu-7"]
    report = build_month_report("2026-10", policy(), u, c)
    check_invariants(report)
    assert report.members == ["a", "b", "c", UNATTRIBUTED]
    assert cell(report, "b", UNATTRIBUTED) == D("1.00")
    assert col(report, "capacity_cost")[UNATTRIBUTED] == D("2.00")
    assert col(report, "total") == {
        "a": D("2.00"),
        "b": D("1.00"),
        "c": D("0"),
        UNATTRIBUTED: D("1.00"),
    }
    assert [f for f in report.flags if "lab-bioo" in f] == [
        "owner label 'lab-bioo' names no member of the policy in force in 1 hour(s) "
        "(2026-10-10 00:00Z), on node(s) gpu-7: unowned there, its 2.0 GPU-hours of "
        "capacity and 1.0 GPU-hours used on it are billed as 'unattributed' (correct the "
        "nodes' fairpool.io/owner label if it is a typo)"
    ]


def test_the_nodes_of_a_member_removed_mid_month_are_unowned_from_then_on() -> None:
    # d owns a 1-GPU H node and is removed with version 2, applied at H1. b uses the
    # node all of H0 and H1 (2.00 an hour). H0: d is a member, b pays d 2.00 and d's
    # capacity is 2.00. H1: the node is unowned, b pays `unattributed` 2.00.
    three = (
        "- {name: a, namespaces: [a]}\n    - {name: b, namespaces: [b]}\n"
        "    - {name: c, namespaces: [c]}"
    )
    v1 = policy(version=1, members=three + "\n    - {name: d, namespaces: [d]}")
    v2 = policy(version=2, members=three)
    history = PolicyHistory((datetime(2026, 9, 1, tzinfo=UTC), SWITCH), (v1, v2), True)
    u: list[Row] = [(H0, "b", "d", "H", 3600.0), (H1, "b", "d", "H", 3600.0)]
    report = bill(v2, u, [(h, "d", "H", 3600.0) for h in (H0, H1)], history=history)
    assert report.members == ["a", "b", "c", "d", UNATTRIBUTED]
    assert cell(report, "b", "d") == D("2.00")
    assert cell(report, "b", UNATTRIBUTED) == D("2.00")
    assert col(report, "capacity_cost")["d"] == D("2.00")
    assert col(report, "capacity_cost")[UNATTRIBUTED] == D("2.00")
    flags = [f for f in report.flags if f.startswith("owner label")]
    assert len(flags) == 1 and "'d'" in flags[0] and "1 hour(s) (2026-10-10 01:00Z)" in flags[0]


def test_a_member_that_left_mid_month_pays_its_purchase_for_the_hours_it_held_it() -> None:
    # d held 1 purchased H GPU under version 1 (217 hours at 2.00: 434.00) and left the
    # pool with version 2. a, the only other owner of H, hosted it: d owes a 434.00.
    three = (
        "- {name: a, namespaces: [a]}\n    - {name: b, namespaces: [b]}\n"
        "    - {name: c, namespaces: [c]}"
    )
    v1 = policy(version=1, members=three + "\n    - {name: d, namespaces: [d], purchased: {H: 1}}")
    v2 = policy(version=2, members=three)
    history = PolicyHistory((datetime(2026, 9, 1, tzinfo=UTC), SWITCH), (v1, v2), True)
    u: list[Row] = [(H1, "a", "a", "H", 3600.0)]
    report = bill(v2, u, [(h, "a", "H", 3600.0) for h in (H0, H1)], history=history)
    assert "d" in report.members
    assert cell(report, "d", "a") == D("434.00")
    assert col(report, "purchase_received")["a"] == D("434.00")
    # a's capacity, 2 H GPU-hours (4.00), less the 434.00 it hosted; d pays 434.00.
    assert col(report, "total") == {"a": D("-430.00"), "b": D("0"), "c": D("0"), "d": D("434.00")}
    lines = report.invoice("d")
    assert list(lines["description"]) == ["Purchased GPUs, hosted by a"]
    assert list(lines["gpu_hours"]) == [217.0]
