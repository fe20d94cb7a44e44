"""Usage no source could attribute never blocks the month; a GPU model without a price
is a policy error that names where it was used."""

from __future__ import annotations

import pandas as pd
import pytest

from reports.costmodel import build_month_report, check_invariants
from reports.costmodel.unattributed import PriceError
from tests.unit.test_costmodel import CAPACITY, H0, H1, USAGE, make_policy, totals, usage_frame


def stray_pod() -> pd.DataFrame:
    stray = usage_frame([(H1, "unattributed", "unattributed", "unattributed", 12.0)])
    stray["namespace"], stray["pod"], stray["node"] = "misc", "stray", "unattributed"
    stray["pod_uid"] = "stray-uid"
    return pd.concat([USAGE, stray], ignore_index=True)


def test_pod_without_node_or_model_is_listed_and_the_month_is_billed() -> None:
    with_stray = build_month_report("2026-10", make_policy(), stray_pod(), CAPACITY)
    without = build_month_report("2026-10", make_policy(), USAGE, CAPACITY)
    check_invariants(with_stray)
    assert totals(with_stray) == totals(without)
    table = with_stray.unattributed
    assert table[["namespace", "pod", "gpu_seconds"]].values.tolist() == [["misc", "stray", 12.0]]
    assert pd.Timestamp(table["hour"].iloc[0]) == H1
    assert any(
        "misc/stray" in f and "2026-10-10 01:00Z" in f and "12 GPU-seconds" in f
        for f in with_stray.flags
    )


def test_model_without_price_names_the_model_and_first_pod() -> None:
    usage = usage_frame([(H1, "a", "a", "B200", 60.0), (H0, "a", "a", "B200", 30.0)])
    usage["pod"] = ["late", "early"]
    usage["node"] = ["n-late", "n-early"]
    with pytest.raises(PriceError) as raised:
        build_month_report("2026-10", make_policy(), usage, CAPACITY)
    message = str(raised.value)
    assert "'B200'" in message and "a/early" in message and "n-early" in message
    assert "2026-10-10 00:00Z" in message


def test_model_without_price_in_a_simulations_rows_names_the_job() -> None:
    """A simulation's usage rows name jobs, not pods, and its policy has no version."""
    usage = usage_frame([(H0, "a", "a", "B200", 30.0)])
    usage["pod"], usage["job_id"], usage["node"] = "", "job-000184", "n-1"
    with pytest.raises(PriceError) as raised:
        build_month_report("2026-10", make_policy(), usage, CAPACITY)
    message = str(raised.value)
    assert message.startswith("the policy: GPU model 'B200' has no price"), message
    assert "first used by job job-000184 of a on node n-1" in message


def node_coverage(utilization: float) -> pd.DataFrame:
    return pd.DataFrame(
        [(h, n, 1.0, 1.0, utilization) for h in (H0, H1) for n in ("a-node", "b-node")],
        columns=["hour", "node", "allocation", "capacity", "utilization"],
    )


@pytest.mark.parametrize(
    ("found", "shown", "flag"),
    [(0.2, None, "n/a on 1 day(s)"), (0.7, 0.5, "partial on 1 day(s)"), (1.0, 0.5, None)],
)
def test_utilization_is_na_or_partial_where_dcgm_coverage_is_low(
    found: float, shown: float | None, flag: str | None
) -> None:
    report = build_month_report(
        "2026-10", make_policy(), USAGE, CAPACITY, node_coverage=node_coverage(found)
    )
    day = report.utilization_daily.dropna(subset=["utilization_coverage"]).iloc[0]
    assert day["utilization_coverage"] == pytest.approx(found)
    if shown is None:
        assert pd.isna(day["utilization"])
    else:
        assert day["utilization"] == pytest.approx(shown)
    utilization_flags = [f for f in report.flags if f.startswith("utilization (DCGM)")]
    if flag is None:
        assert utilization_flags == []
    else:
        assert len(utilization_flags) == 1 and flag in utilization_flags[0]
