"""The settlement recomputed by a second, independent reading of docs/reports.md ("How
the bill is built", "Rounding") and compared to the cost model's to the cent: for a
simulated month, from the simulation's own usage and capacity tables against the
report's files; for any small pool, of one policy version or of two (prices, purchases,
the idle cost rule, shared costs and the members changing mid-month), against
`build_month_report`.

The reference calls nothing of the cost model: pandas, Decimal and exact fractions only,
so a defect in the split of usage, pricing, purchases, idle cost, shared costs or
rounding shows up as a settlement cell or a member's column that disagrees."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.loader import DEFAULT_POLICY, parse_policy
from policies.model import Policy
from reports.costmodel import build_month_report
from reports.costmodel.frames import UNATTRIBUTED
from reports.costmodel.policy_history import PolicyHistory
from tests.examples import examples
from tests.unit.test_sim_cli import run

D = Decimal
CENT = D("0.01")
MONTH_START = pd.Timestamp("2026-10-31T23:00Z")  # November 2026 in Europe/Paris
MONTH_END = pd.Timestamp("2026-11-30T23:00Z")
MONTH_HOURS = 720


def cents(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_HALF_EVEN)


def at_price(gpu_seconds: float, price: Decimal) -> Decimal:
    return D(repr(round(float(gpu_seconds), 3))) * price / 3600


def largest_remainder(
    whole: Decimal, weights: Mapping[str, float], order: list[str]
) -> dict[str, Decimal]:
    """`whole` split by `weights` in exact fractions: parts floored to the cent, the cents
    left over to the largest remainders, ties in `order` (docs/reports.md, Rounding)."""
    keys = [k for k in order if k in weights]
    weight = {k: Fraction(D(repr(float(weights[k])))) for k in keys}
    total = sum(weight.values(), Fraction(0))
    exact = {k: Fraction(whole) * weight[k] / total for k in keys}
    floors = {k: Fraction(math.floor(v * 100), 100) for k, v in exact.items()}
    left = int((Fraction(whole) - sum(floors.values(), Fraction(0))) * 100)
    for k in sorted(keys, key=lambda k: (-(exact[k] - floors[k]), order.index(k)))[:left]:
        floors[k] += Fraction(1, 100)
    return {k: D(v.numerator) / D(v.denominator) for k, v in floors.items()}


def expected_bill(out: Path) -> dict[str, Any]:
    """The bill of a `fairpool simulate` folder, from its tables (the simulated window
    cut to November 2026 in Europe/Paris: purchases and shared costs are paid for the
    window's part of the month)."""
    spec = yaml.safe_load((out / "policy.yaml").read_text())["spec"]
    window = json.loads((out / "summary.json").read_text())["window"]
    first = max(MONTH_START, pd.Timestamp(window["start"]))
    last = min(MONTH_END, pd.Timestamp(window["end"]))
    usage = pd.read_parquet(out / "usage.parquet")
    capacity = pd.read_parquet(out / "capacity.parquet")
    usage = usage[(usage["hour"] >= MONTH_START) & (usage["hour"] < MONTH_END)]
    capacity = capacity[(capacity["hour"] >= MONTH_START) & (capacity["hour"] < MONTH_END)]
    members = [m["name"] for m in spec["members"]]
    hours = D(repr((last - first).total_seconds())) / 3600
    return reference_bill(usage, capacity, [Version(None, spec, hours)], members, MONTH_HOURS)


@dataclass(frozen=True)
class Version:
    """A policy version (its spec), the first hour it governs (None: from the month's
    start) and the hours of the month billed under it."""

    start: pd.Timestamp | None
    spec: Mapping[str, Any]
    hours: Decimal


def reference_bill(
    usage: pd.DataFrame,
    capacity: pd.DataFrame,
    versions: list[Version],
    members: list[str],
    month_hours: int,
) -> dict[str, Any]:
    """Per member its money columns, the settlement cells, and the GPU-hour checks, for
    usage and capacity already cut to the month, each hour under its policy `versions`
    (in order; the last is the policy reported with); `members` in report order."""
    latest = versions[-1].spec
    policy_members = [m["name"] for m in latest["members"]]

    def version_of(hour: pd.Timestamp) -> int:
        return max(i for i, v in enumerate(versions) if v.start is None or v.start <= hour)

    def price(model: str, version: int) -> Decimal:
        return {m["name"]: D(m["hourlyCost"]) for m in versions[version].spec["gpuModels"]}[model]

    def purchased(version: int) -> dict[tuple[str, str], int]:
        return {
            (m["name"], model): gpus
            for m in versions[version].spec["members"]
            for model, gpus in (m.get("purchased") or {}).items()
        }

    use = usage.groupby(["hour", "member", "owner", "gpu_model"], as_index=False)[
        "gpu_seconds"
    ].sum()

    # Use of others' hardware: first covered by the user's purchased GPUs of the model in
    # that hour, pro rata over the owners it used; the rest is charged at that hour's price.
    charged: dict[tuple[str, str, str, int], float] = {}
    within = 0.0
    others = use[use["member"] != use["owner"]]
    for (hour, user, model), rows in others.groupby(["hour", "member", "gpu_model"]):
        version = version_of(hour)
        total = float(rows["gpu_seconds"].sum())
        cover = purchased(version).get((user, model), 0) * 3600.0
        for owner, seconds in zip(rows["owner"], rows["gpu_seconds"], strict=True):
            part = seconds * min(1.0, cover / total) if total > 0 else 0.0
            key = (user, owner, model, version)
            charged[key] = charged.get(key, 0.0) + seconds - part
            within += part
    exact_cells: dict[tuple[str, str], Decimal] = {}
    for (user, owner, model, version), secs in charged.items():
        exact_cells[(user, owner)] = exact_cells.get((user, owner), D(0)) + at_price(
            secs, price(model, version)
        )
    charges = {k: cents(v) for k, v in exact_cells.items() if v}

    # Capacity: per hour the larger of available and used; idle the rest.
    on_nodes = use.groupby(["hour", "owner", "gpu_model"])["gpu_seconds"].sum().rename("used")
    offered = capacity.groupby(["hour", "owner", "gpu_model"])["gpu_seconds_available"].sum()
    hourly = pd.concat([offered, on_nodes], axis=1).fillna(0.0).reset_index()
    hourly["billed"] = hourly[["gpu_seconds_available", "used"]].max(axis=1)
    hourly["idle"] = hourly["billed"] - hourly["used"]
    hourly["version"] = [version_of(h) for h in hourly["hour"]]
    hourly["rule"] = [
        versions[v].spec["billing"].get("idleCost", "owner") for v in hourly["version"]
    ]
    by_version = hourly.groupby(["owner", "gpu_model", "version"])[["billed", "idle"]].sum()
    capacity_exact: dict[tuple[str, str], Decimal] = {}
    for (owner, model, version), row in by_version.iterrows():
        capacity_exact[(owner, model)] = capacity_exact.get((owner, model), D(0)) + at_price(
            row["billed"], price(model, version)
        )
    capacity_cost: dict[str, Decimal] = {}
    for (owner, _), exact in capacity_exact.items():
        capacity_cost[owner] = capacity_cost.get(owner, D(0)) + cents(exact)
    contributed = (hourly.groupby("owner")["billed"].sum() / 3600).to_dict()
    contributed_model = hourly.groupby(["owner", "gpu_model"])["billed"].sum() / 3600
    used = (use.groupby("member")["gpu_seconds"].sum() / 3600).to_dict()

    # Purchases: paid whole for the hours each version holds them, at its price, to the
    # other owners of the model by their contributed GPU-hours of it; not billed when
    # there is no other owner.
    purchases: dict[tuple[str, str], Decimal] = {}
    buyers = {key for i in range(len(versions)) for key, gpus in purchased(i).items() if gpus}
    for buyer, model in sorted(buyers):
        hosts = {
            o: h for (o, g), h in contributed_model.items() if g == model and o != buyer and h > 0
        }
        if not hosts:
            continue
        whole = sum(
            (
                D(purchased(i).get((buyer, model), 0)) * v.hours * price(model, i)
                for i, v in enumerate(versions)
            ),
            D(0),
        )
        for host, part in largest_remainder(cents(whole), hosts, members).items():
            purchases[(buyer, host)] = purchases.get((buyer, host), D(0)) + part

    def weights(rule: str) -> dict[str, float]:
        """by-usage, else by-contribution, else equal among the policy's members."""
        positive_use = {k: v for k, v in used.items() if v > 0}
        positive_contribution = {k: v for k, v in contributed.items() if v > 0}
        if rule == "by-usage" and positive_use:
            return positive_use
        if rule in ("by-usage", "by-contribution") and positive_contribution:
            return positive_contribution
        return dict.fromkeys(policy_members, 1.0)

    # Idle capacity: each hour under its version's rule; each pooled rule returns its
    # hours' idle capacity cost and splits it by the month's weights.
    returned: dict[str, Decimal] = {}
    share: dict[str, Decimal] = {}
    for rule, rows in hourly.groupby("rule"):
        if rule == "owner":
            continue
        idle_rows = rows.groupby(["owner", "gpu_model", "version"])["idle"].sum()
        idle_value: dict[str, Decimal] = {}
        for (owner, model, version), secs in idle_rows.items():
            idle_value[owner] = idle_value.get(owner, D(0)) + at_price(secs, price(model, version))
        back = {o: cents(x) for o, x in idle_value.items()}
        for o, x in back.items():
            returned[o] = returned.get(o, D(0)) + x
        for m, part in largest_remainder(
            sum(back.values(), D(0)), weights(str(rule)), members
        ).items():
            share[m] = share.get(m, D(0)) + part

    # Shared costs: each paid for the hours of the versions that hold it, split by its
    # latest rule.
    amounts: dict[str, Decimal] = {}
    rules: dict[str, str] = {}
    for held in versions:
        for cost in held.spec["billing"].get("sharedFixedCosts", []):
            amounts[cost["name"]] = (
                amounts.get(cost["name"], D(0))
                + D(cost["monthlyAmount"]) * held.hours / month_hours
            )
            rules[cost["name"]] = cost["split"]
    shared = dict.fromkeys(members, D(0))
    for name, amount in amounts.items():
        for m, part in largest_remainder(cents(amount), weights(rules[name]), members).items():
            shared[m] += part

    money: dict[str, dict[str, Decimal]] = {}
    for m in members:
        paid_use = sum((v for (u, _), v in charges.items() if u == m), D(0))
        credited = sum((v for (_, o), v in charges.items() if o == m), D(0))
        paid = sum((v for (b, _), v in purchases.items() if b == m), D(0))
        received = sum((v for (_, h), v in purchases.items() if h == m), D(0))
        idle = share.get(m, D(0)) - returned.get(m, D(0))
        money[m] = {
            "capacity_cost": capacity_cost.get(m, D(0)),
            "charges": paid_use,
            "credits": credited,
            "purchase_paid": paid,
            "purchase_received": received,
            "idle_adjustment": idle,
            "shared_fixed": shared[m],
            "total": capacity_cost.get(m, D(0))
            + paid_use
            - credited
            + paid
            - received
            + idle
            + shared[m],
            "net_settlement": credited + received - paid_use - paid,
        }
    cells: dict[tuple[str, str], Decimal] = {}
    for pair, value in [*charges.items(), *purchases.items()]:
        cells[pair] = cells.get(pair, D(0)) + value
    return {
        "members": members,
        "money": money,
        "cells": cells,
        "pool_cost": sum(capacity_cost.values(), D(0)) + sum(shared.values(), D(0)),
        "used_seconds": float(use["gpu_seconds"].sum()),
        "own_seconds": float(use.loc[use["member"] == use["owner"], "gpu_seconds"].sum()),
        "within_seconds": within,
        "charged_seconds": sum(charged.values()),
    }


# The demo consortium, and a variant whose idle capacity is split by use, where lab-bio
# also buys 3 H100 (hosted by uni-north and ai-startup, 16 GPUs each) and uni-north 4
# A100 (hosted by lab-bio's 8 and physics' 24: paid 1 : 3).
VARIANT = (
    DEFAULT_POLICY.read_text()
    .replace("idleCost: by-contribution", "idleCost: by-usage")
    .replace("split: by-contribution", "split: by-usage")
    .replace(
        "NVIDIA-A100-SXM4-80GB: 4", "NVIDIA-A100-SXM4-80GB: 4\n        NVIDIA-H100-80GB-HBM3: 3"
    )
    .replace(
        '"uni-north-*"]\n      weight: 1\n',
        '"uni-north-*"]\n      weight: 1\n      purchased: {NVIDIA-A100-SXM4-80GB: 4}\n',
    )
)
assert VARIANT.count("purchased") == 2, "the demo policy changed: rewrite the variant"


@pytest.mark.parametrize("policy_text", [None, VARIANT], ids=["demo", "by-usage-two-hosts"])
def test_the_settlement_recomputed_from_the_simulations_tables_agrees_to_the_cent(
    tmp_path: Path, policy_text: str | None
) -> None:
    out = tmp_path / "out"
    args = ["simulate", "--days", "2", "--no-standalone", "--jobs", "1"]
    args += ["--start", "2026-11-01T00:00:00+01:00", "--out", str(out)]
    if policy_text is not None:
        (tmp_path / "policy.yaml").write_text(policy_text)
        args += ["--policy", str(tmp_path / "policy.yaml")]
    assert run(args) == 0
    expected = expected_bill(out)
    members: list[str] = expected["members"]
    report = out / "report"

    # Every GPU-second used is used on its own nodes, within a purchase, or charged to
    # exactly one user and credited to exactly one owner.
    parts = expected["own_seconds"] + expected["within_seconds"] + expected["charged_seconds"]
    assert parts == pytest.approx(expected["used_seconds"], abs=1e-3)
    assert expected["charged_seconds"] > 0 and expected["within_seconds"] > 0

    summary = pd.read_csv(report / "summary.csv", dtype=str).set_index("member")
    for m in members:
        got = {k: D(summary.loc[m, k]) for k in expected["money"][m]}
        assert got == expected["money"][m], m
    pool = D(summary.loc["pool", "total"])
    assert pool == expected["pool_cost"]
    assert sum((D(summary.loc[m, "total"]) for m in members), D(0)) == pool
    assert sum((D(summary.loc[m, "net_settlement"]) for m in members), D(0)) == 0
    charged_h = sum(float(summary.loc[m, "used_on_others_charged_gpu_hours"]) for m in members)
    credited_h = sum(float(summary.loc[m, "lent_credited_gpu_hours"]) for m in members)
    assert charged_h == pytest.approx(credited_h, abs=1e-5)
    assert charged_h == pytest.approx(expected["charged_seconds"] / 3600, abs=1e-5)

    matrix = pd.read_csv(report / "settlement.csv", dtype=str).set_index("payer \\ payee")
    for payer in members:
        for payee in members:
            assert D(matrix.loc[payer, payee]) == expected["cells"].get((payer, payee), D(0)), (
                payer,
                payee,
            )

    invoices = {m: pd.read_csv(report / f"invoice-{m}.csv", dtype=str) for m in members}
    for m, lines in invoices.items():
        due = sum((D(a) for a in lines.loc[lines["section"] != "total", "amount"].dropna()), D(0))
        assert due == D(lines.loc[lines["section"] == "total", "amount"].iloc[0])
        assert due == expected["money"][m]["total"]
        # Each lent credit is the user's charge for the same owner and model, negated.
        for line in lines[lines["section"] == "lent"].itertuples():
            theirs = invoices[str(line.counterparty)]
            charge = theirs[
                (theirs["section"] == "others-hardware")
                & (theirs["counterparty"] == m)
                & (theirs["gpu_model"] == line.gpu_model)
            ]
            assert list(charge["amount"].map(D)) == [-D(str(line.amount))]


# A small pool in UTC October 2026 (744 hours, no window: purchases and shared costs are
# paid for the whole month). GPU-seconds are whole multiples of 360 s, so that the
# GPU-hours the two computations weigh shares by are the same floats, and a cent left
# over by largest remainder goes to the same member in both.
NAMES = ["a", "b", "c"]
HOURS_OF_CASE = list(pd.date_range("2026-10-10T00:00Z", periods=3, freq="h"))
OCTOBER_HOURS = 744


@st.composite
def pools(draw: st.DrawFn) -> dict[str, Any]:
    rules = ["equal", "by-contribution", "by-usage"]
    return {
        "gpuModels": [
            {"name": g, "hourlyCost": str(draw(st.decimals("0.01", "9.9999", places=4)))}
            for g in ("H", "A")
        ],
        "members": [
            {
                "name": m,
                "namespaces": [m],
                "purchased": {g: draw(st.integers(0, 2)) for g in ("H", "A") if m != "a"},
            }
            for m in NAMES
        ],
        "billing": {
            "timeZone": "UTC",
            "idleCost": draw(st.sampled_from(["owner", "by-contribution", "by-usage"])),
            "sharedFixedCosts": [
                {
                    "name": f"cost-{i}",
                    "monthlyAmount": str(draw(st.decimals("0", "5000", places=2))),
                    "split": draw(st.sampled_from(rules)),
                }
                for i in range(draw(st.integers(0, 2)))
            ],
        },
    }


seconds = st.integers(0, 20).map(lambda n: float(n * 360))
usage_rows = st.lists(
    st.tuples(
        st.sampled_from(HOURS_OF_CASE),
        st.sampled_from([*NAMES, None]),
        st.sampled_from([*NAMES, None]),
        st.sampled_from(["H", "A"]),
        seconds,
    ),
    min_size=1,
    max_size=20,
)
capacity_rows = st.lists(
    st.tuples(
        st.sampled_from(HOURS_OF_CASE),
        st.sampled_from([*NAMES, None]),
        st.sampled_from(["H", "A"]),
        seconds,
    ),
    max_size=12,
)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=pools(), usage=usage_rows, capacity=capacity_rows)
def test_the_bill_of_any_small_pool_equals_the_bill_recomputed_by_hand(
    spec: dict[str, Any],
    usage: list[tuple[pd.Timestamp, str | None, str | None, str, float]],
    capacity: list[tuple[pd.Timestamp, str | None, str, float]],
) -> None:
    policy = parse_policy(
        yaml.safe_dump({"apiVersion": "fairpool.io/v1", "kind": "Policy", "spec": spec})
    )
    used = pd.DataFrame(usage, columns=["hour", "member", "owner", "gpu_model", "gpu_seconds"])
    used["pod_uid"] = [f"pod-{i}" for i in range(len(used))]
    offered = pd.DataFrame(
        capacity, columns=["hour", "owner", "gpu_model", "gpu_seconds_available"]
    )
    report = build_month_report("2026-10", policy, used, offered)

    # The reference reads no member or owner as `unattributed`, listed last.
    named = used.fillna({"member": UNATTRIBUTED, "owner": UNATTRIBUTED})
    offered = offered.fillna({"owner": UNATTRIBUTED})
    seen = set(named["member"]) | set(named["owner"]) | set(offered["owner"])
    members = NAMES + ([UNATTRIBUTED] if UNATTRIBUTED in seen else [])
    whole_month = [Version(None, spec, D(OCTOBER_HOURS))]
    expected = reference_bill(named, offered, whole_month, members, OCTOBER_HOURS)

    assert report.members == members
    got = report.summary.set_index("member")
    for m in members:
        assert {k: got.loc[m, k] for k in expected["money"][m]} == expected["money"][m], m
    assert report.pool_cost == expected["pool_cost"]
    for payer in members:
        for payee in members:
            want = expected["cells"].get((payer, payee), D(0))
            assert report.settlement.loc[payer, payee] == want, (payer, payee)


