"""The cost model on hand-computed scenarios, to the cent.

Scenario (two hours on 2026-10-10, prices H 2.00 and A 1.00 per GPU-hour):
- capacity: a owns 2 H GPUs, b owns 2 A GPUs, c owns nothing: 4 H-hours (8.00) and
  4 A-hours (4.00), pool capacity cost 12.00;
- hour 0: a uses 1 H on a, b uses 1 H on a's nodes, c uses 1 A on b's (1 A idle on b);
- hour 1: a uses 2 H on a, b uses 2 A on b.
So b owes a 2.00, c owes b 1.00, b's nodes were idle 1 A-hour (1.00).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from policies.errors import InputError
from policies.loader import parse_policy
from policies.model import Policy
from reports.costmodel import (
    MonthReport,
    NoDataError,
    PriceBook,
    build_month_report,
    check_invariants,
)
from reports.costmodel.frames import LOST_CAUSES, UNATTRIBUTED, FrameError
from reports.costmodel.policy_history import PolicyHistory
from reports.rendering.render import write_report
from scheduler.engine.decisions import PREEMPTION_CAUSES

D = Decimal
H0 = pd.Timestamp("2026-10-10T00:00Z")
H1 = pd.Timestamp("2026-10-10T01:00Z")


def make_policy(*args: Any, **kwargs: Any) -> Policy:
    """The test pool's policy (`make_policy_text`'s arguments)."""
    return parse_policy(make_policy_text(*args, **kwargs))


def make_policy_text(
    idle: str = "owner",
    shared: str = '[{name: ops, monthlyAmount: "100.00", split: equal}]',
    extra_member: str = "",
    c_purchased: str = "{}",
    a_purchased: str = "{}",
    version: int = 0,
) -> str:
    return f"""
apiVersion: fairpool.io/v1
kind: Policy
metadata: {{name: test-pool, version: {version}}}
spec:
  gpuModels:
    - {{name: H, hourlyCost: "2.00"}}
    - {{name: A, hourlyCost: "1.00"}}
  members:
    - {{name: a, namespaces: [a], purchased: {a_purchased}}}
    - {{name: b, namespaces: [b]}}
    - {{name: c, namespaces: [c], purchased: {c_purchased}}}
    {extra_member}
  billing:
    timeZone: Europe/Paris
    idleCost: {idle}
    sharedFixedCosts: {shared}
