"""`build_month_report`: the steps of the bill, in order (see the package docstring)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pandas as pd

from policies.model import Policy, SharedFixedCost
from reports.costmodel.bill import LOST, BillParts, lost_versions, month_gpu_hours, month_prices
from reports.costmodel.capacity import hourly_capacity, idle_under_rules
from reports.costmodel.coverage import Coverage, local_days, measure_coverage, month_hour_index
from reports.costmodel.flags import Flag
from reports.costmodel.frames import (
    UNATTRIBUTED,
    capacity_per_owner,
    capacity_rows,
    normalise_hour_status,
    normalise_reclaim,
    normalise_usage,
)
from reports.costmodel.invoices import invoices_and_summary
from reports.costmodel.money import ZERO, cents
from reports.costmodel.months import canonical_month, month_bounds
from reports.costmodel.policy_history import PolicyHistory
from reports.costmodel.prices import PriceBook
from reports.costmodel.purchases import (
    purchase_detail,
    purchase_payments,
    purchased_gpu_hours,
    version_hours,
)
from reports.costmodel.rated import by_rate
from reports.costmodel.report import MonthReport, NoDataError
from reports.costmodel.settlement import (
    net_transfers,
    others_hardware_charges,
    settlement_cells,
    settlement_matrix,
)
from reports.costmodel.shared import shared_cost_shares
from reports.costmodel.tables import (
    consortium_table,
    daily_gpu_hours,
    efficiency,
    entitlement_vs_use,
    lent_flows,
    utilization_daily,
    utilization_flags,
)
from reports.costmodel.unattributed import (
    check_prices,
    set_aside,
    unattributed_flags,
    unattributed_table,
)
from reports.costmodel.unowned import owners_to_unowned, unowned_flags
from reports.costmodel.usage_split import CHARGED, policy_version_per_hour, split_usage


@dataclass(frozen=True)
class MonthInputs:
    """A month's usage, capacity, reclaim and hour status, normalised to its window."""

    month: str
    start: datetime
    end: datetime
    hours: int
    usage: pd.DataFrame
    capacity: pd.DataFrame
    lost: pd.DataFrame
    status: pd.DataFrame
    version_of_hour: pd.Series
    members: list[str]
    unattributed: pd.DataFrame
    """Usage without a GPU model: not priced, listed (`reports.costmodel.unattributed`)."""
    unpriced_capacity: pd.DataFrame
    hour_share: pd.Series | None = None
    """Per hour of the period, the part of it billed: 1 but where a simulated window
    starts or ends inside the hour (None: every hour whole)."""
    node_coverage: pd.DataFrame | None = None
    """Per hour and node: allocation, capacity and utilization coverage (the ledger)."""
    unowned: pd.DataFrame | None = None
    """Usage and capacity rows whose owner named no member then, as they were
    (`reports.costmodel.unowned`)."""

    def version_hours(self) -> pd.Series:
        """Policy version -> hours billed under it (purchases, shared fixed costs)."""
        share = self.hour_share
        if share is None:
            share = pd.Series(1.0, index=self.version_of_hour.index)
        return version_hours(self.version_of_hour, share)