def _policy(spec: Mapping[str, Any], version: int) -> Policy:
    document = {"apiVersion": "fairpool.io/v1", "kind": "Policy", "spec": spec}
    document["metadata"] = {"name": "pool", "version": version}
    return parse_policy(yaml.safe_dump(document))


SWITCH = pd.Timestamp("2026-10-10T01:00Z")
"""Version 2 is applied here: version 1 governs the 217 hours of October before it (and
`HOURS_OF_CASE[0]`), version 2 the 527 from it on."""


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=pools(),
    second=pools(),
    leaver=st.fixed_dictionaries({"H": st.integers(0, 2), "A": st.integers(0, 2)}),
    usage=usage_rows,
    capacity=capacity_rows,
)
def test_a_month_of_two_policy_versions_equals_the_bill_recomputed_by_hand(
    first: dict[str, Any],
    second: dict[str, Any],
    leaver: dict[str, int],
    usage: list[tuple[pd.Timestamp, str | None, str | None, str, float]],
    capacity: list[tuple[pd.Timestamp, str | None, str, float]],
) -> None:
    # Prices, purchases, the idle cost rule and shared costs all change at SWITCH, and a
    # member d, with the purchases `leaver`, is in version 1 only.
    first["members"] = [*first["members"], {"name": "d", "namespaces": ["d"], "purchased": leaver}]
    v1, v2 = _policy(first, 1), _policy(second, 2)
    history = PolicyHistory(
        (datetime(2026, 9, 1, tzinfo=UTC), SWITCH.to_pydatetime()), (v1, v2), True
    )
    used = pd.DataFrame(usage, columns=["hour", "member", "owner", "gpu_model", "gpu_seconds"])
    used["pod_uid"] = [f"pod-{i}" for i in range(len(used))]
    offered = pd.DataFrame(
        capacity, columns=["hour", "owner", "gpu_model", "gpu_seconds_available"]
    )
    report = build_month_report("2026-10", v2, used, offered, history=history)

    named = used.fillna({"member": UNATTRIBUTED, "owner": UNATTRIBUTED})
    offered = offered.fillna({"owner": UNATTRIBUTED})
    seen = set(named["member"]) | set(named["owner"]) | set(offered["owner"])
    members = NAMES + (["d"] if any(leaver.values()) else [])
    members += [UNATTRIBUTED] if UNATTRIBUTED in seen else []
    versions = [Version(None, first, D(217)), Version(SWITCH, second, D(527))]
    expected = reference_bill(named, offered, versions, members, OCTOBER_HOURS)

    assert report.members == members
    got = report.summary.set_index("member")
    for m in members:
        assert {k: got.loc[m, k] for k in expected["money"][m]} == expected["money"][m], m
    assert report.pool_cost == expected["pool_cost"]
    for payer in members:
        for payee in members:
            want = expected["cells"].get((payer, payee), D(0))
            assert report.settlement.loc[payer, payee] == want, (payer, payee)