"""


def usage_frame(rows: list[tuple[pd.Timestamp, str, str, str, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["hour", "member", "owner", "gpu_model", "gpu_seconds"])
    frame["pod_uid"] = [f"pod-{i}" for i in range(len(frame))]
    frame["namespace"] = frame["member"]
    frame["job_id"] = frame["pod_uid"]
    frame["node"] = frame["owner"] + "-node"
    frame["utilization"] = 0.5
    frame["coverage"] = 1.0
    frame["policy_version"] = 0
    return frame


USAGE = usage_frame(
    [
        (H0, "a", "a", "H", 3600.0),
        (H0, "b", "a", "H", 3600.0),
        (H0, "c", "b", "A", 3600.0),
        (H1, "a", "a", "H", 7200.0),
        (H1, "b", "b", "A", 7200.0),
    ]
)
CAPACITY = pd.DataFrame(
    [(h, o, g, 7200.0) for h in (H0, H1) for o, g in (("a", "H"), ("b", "A"))],
    columns=["hour", "owner", "gpu_model", "gpu_seconds_available"],
)


def build(policy: Policy, **kwargs: object) -> MonthReport:
    report = build_month_report(
        "2026-10",
        policy,
        kwargs.pop("usage", USAGE),  # type: ignore[arg-type]
        kwargs.pop("capacity", CAPACITY),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )
    check_invariants(report)
    return report


def totals(report: MonthReport) -> dict[str, Decimal]:
    return {row["member"]: row["total"] for row in report.summary.to_dict("records")}


def column(report: MonthReport, name: str) -> dict[str, Decimal]:
    return {row["member"]: row[name] for row in report.summary.to_dict("records")}


@pytest.mark.parametrize(
    ("idle", "expected_idle", "expected_totals"),
    [
        # owner: b bears its own idle A-hour; totals 8-2 / 4+2-1 / 1 plus 100/3 each.
        ("owner", {"a": D("0"), "b": D("0"), "c": D("0")}, ["39.34", "38.33", "34.33"]),
        # by-contribution: 1.00 idle pooled, split 4:4:0 GPU-hours contributed.
        (
            "by-contribution",
            {"a": D("0.50"), "b": D("-0.50"), "c": D("0")},
            ["39.84", "37.83", "34.33"],
        ),
        # by-usage: split 3:3:1 GPU-hours used -> 0.43, 0.43, 0.14 (largest remainder).
        (
            "by-usage",
            {"a": D("0.43"), "b": D("-0.57"), "c": D("0.14")},
            ["39.77", "37.76", "34.47"],
        ),
    ],
)
def test_idle_cost_rules_to_the_cent(
    idle: str, expected_idle: dict[str, Decimal], expected_totals: list[str]
) -> None:
    report = build(make_policy(idle=idle))
    assert column(report, "idle_adjustment") == expected_idle
    assert totals(report) == dict(zip("abc", map(D, expected_totals), strict=True))
    assert report.capacity_cost == D("12.00")
    assert report.pool_cost == D("112.00")
    assert sum(totals(report).values()) == report.pool_cost


def test_use_of_others_hardware_charged_and_lent_credited() -> None:
    report = build(make_policy())
    assert column(report, "charges") == {"a": D("0"), "b": D("2.00"), "c": D("1.00")}
    assert column(report, "credits") == {"a": D("2.00"), "b": D("1.00"), "c": D("0")}
    assert column(report, "net_settlement") == {"a": D("2.00"), "b": D("-1.00"), "c": D("-1.00")}
    assert column(report, "capacity_cost") == {"a": D("8.00"), "b": D("4.00"), "c": D("0")}
    assert report.settlement.loc["b", "a"] == D("2.00")
    assert report.settlement.loc["c", "b"] == D("1.00")
    assert report.settlement.loc["a", "b"] == D("0")
    assert report.net_settlement.to_dict("records") == [
        {"payer": "b", "payee": "a", "amount": D("2.00")},
        {"payer": "c", "payee": "b", "amount": D("1.00")},
    ]
    hours = column(report, "used_on_others_charged_gpu_hours")
    assert hours == {"a": 0.0, "b": 1.0, "c": 1.0}
    assert column(report, "lent_gpu_hours") == {"a": 1.0, "b": 1.0, "c": 0.0}
    assert column(report, "used_gpu_hours") == {"a": 3.0, "b": 3.0, "c": 1.0}
    assert report.lent_flows.loc["b", "a"] == 1.0
    assert report.lent_flows.loc["c", "b"] == 1.0


def test_pairwise_net_settlement() -> None:
    # a also uses 1 A-hour on b's nodes: b owes a 2.00, a owes b 1.00 -> b pays a 1.00 net.
    usage = pd.concat([USAGE, usage_frame([(H1, "a", "b", "A", 0.0), (H0, "a", "b", "A", 3600.0)])])
    capacity = CAPACITY.copy()
    capacity.loc[capacity["owner"] == "b", "gpu_seconds_available"] = 10800.0
    report = build(make_policy(), usage=usage, capacity=capacity)
    assert report.settlement.loc["b", "a"] == D("2.00")
    assert report.settlement.loc["a", "b"] == D("1.00")
    net = report.net_settlement.to_dict("records")
    assert {"payer": "b", "payee": "a", "amount": D("1.00")} in net
    assert not any(r["payer"] == "a" and r["payee"] == "b" for r in net)


@pytest.mark.parametrize(
    ("shared", "expected"),
    [
        ('[{name: ops, monthlyAmount: "100.00", split: equal}]', ["33.34", "33.33", "33.33"]),
        ('[{name: ops, monthlyAmount: "10.00", split: equal}]', ["3.34", "3.33", "3.33"]),
        # contributed GPU-hours 4 : 4 : 0
        (
            '[{name: ops, monthlyAmount: "100.00", split: by-contribution}]',
            ["50.00", "50.00", None],
        ),
        # used GPU-hours 3 : 3 : 1 -> 42.857.., 42.857.., 14.285.. -> +1 cent to a and b
        ('[{name: ops, monthlyAmount: "100.00", split: by-usage}]', ["42.86", "42.86", "14.28"]),
        (
            '[{name: ops, monthlyAmount: "100.00", split: fixed, '
            'shares: {a: "0.5", b: "0.3", c: "0.2"}}]',
            ["50.00", "30.00", "20.00"],
        ),
        (
            '[{name: ops, monthlyAmount: "0.05", split: fixed, '
            'shares: {a: "0.5", b: "0.25", c: "0.25"}}]',
            ["0.03", "0.01", "0.01"],
        ),
    ],
)
def test_shared_fixed_cost_split_rules(shared: str, expected: list[str | None]) -> None:
    report = build(make_policy(shared=shared))
    lines = report.invoices[report.invoices["section"] == "shared"]
    got = {row["member"]: row["amount"] for row in lines.to_dict("records")}
    want = {m: D(v) for m, v in zip("abc", expected, strict=True) if v is not None}
    assert got == want
    assert sum(got.values()) == sum(want.values())
    assert column(report, "shared_fixed") == {m: want.get(m, D(0)) for m in "abc"}


def test_invoice_lines_add_up_to_each_total() -> None:
    report = build(make_policy(idle="by-usage"))
    for member in "abc":
        lines = report.invoice(member)
        billed = sum(a for a in lines["amount"] if a is not None)
        assert billed == report.total(member)
    b = report.invoice("b")
    descriptions = list(b["description"])
    assert "Contributed capacity, A" in descriptions
    assert (
        "Used on others' hardware: a's nodes (charged whether or not within entitlement; "
        "offset by what you lent)"
    ) in descriptions
    assert (
        "Lent to c: its use of your nodes (credited; offsets your use of others' hardware)"
    ) in descriptions


def test_purchased_gpus_paid_to_the_hosting_owner() -> None:
    # c holds 1 purchased A GPU: pays 745 h x 1.00 to b (the only other A owner); its
    # A-hour on b's nodes is within the purchase, so not charged as use of b's hardware.
    report = build(make_policy(c_purchased="{A: 1}"))
    assert report.settlement.loc["c", "b"] == D("745.00")
    assert column(report, "purchase_paid")["c"] == D("745.00")
    assert column(report, "purchase_received")["b"] == D("745.00")
    assert column(report, "charges") == {"a": D("0"), "b": D("2.00"), "c": D("0")}
    assert column(report, "used_on_others_charged_gpu_hours")["c"] == 0.0
    assert column(report, "used_within_purchase_gpu_hours")["c"] == 1.0
    assert totals(report) == {"a": D("39.34"), "b": D("-705.67"), "c": D("778.33")}
    assert column(report, "entitlement_gpu_hours")["c"] == 745.0
    # lent and purchase net: value of the purchased hour used (1.00) minus the purchase
    assert column(report, "lent_and_purchase_net_money")["c"] == D("-744.00")


def test_a_purchase_cent_tie_goes_in_policy_order() -> None:
    # Two hosts of equal contribution share 745 h x 1.00001 = 745.01: 372.505 each, one
    # cent over the floors. By name alpha took it; the rule says policy order: zeta.
    policy = parse_policy(
        make_policy_text(shared="[]", c_purchased="{H: 1}")
        .replace('hourlyCost: "2.00"', 'hourlyCost: "1.00001"')
        .replace("name: a, namespaces: [a]", "name: zeta, namespaces: [zeta]")
        .replace("name: b, namespaces: [b]", "name: alpha, namespaces: [alpha]")
    )
    assert policy.member_names() == ["zeta", "alpha", "c"]
    capacity = pd.DataFrame(
        [(H0, owner, "H", 3600.0) for owner in ("zeta", "alpha")],
        columns=["hour", "owner", "gpu_model", "gpu_seconds_available"],
    )
    report = build(policy, usage=usage_frame([]), capacity=capacity)
    assert column(report, "purchase_received")["zeta"] == D("372.51")
    assert column(report, "purchase_received")["alpha"] == D("372.50")
    assert report.settlement.loc["c", "zeta"] == D("372.51")


def test_a_purchase_applied_mid_month_is_paid_from_then_on() -> None:
    # Version 2, applied on Oct 20 at 00:00 UTC, gives c 2 purchased H GPUs: paid for
    # the 287 hours left of the month in Europe/Paris (to Oct 31 23:00 UTC) at 2.00,
    # not for all 745, and the invoice line says the same hours.
    v1 = make_policy(version=1, shared="[]")
    v2 = make_policy(version=2, shared="[]", c_purchased="{H: 2}")
    history = PolicyHistory(
        (datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 10, 20, tzinfo=UTC)), (v1, v2), True
    )
    report = build_month_report("2026-10", v2, USAGE, CAPACITY, history=history)
    assert column(report, "purchase_paid")["c"] == D("1148.00")
    assert report.settlement.loc["c", "a"] == D("1148.00")
    assert column(report, "purchased_gpu_hours")["c"] == 2 * 287.0
    rows = report.entitlement_vs_use.set_index(["member", "gpu_model"])
    assert rows.loc[("c", "H"), "purchased_gpu_hours"] == 2 * 287.0
    # Ended on the 20th instead: paid until then (458 hours), not dropped.
    ended = PolicyHistory(
        (datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 10, 20, tzinfo=UTC)), (v2, v1), True
    )
    report = build_month_report("2026-10", v1, USAGE, CAPACITY, history=ended)
    assert column(report, "purchase_paid")["c"] == D("1832.00")


def test_a_version_stamped_before_the_one_it_replaced_is_in_force_after_it() -> None:
    # Version 3 (c buys 3 H GPUs) was recorded after version 2 (2 GPUs) by a replica
    # whose clock was 2 s behind: ordered by time, version 2 was the newest and priced
    # every later hour, and `fairpool report` without --policy took it for the latest.
    history = PolicyHistory.from_records(
        [
            (1, datetime(2026, 9, 1, tzinfo=UTC), make_policy_text(version=1, shared="[]")),
            (
                2,
                datetime(2026, 10, 20, 0, 0, 5, tzinfo=UTC),
                make_policy_text(version=2, shared="[]", c_purchased="{H: 2}"),
            ),
            (
                3,
                datetime(2026, 10, 20, 0, 0, 3, tzinfo=UTC),
                make_policy_text(version=3, shared="[]", c_purchased="{H: 3}"),
            ),
        ]
    )
    assert history is not None
    assert history.latest.version == 3
    assert history.at(datetime(2026, 10, 20, 1, tzinfo=UTC)).version == 3
    assert history.at(datetime(2026, 10, 19, 23, tzinfo=UTC)).version == 1
    report = build_month_report("2026-10", history.latest, USAGE, CAPACITY, history=history)
    # 3 GPUs x 2.00 for the 286 hours from 01:00, the first to start after 00:00:05.
    assert column(report, "purchase_paid")["c"] == D("1716.00")


def test_a_recorded_version_this_fairpool_refuses_fails_only_the_hours_it_governed() -> None:
    # Version 1 has a member named `pool`, taken before the name was reserved: every
    # report and the meter failed on it, for months it never governed.
    old = make_policy_text(version=1, shared="[]").replace("name: c,", "name: pool,")
    history = PolicyHistory.from_records(
        [
            (1, datetime(2026, 1, 1, tzinfo=UTC), old),
            (2, datetime(2026, 6, 1, tzinfo=UTC), make_policy_text(version=2, shared="[]")),
        ]
    )
    assert history is not None
    assert history.latest.version == 2
    assert list(history.by_version) == [2]
    report = build_month_report("2026-10", history.latest, USAGE, CAPACITY, history=history)
    assert report.policy_versions == [2]
    with pytest.raises(InputError) as refused:
        history.at(datetime(2026, 3, 1, tzinfo=UTC))
    message = str(refused.value)
    assert message.startswith("policy version 1 (ledger): line ")
    assert "spec.members[2].name: member name 'pool' is reserved" in message
    assert "in force at 2026-03-01 00:00Z" in message


def test_use_is_within_a_purchase_only_in_the_hours_it_is_paid_for() -> None:
    # c's A-hour on b's nodes is at 00:00 on Oct 10. A purchase of 1 A applied on the
    # 20th (version 2) does not cover it: that hour is charged as use of b's hardware.
    # It covered it when the split read only the month's last version (1 A-hour within
    # a purchase paid for 287 hours, the charge gone).
    v1 = make_policy(version=1, shared="[]")
    v2 = make_policy(version=2, shared="[]", c_purchased="{A: 1}")
    applied = (datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 10, 20, tzinfo=UTC))
    report = build_month_report(
        "2026-10", v2, USAGE, CAPACITY, history=PolicyHistory(applied, (v1, v2), True)
    )
    assert column(report, "purchase_paid")["c"] == D("287.00")
    assert column(report, "used_within_purchase_gpu_hours")["c"] == 0.0
    assert column(report, "used_on_others_charged_gpu_hours")["c"] == 1.0
    assert column(report, "charges")["c"] == D("1.00")
    # Ended on the 20th instead: the hour is within it, and not charged.
    report = build_month_report(
        "2026-10", v1, USAGE, CAPACITY, history=PolicyHistory(applied, (v2, v1), True)
    )
    assert column(report, "used_within_purchase_gpu_hours")["c"] == 1.0
    assert column(report, "charges")["c"] == D("0")
    assert sum(totals(report).values()) == report.pool_cost


def test_a_purchase_hosted_by_several_owners_is_paid_whole_by_a_member_that_used_nothing() -> None:
    # startup holds 1 purchased H for January's 744 hours at 2.00: 1,488.00, hosted 3:3:1
    # by lab-a, lab-b and lab-c. Each host's share rounded alone made 1,487.99; and a
    # member with no use was "no data", its purchased GPU-hours blank, while billed.
    policy = parse_policy(
        """