def build_month_report(
    month: str,
    policy: Policy,
    usage: pd.DataFrame | None,
    capacity: pd.DataFrame | None,
    reclaim_lost: pd.DataFrame | None = None,
    hour_status: pd.DataFrame | None = None,
    *,
    policies: Mapping[int, Policy] | None = None,
    simulation_summary: Mapping[str, Any] | None = None,
    source: str = "ledger",
    history: PolicyHistory | None = None,
    node_coverage: pd.DataFrame | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> MonthReport:
    """The month's bill from its usage, capacity, GPU-seconds lost to reclaim and metering
    status per hour (`reports.costmodel.frames` names the columns); `policies` gives the
    prices of earlier policy versions the usage names. With `history`, every hour is
    priced at the version in force then, whatever version its usage rows name."""
    known = dict(policies or {})
    if history is not None:
        known |= history.by_version
    inputs = month_inputs(
        month, policy, usage, capacity, reclaim_lost, hour_status, history, window, known
    )
    if node_coverage is not None:
        inputs = replace(inputs, node_coverage=node_coverage)
    billed = inputs.version_hours()
    if history is not None:
        policy = _shared_costs_by_hours(policy, known, billed, month)
    elif window is not None:
        policy = _prorated(policy, float(billed.sum()), month)
    book = PriceBook(policy, known)
    purchased = purchased_gpu_hours(policy, book, billed)
    inputs = replace(inputs, members=_with_buyers(inputs.members, purchased))
    flags = check_prices(book, inputs.usage, inputs.capacity, inputs.version_of_hour)
    usage_split = split_usage(inputs.usage, policy, inputs.version_of_hour, book.by_version)
    capacity_hourly = hourly_capacity(
        inputs.capacity, usage_split, inputs.version_of_hour, policy.version, flags
    )
    hours = month_gpu_hours(usage_split, capacity_hourly, inputs.lost)
    prices = month_prices(
        book, usage_split, capacity_hourly, inputs.lost, inputs.version_of_hour, policy.version
    )
    purchases = purchase_payments(
        policy, book, hours.contributed_by_model, billed, inputs.members, flags
    )
    charges = others_hardware_charges(prices.charged)
    contribution = {m: float(hours.contributed.get(m, 0.0)) for m in inputs.members}
    use = {m: float(hours.used.get(m, 0.0)) for m in inputs.members}
    idle = idle_under_rules(
        policy, known, book, capacity_hourly, contribution, use, inputs.members, flags
    )
    shared = shared_cost_shares(policy, contribution, use, inputs.members, flags)
    parts = BillParts(
        policy=policy,
        members=inputs.members,
        hours_in_month=inputs.hours,
        versions=sorted(set(inputs.version_of_hour.unique().tolist())),
        book=book,
        hours=hours,
        prices=prices,
        charges=charges,
        purchases=purchases,
        shared=shared,
        has_data=_members_with_data(inputs, purchased),
        efficiency=efficiency(inputs.usage, inputs.members),
        pooling_dividend=_pooling_dividends(simulation_summary),
        rated_charges=by_rate(book, usage_split, ["member", "owner"], CHARGED),
        rated_capacity=by_rate(book, capacity_hourly, ["owner"], "billed"),
        rated_own=by_rate(book, usage_split, ["member"], "own"),
        rated_purchases=purchase_detail(policy, book, hours.contributed_by_model, billed),
        purchased_hours=purchased,
        idle_by_rule=idle,
        rated_within_purchase=by_rate(book, usage_split, ["member"], "within_purchase"),
        rated_lost=by_rate(
            book,
            lost_versions(inputs.lost, inputs.version_of_hour, policy.version),
            ["member"],
            LOST,
        ),
    )
    invoices, summary = invoices_and_summary(parts)
    coverage = measure_coverage(
        inputs.start, inputs.end, policy.billing.zone, inputs.usage, inputs.capacity, inputs.status
    )
    # The month's coverage totals first, per-day coverage last: there may be a flag for
    # every day of the month, and they are in the coverage table too; before the other
    # flags (unpriced usage, a member with no data), they pushed them off the page.
    flags = coverage.month_flags + flags + _data_flags(inputs, parts)
    report = _month_report(
        inputs, parts, (invoices, summary), (usage_split, capacity_hourly), coverage, flags, source
    )
    if history is not None:
        report.price_basis = history.describe(inputs.version_of_hour.tolist())
    else:
        # A simulation's bill has no history; its `policy.prices` was "" while the
        # ledger's said where its prices came from.
        report.price_basis = _price_basis(policy, report.policy_versions)
    report.flags.extend(utilization_flags(report.utilization_daily))
    report.flags.extend(coverage.day_flags)
    return report


def month_inputs(
    month: str,
    policy: Policy,
    usage: pd.DataFrame | None,
    capacity: pd.DataFrame | None,
    reclaim_lost: pd.DataFrame | None,
    hour_status: pd.DataFrame | None,
    history: PolicyHistory | None = None,
    window: tuple[datetime, datetime] | None = None,
    known: Mapping[int, Policy] | None = None,
) -> MonthInputs:
    """The month's window in the policy's time zone (cut to `window`, the hours a
    simulation covered, when given) and its inputs inside it, each owner that named no
    member of the version in force (`known`, else `policy`) in its hour unowned; raises
    NoDataError when there is neither usage nor capacity."""
    month = canonical_month(month)
    start, end = month_bounds(month, policy.billing.zone)
    share = None
    if window is not None:
        share = _hour_share(start, end, window)
        start, end = _within(start, end, window)
    u, no_model = set_aside(normalise_usage(usage, start, end, policy.version))
    cap_rows = capacity_rows(capacity, start, end)
    lost = set_aside(normalise_reclaim(reclaim_lost, start, end))[0]
    version_of_hour = policy_version_per_hour(u, start, end, policy.version)
    if history is not None:
        version_of_hour = history.versions(month_hour_index(start, end))
        u["policy_version"] = u["hour"].map(version_of_hour).astype("int64")
    by_version = known or {}
    u, unowned_used = owners_to_unowned(u, version_of_hour, by_version, policy)
    no_model = owners_to_unowned(no_model, version_of_hour, by_version, policy)[0]
    cap_rows, unowned_capacity = owners_to_unowned(cap_rows, version_of_hour, by_version, policy)
    cap, unpriced_capacity = set_aside(capacity_per_owner(cap_rows))
    if u.empty and cap.empty and no_model.empty:
        raise NoDataError(
            f"no usage and no capacity recorded for {month} "
            f"({start:%Y-%m-%d %H:%M}Z to {end:%Y-%m-%d %H:%M}Z): nothing to report"
        )
    return MonthInputs(
        month=month,
        start=start,
        end=end,
        hours=int((end - start) / timedelta(hours=1)),
        usage=u,
        capacity=cap,
        lost=lost,
        status=normalise_hour_status(hour_status, start, end),
        version_of_hour=version_of_hour,
        members=_member_order(policy, u["member"], u["owner"], cap["owner"], lost["member"]),
        unattributed=unattributed_table(no_model),
        unpriced_capacity=unpriced_capacity,
        hour_share=None if share is None else share.reindex(version_of_hour.index, fill_value=0.0),
        unowned=pd.concat([unowned_used, unowned_capacity], ignore_index=True),
    )


def _shared_costs_by_hours(
    policy: Policy, known: Mapping[int, Policy], billed: pd.Series, month: str
) -> Policy:
    """`policy` with the month's shared fixed costs as each hour's policy version holds
    them: a cost's `monthlyAmount` x the month's hours under a version that has it /
    the month's hours, summed over versions (split by its latest rule). A cost added on
    the 20th used to be paid for the whole month, one removed then not at all; a
    simulated window shorter than the month pays its part (`_prorated`), as before.
    `billed`: the hours billed under each version (`MonthInputs.version_hours`)."""
    start, end = month_bounds(month, policy.billing.zone)
    whole = int((end - start) / timedelta(hours=1))
    amounts: dict[str, Decimal] = {}
    latest: dict[str, SharedFixedCost] = {}
    for version, count in billed.items():
        in_force = known.get(int(version), policy)
        for cost in in_force.billing.shared_fixed_costs:
            part = cost.monthly_amount * Decimal(repr(float(count))) / whole
            amounts[cost.name] = amounts.get(cost.name, Decimal(0)) + part
            latest[cost.name] = cost
    for cost in policy.billing.shared_fixed_costs:
        latest[cost.name] = cost  # the rule of the policy reported with wins
    costs = [
        latest[name].model_copy(update={"monthly_amount": cents(amount)})
        for name, amount in amounts.items()
    ]
    billing = policy.billing.model_copy(update={"shared_fixed_costs": costs})
    return policy.model_copy(update={"spec": policy.spec.model_copy(update={"billing": billing})})


def _prorated(policy: Policy, hours: float, month: str) -> Policy:
    """`policy` with each shared fixed cost cut to `hours` of the month's hours (a
    simulated window shorter than the month pays its part, like its purchases, to the
    second: a window ending at 00:10 paid its last hour whole)."""
    start, end = month_bounds(month, policy.billing.zone)
    whole = int((end - start) / timedelta(hours=1))
    if hours >= whole:
        return policy
    part = Decimal(repr(float(hours)))
    costs = [
        c.model_copy(update={"monthly_amount": cents(c.monthly_amount * part / whole)})
        for c in policy.billing.shared_fixed_costs
    ]
    billing = policy.billing.model_copy(update={"shared_fixed_costs": costs})
    return policy.model_copy(update={"spec": policy.spec.model_copy(update={"billing": billing})})


def _hour_share(start: datetime, end: datetime, window: tuple[datetime, datetime]) -> pd.Series:
    """Per UTC hour of the month the window touches, the part of it inside both."""
    first, last = _within(start, end, window)
    hours = month_hour_index(first, last)
    lo = pd.Timestamp(max(start, window[0])).tz_convert("UTC")
    hi = pd.Timestamp(min(end, window[1])).tz_convert("UTC")
    ends = hours + pd.Timedelta(hours=1)
    starts = hours.to_series(index=hours)
    inside = (
        ends.to_series(index=hours).clip(upper=hi) - starts.clip(lower=lo)
    ).dt.total_seconds() / 3600.0
    return inside.clip(lower=0.0)


def _within(
    start: datetime, end: datetime, window: tuple[datetime, datetime]
) -> tuple[datetime, datetime]:
    """[start, end) cut to the hours `window` touches."""
    first = pd.Timestamp(window[0]).tz_convert("UTC").floor("h").to_pydatetime()
    last = pd.Timestamp(window[1]).tz_convert("UTC").ceil("h").to_pydatetime()
    cut = (max(start, first), min(end, last))
    if cut[0] >= cut[1]:
        raise NoDataError(
            f"the window {window[0]:%Y-%m-%d %H:%M}Z to {window[1]:%Y-%m-%d %H:%M}Z holds "
            f"no whole hour of the month ({start:%Y-%m-%d %H:%M}Z to {end:%Y-%m-%d %H:%M}Z)"
        )
    return cut


def _month_report(
    inputs: MonthInputs,
    parts: BillParts,
    bill: tuple[pd.DataFrame, pd.DataFrame],
    hourly: tuple[pd.DataFrame, pd.DataFrame],
    coverage: Coverage,
    flags: list[str],
    source: str,
) -> MonthReport:
    """The report: the invoices and summary `bill`, the pool's totals (checked to add up),
    the settlement, and the tables for the charts from the `hourly` usage split and
    capacity."""
    invoices, summary = bill
    usage_split, capacity_hourly = hourly
    policy, members = parts.policy, inputs.members
    capacity_total = sum(parts.prices.capacity_cost.values(), ZERO)
    shared_total = sum((cents(c.monthly_amount) for c in policy.billing.shared_fixed_costs), ZERO)
    pool_cost = capacity_total + shared_total
    totals_sum = sum(summary["total"], ZERO)
    if totals_sum != pool_cost:  # the rounding rule makes this impossible; guard it anyway
        raise AssertionError(f"member totals {totals_sum} != pool cost {pool_cost}")
    settlement = settlement_cells(parts.charges, parts.purchases)
    amounts: dict[str, Decimal] = {
        "capacity": capacity_total,
        "shared": shared_total,
        "pool": pool_cost,
        "totals": totals_sum,
        "charges": sum(parts.charges.values(), ZERO),
        "purchases": sum(parts.purchases.values(), ZERO),
    }
    day_of = local_days(month_hour_index(inputs.start, inputs.end), policy.billing.zone)
    return MonthReport(
        month=inputs.month,
        start=inputs.start,
        end=inputs.end,
        time_zone=policy.billing.time_zone,
        currency=policy.billing.currency,
        policy_name=policy.metadata.name,
        policy_versions=[int(v) for v in parts.versions],
        members=members,
        source=source,
        hours=inputs.hours,
        summary=summary,
        invoices=invoices,
        consortium=consortium_table(parts.hours, amounts, inputs.hours, coverage),
        settlement=settlement_matrix(settlement, members),
        net_settlement=net_transfers(settlement, members),
        daily_gpu_hours=daily_gpu_hours(usage_split, day_of, members, parts.hours.used),
        entitlement_vs_use=entitlement_vs_use(
            policy, usage_split, parts.hours, members, parts.purchased_hours
        ),
        lent_flows=lent_flows(usage_split, members),
        utilization_daily=utilization_daily(
            inputs.usage, usage_split, capacity_hourly, day_of, coverage, inputs.node_coverage
        ),
        coverage_daily=coverage.daily,
        flags=flags,
        pool_cost=pool_cost,
        capacity_cost=capacity_total,
        shared_fixed_cost=shared_total,
        complete=coverage.complete,
        idle_cost_rule=", ".join(p.rule.value for p in parts.idle_by_rule)
        or policy.billing.idle_cost.value,
        unattributed=inputs.unattributed,
    )


def _price_basis(policy: Policy, versions: list[int]) -> str:
    """Where the prices of a report without a policy history came from (one sentence)."""
    if set(versions) <= {policy.version}:
        return f"prices: policy {policy.metadata.name} (version {policy.version}) for every hour"
    listed = ", ".join(str(v) for v in versions)
    return f"prices: each hour at the newest policy version its usage names (versions {listed})"


def _members_with_data(inputs: MonthInputs, purchased: Mapping[tuple[str, str], float]) -> set[str]:
    """Members something was metered for, or that held purchased GPUs (an entitlement
    they pay for: a month without use is zero use, not missing data)."""
    return (
        set(inputs.usage["member"])
        | set(inputs.usage["owner"])
        | set(inputs.capacity["owner"])
        | set(inputs.lost["member"])
        | {member for (member, _), hours in purchased.items() if hours > 0}
    )


def _data_flags(inputs: MonthInputs, parts: BillParts) -> list[str]:
    """Members without data, and usage no member could be found for."""
    flags: list[str] = [
        Flag(f"no data for member {m} this month", [m])
        for m in inputs.members
        if m not in parts.has_data
    ]
    flags.extend(unattributed_flags(inputs.unattributed, inputs.unpriced_capacity))
    if inputs.unowned is not None:
        flags.extend(unowned_flags(inputs.unowned))
    # Unowned nodes are billed as `unattributed` too: this flag is about pods only.
    if (inputs.usage["member"] == UNATTRIBUTED).any():
        flags.append(
            f"{float(parts.hours.used.get(UNATTRIBUTED, 0.0)):.1f} GPU-hours used by pods no "
            "member could be found for (namespace not in the policy): shown as 'unattributed'"
        )
    return flags


def _with_buyers(members: list[str], purchased: Mapping[tuple[str, str], float]) -> list[str]:
    """`members` and every member that held purchased GPUs in some hour of the month,
    before `unattributed`. A buyer that left the pool mid-month (absent from the policy
    reported with) and used nothing was in no usage or capacity row: its purchase was
    paid to no host, and the hosts lost what it owed them for the hours it held it."""
    buyers = sorted({m for (m, _), hours in purchased.items() if hours > 0} - set(members))
    if not buyers:
        return members
    head = [m for m in members if m != UNATTRIBUTED]
    return head + buyers + [m for m in members if m == UNATTRIBUTED]


def _member_order(policy: Policy, *names: pd.Series) -> list[str]:
    """Policy members in policy order, then other names seen (sorted), `unattributed` last."""
    order = policy.member_names()
    extra: set[str] = set()
    for series in names:
        extra.update(str(v) for v in series.unique())
    extra -= set(order)
    tail = sorted(extra - {UNATTRIBUTED}) + ([UNATTRIBUTED] if UNATTRIBUTED in extra else [])
    return order + tail


def _pooling_dividends(summary: Mapping[str, Any] | None) -> dict[str, float]:
    """`pooling_dividend_gpu_hours` per member from a simulator's summary.json."""
    if not summary:
        return {}
    for key in ("members", "per_member", "by_member"):
        block = summary.get(key)
        if isinstance(block, Mapping):
            return {
                str(name): float(values["pooling_dividend_gpu_hours"])
                for name, values in block.items()
                if isinstance(values, Mapping)
                and values.get("pooling_dividend_gpu_hours") is not None
            }
        if isinstance(block, list):
            return {
                str(values.get("member") or values.get("name")): float(
                    values["pooling_dividend_gpu_hours"]
                )
                for values in block
                if isinstance(values, Mapping)
                and values.get("pooling_dividend_gpu_hours") is not None
            }
    return {}