apiVersion: fairpool.io/v1
kind: Policy
metadata: {name: hosts}
spec:
  gpuModels: [{name: H, hourlyCost: "2.00"}]
  members:
    - {name: lab-a, namespaces: [lab-a]}
    - {name: lab-b, namespaces: [lab-b]}
    - {name: lab-c, namespaces: [lab-c]}
    - {name: startup, namespaces: [startup], purchased: {H: 1}}
  billing: {timeZone: UTC, idleCost: owner}
"""
    )
    hours = pd.date_range("2026-01-01", periods=744, freq="h", tz="UTC")
    gpus = {"lab-a": 3, "lab-b": 3, "lab-c": 1}
    capacity = pd.DataFrame(
        [
            {"hour": h, "owner": o, "gpu_model": "H", "gpu_seconds_available": n * 3600.0}
            for h in hours
            for o, n in gpus.items()
        ]
    )
    usage = pd.DataFrame(
        [
            {
                "hour": hours[0],
                "member": "lab-a",
                "owner": "lab-a",
                "gpu_model": "H",
                "gpu_seconds": 3600.0,
            }
        ]
    )
    report = build_month_report("2026-01", policy, usage, capacity)
    assert column(report, "purchase_paid")["startup"] == D("1488.00")
    received = column(report, "purchase_received")
    assert {m: received[m] for m in gpus} == {
        "lab-a": D("637.72"),
        "lab-b": D("637.71"),
        "lab-c": D("212.57"),
    }
    lines = report.invoice("startup")
    assert sum(lines[lines["section"] == "purchase"]["amount"]) == D("1488.00")
    row = report.summary.set_index("member").loc["startup"]
    assert row["status"] == "ok" and row["purchased_gpu_hours"] == 744.0
    assert row["used_gpu_hours"] == 0.0
    assert not any("startup" in flag for flag in report.flags)


def test_the_idle_cost_rule_follows_each_hours_policy_version(tmp_path: Path) -> None:
    """b's node idles one A-hour at 00:00 on Oct 10, under version 1 (by-contribution);
    version 2 (owner) is applied at 01:00. That hour's idle capacity is pooled, split
    4:4:0 by contributed GPU-hours, as in a month all under by-contribution; under the
    month's last version alone, b bore it."""
    v1 = make_policy(idle="by-contribution", version=1)
    v2 = make_policy(idle="owner", version=2)
    history = PolicyHistory(
        (datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 10, 10, 1, tzinfo=UTC)), (v1, v2), True
    )
    report = build_month_report("2026-10", v2, USAGE, CAPACITY, history=history)
    assert column(report, "idle_adjustment") == {"a": D("0.50"), "b": D("-0.50"), "c": D("0")}
    assert sum(totals(report).values()) == report.pool_cost
    assert report.idle_cost_rule == "by-contribution, owner"
    lines = report.invoices[report.invoices["section"] == "idle"]
    assert set(lines["description"]) == {
        "Idle capacity on own nodes, returned to the pool (by-contribution)",
        "Share of pooled idle capacity (by-contribution)",
    }
    html = write_report(report, tmp_path / "report")[-1].read_text()
    assert "follows the rule of the policy version in force then" in html
    # The other way round: the idle hour is under `owner`, and b bears it.
    history = PolicyHistory(
        (datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 10, 10, 1, tzinfo=UTC)), (v2, v1), True
    )
    report = build_month_report("2026-10", v1, USAGE, CAPACITY, history=history)
    assert column(report, "idle_adjustment") == {"a": D("0"), "b": D("0"), "c": D("0")}


def test_a_shared_cost_added_mid_month_is_paid_from_then_on() -> None:
    # Version 2 (from Oct 20, 00:00 UTC: 287 of the month's 745 hours) adds storage,
    # 300.00 a month: 300 x 287 / 745 = 115.57 of it, split equally; ops, in both
    # versions, is paid whole.
    ops = '{name: ops, monthlyAmount: "100.00", split: equal}'
    storage = '{name: storage, monthlyAmount: "300.00", split: equal}'
    v1 = make_policy(version=1, shared=f"[{ops}]")
    v2 = make_policy(version=2, shared=f"[{ops}, {storage}]")
    history = PolicyHistory(
        (datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 10, 20, tzinfo=UTC)), (v1, v2), True
    )
    report = build_month_report("2026-10", v2, USAGE, CAPACITY, history=history)
    assert report.shared_fixed_cost == D("215.57")
    lines = report.invoices[report.invoices["section"] == "shared"]
    assert set(lines["description"]) == {
        "Shared cost: ops (equal)",
        "Shared cost: storage (equal)",
    }
    assert lines.groupby("description")["amount"].sum().to_dict() == {
        "Shared cost: ops (equal)": D("100.00"),
        "Shared cost: storage (equal)": D("115.57"),
    }


def test_a_new_models_hours_before_its_price_was_applied_take_its_first_price() -> None:
    # c's B200 node joins at 10:00 on Oct 10; the version that prices B200 is applied at
    # 14:00. The history cannot change: those 4 hours take version 2's price, flagged,
    # rather than the month never getting a report.
    with_b200 = make_policy_text(version=2, shared="[]").replace(
        '- {name: A, hourlyCost: "1.00"}',
        '- {name: A, hourlyCost: "1.00"}\n    - {name: B200, hourlyCost: "5.00"}',
    )
    v1, v2 = make_policy(version=1, shared="[]"), parse_policy(with_b200)
    joined = pd.Timestamp("2026-10-10T10:00Z")
    b200 = pd.DataFrame(
        [(joined + pd.Timedelta(hours=h), "c", "B200", 8 * 3600.0) for h in range(6)],
        columns=CAPACITY.columns,
    )
    capacity = pd.concat([CAPACITY, b200])
    applied = datetime(2026, 10, 10, 14, tzinfo=UTC)
    history = PolicyHistory((datetime(2026, 9, 1, tzinfo=UTC), applied), (v1, v2), True)
    report = build_month_report("2026-10", v2, USAGE, capacity, history=history)
    assert any(
        "'B200' has no price in policy version 1" in f and "version 2, the first" in f
        for f in report.flags
    )
    # The same as if version 1 had priced it already.
    priced = PolicyHistory(
        (datetime(2026, 9, 1, tzinfo=UTC), applied),
        (parse_policy(with_b200.replace("version: 2", "version: 1")), v2),
        True,
    )
    same = build_month_report("2026-10", v2, USAGE, capacity, history=priced)
    assert column(report, "capacity_cost") == column(same, "capacity_cost")
    assert column(report, "capacity_cost")["c"] >= D("240.00")  # 48 GPU-hours x 5.00


def test_purchase_of_a_model_nobody_else_hosts_is_flagged_not_billed() -> None:
    # a is the only H owner: nobody else can host a purchased H GPU of a's.
    report = build(make_policy(a_purchased="{H: 1}", shared="[]"))
    assert column(report, "purchase_paid")["a"] == D("0")
    assert any("a holds 1 purchased H" in f and "not billed" in f for f in report.flags)
    # c's purchased H is hosted by a: 745 h x 2.00.
    report = build(make_policy(c_purchased="{H: 1}", shared="[]"))
    assert report.settlement.loc["c", "a"] == D("1490.00")


def test_reclaim_lost_is_information_not_money() -> None:
    lost = pd.DataFrame(
        [(H0, "b", "H", 1800.0)], columns=["hour", "member", "gpu_model", "gpu_seconds_lost"]
    )
    with_lost = build(make_policy(), reclaim_lost=lost)
    without = build(make_policy())
    assert totals(with_lost) == totals(without)
    assert column(with_lost, "reclaim_lost_gpu_hours")["b"] == 0.5
    line = with_lost.invoice("b")
    info = line[line["description"].str.contains("lost to reclaim")].iloc[0]
    assert info["amount"] is None
    assert info["info_value"] == D("1.00")
    # Without a cause column the cause is not known: in the total only.
    assert column(with_lost, "reclaim_lost_entitlement_gpu_hours")["b"] == 0.0


def test_reclaim_lost_is_split_by_cause() -> None:
    lost = pd.DataFrame(
        [
            (H0, "b", "H", "entitlement", 1800.0),
            (H0, "b", "H", "consolidation", 360.0),
            (H0, "b", "H", "", 720.0),  # metered before causes were recorded
            (H0, "c", "H", "fair_share", 3600.0),
        ],
        columns=["hour", "member", "gpu_model", "cause", "gpu_seconds_lost"],
    )
    report = build(make_policy(), reclaim_lost=lost)
    assert column(report, "reclaim_lost_gpu_hours")["b"] == pytest.approx(0.8)
    assert column(report, "reclaim_lost_entitlement_gpu_hours")["b"] == pytest.approx(0.5)
    assert column(report, "reclaim_lost_fair_share_gpu_hours")["b"] == 0.0
    assert column(report, "reclaim_lost_consolidation_gpu_hours")["b"] == pytest.approx(0.1)
    assert column(report, "reclaim_lost_fair_share_gpu_hours")["c"] == pytest.approx(1.0)
    assert column(report, "reclaim_lost_gpu_hours")["c"] == pytest.approx(1.0)
    # One invoice line per GPU model, whatever the causes.
    lines = report.invoice("b")
    assert len(lines[lines["description"].str.contains("lost to reclaim")]) == 1


def test_the_bill_knows_the_causes_the_engine_names() -> None:
    assert LOST_CAUSES == PREEMPTION_CAUSES


def test_reclaim_lost_with_an_unknown_cause_is_refused() -> None:
    lost = pd.DataFrame(
        [(H0, "b", "H", "reclaim", 1800.0)],
        columns=["hour", "member", "gpu_model", "cause", "gpu_seconds_lost"],
    )
    with pytest.raises(FrameError, match=r"reclaim_lost: unknown cause.*'reclaim'.*column cause"):
        build(make_policy(), reclaim_lost=lost)


def test_efficiency_known_and_missing() -> None:
    usage = USAGE.copy()
    usage.loc[usage["member"] == "c", "utilization"] = float("nan")
    usage.loc[usage["member"] == "a", "utilization"] = 0.25
    report = build(make_policy(), usage=usage)
    eff = column(report, "efficiency")
    assert eff["a"] == pytest.approx(0.25)
    assert eff["b"] == pytest.approx(0.5)
    assert pd.isna(eff["c"])  # unknown, not 0


def test_a_member_without_data_shows_no_data_not_zero() -> None:
    report = build(make_policy(extra_member="- {name: d, namespaces: [d]}"))
    row = report.summary.set_index("member").loc["d"]
    assert row["status"] == "no data"
    assert pd.isna(row["used_gpu_hours"])
    assert pd.isna(row["used_on_others_charged_gpu_hours"])
    assert "no data for member d this month" in report.flags
    assert report.summary.set_index("member").loc["a", "status"] == "ok"


def test_usage_no_member_claims_is_unattributed_and_still_balances() -> None:
    usage = pd.concat([USAGE, usage_frame([(H1, "", "a", "H", 0.0)])])
    usage.loc[usage.index[-1], "member"] = None
    report = build(make_policy(), usage=usage)
    assert UNATTRIBUTED in report.members


def test_prices_per_policy_version() -> None:
    old = make_policy(version=1)
    new = parse_policy(
        make_policy(version=2)
        .model_dump_json(by_alias=True)
        .replace('"hourlyCost":"2.00"', '"hourlyCost":"3.00"')
    )
    book = PriceBook(new, {1: old, 2: new})
    assert book.price("H", 1) == D("2.00")
    assert book.price("H", 2) == D("3.00")
    assert book.price("H") == D("3.00")
    usage = USAGE.copy()
    usage["policy_version"] = [1, 1, 1, 2, 2]
    report = build(new, usage=usage, policies={1: old, 2: new})
    # a's H capacity: hour 0 at 2.00 (v1), hour 1 at 3.00 (v2) -> 2 x 2.00 + 2 x 3.00
    assert column(report, "capacity_cost")["a"] == D("10.00")
    assert report.policy_versions == [1, 2]


def test_unknown_gpu_model_is_an_input_error_naming_it() -> None:
    usage = usage_frame([(H0, "a", "a", "X100", 3600.0)])
    with pytest.raises(Exception, match="X100"):
        build(make_policy(), usage=usage)


def test_missing_column_is_named() -> None:
    with pytest.raises(FrameError, match="gpu_seconds"):
        build(make_policy(), usage=USAGE.drop(columns=["gpu_seconds"]))


def test_a_month_without_any_data_raises() -> None:
    with pytest.raises(NoDataError, match="2026-11"):
        build_month_report("2026-11", make_policy(), USAGE, CAPACITY)


def test_usage_above_reported_capacity_is_billed_and_flagged() -> None:
    capacity = CAPACITY[~((CAPACITY["owner"] == "a") & (CAPACITY["hour"] == H1))]
    report = build(make_policy(), capacity=capacity)
    assert column(report, "capacity_cost")["a"] == D("8.00")
    assert any("exceeded reported capacity" in f for f in report.flags)


def test_lent_and_purchase_net_and_pooling_dividend() -> None:
    summary = {"members": {"b": {"pooling_dividend_gpu_hours": 7.5}}}
    report = build(make_policy(), simulation_summary=summary)
    money = column(report, "lent_and_purchase_net_money")
    assert money == {"a": D("2.00"), "b": D("1.00"), "c": D("0")}
    # the pooling dividend comes from the simulation only: none for a and c
    dividend = column(report, "pooling_dividend_gpu_hours")
    assert dividend["b"] == 7.5
    assert pd.isna(dividend["a"]) and pd.isna(dividend["c"])
    assert not any(
        "dividend" in c for c in report.summary.columns if c != "pooling_dividend_gpu_hours"
    )
