"""Billing months in the policy's time zone (Europe/Paris across the October DST change)
and the coverage flags per local day."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from policies.loader import parse_policy
from reports.costmodel import build_month_report
from reports.costmodel.months import MonthError, month_bounds, month_hours, month_of, previous_month
from reports.costmodel.policy_history import PolicyHistory
from tests.unit.test_costmodel import CAPACITY, USAGE, make_policy, make_policy_text, usage_frame

PARIS = ZoneInfo("Europe/Paris")


def test_october_2026_in_paris_has_745_hours() -> None:
    start, end = month_bounds("2026-10", PARIS)
    assert start == datetime(2026, 9, 30, 22, tzinfo=UTC)
    assert end == datetime(2026, 10, 31, 23, tzinfo=UTC)
    assert len(month_hours("2026-10", PARIS)) == 745
    assert len(month_hours("2026-03", PARIS)) == 743
    assert len(month_hours("2026-10", ZoneInfo("UTC"))) == 744


def test_a_month_in_a_half_hour_zone_runs_from_the_first_utc_hour_in_it() -> None:
    # Local midnight in Kolkata (+05:30) is 18:30 UTC: the hour 18:00-19:00 UTC starts
    # on September 30th there (23:30), the one at 19:00 on October 1st (00:30).
    kolkata = ZoneInfo("Asia/Kolkata")
    start, end = month_bounds("2026-10", kolkata)
    assert (start, end) == (
        datetime(2026, 9, 30, 19, tzinfo=UTC),
        datetime(2026, 10, 31, 19, tzinfo=UTC),
    )
    assert month_of(start, kolkata) == "2026-10"
    assert month_of(datetime(2026, 9, 30, 18, tzinfo=UTC), kolkata) == "2026-09"
    assert len(month_hours("2026-10", kolkata)) == 744
    policy = parse_policy(make_policy_text().replace("Europe/Paris", "Asia/Kolkata"))
    hour = pd.Timestamp("2026-10-10T00:00Z")
    usage = usage_frame([(hour, "a", "b", "H", 3600.0)])
    status = pd.DataFrame({"hour": [hour], "status": ["metered"], "coverage": [1.0]})
    # With the ledger's policy history, as `fairpool report` runs it: it used to fail.
    report = build_month_report(
        "2026-10", policy, usage, CAPACITY, hour_status=status, history=PolicyHistory.only(policy)
    )
    assert report.hours == 744
    assert not report.complete
    assert report.flags[0] == "data missing for 743 hours of 744 this month"


@pytest.mark.parametrize(
    "bad",
    # Year 1 and 9999 were overflow tracebacks in `fairpool report`.
    ["2026-13", "2026-1", "26-10", "october", "2026-00", "", "0001-01", "9999-12", "1969-12"],
)
def test_bad_month_names_the_option(bad: str) -> None:
    with pytest.raises(MonthError, match="--month"):
        month_bounds(bad, PARIS)


def test_the_years_a_month_may_be_in() -> None:
    assert month_bounds("1970-01", ZoneInfo("UTC"))[0] == datetime(1970, 1, 1, tzinfo=UTC)
    assert month_bounds("2200-12", ZoneInfo("UTC"))[1] == datetime(2201, 1, 1, tzinfo=UTC)
    with pytest.raises(MonthError, match="'2201-01' is not in the years 1970 to 2200"):
        month_bounds("2201-01", PARIS)


def test_hours_are_attributed_by_their_utc_start() -> None:
    assert month_of(datetime(2026, 9, 30, 21, tzinfo=UTC), PARIS) == "2026-09"
    assert month_of(datetime(2026, 9, 30, 22, tzinfo=UTC), PARIS) == "2026-10"
    assert month_of(datetime(2026, 10, 31, 22, tzinfo=UTC), PARIS) == "2026-10"
    assert month_of(datetime(2026, 10, 31, 23, tzinfo=UTC), PARIS) == "2026-11"
    assert previous_month(datetime(2026, 11, 1, 5, tzinfo=UTC), PARIS) == "2026-10"
    # 2026-10-31T23:30Z is already November 1st in Paris: the job reports October.
    assert previous_month(datetime(2026, 10, 31, 23, 30, tzinfo=UTC), PARIS) == "2026-10"


def test_cost_model_cuts_the_month_at_local_midnight() -> None:
    edge = usage_frame(
        [
            (pd.Timestamp("2026-09-30T21:00Z"), "a", "a", "H", 3600.0),  # September
            (pd.Timestamp("2026-09-30T22:00Z"), "a", "a", "H", 1800.0),  # October
            (pd.Timestamp("2026-10-31T22:00Z"), "b", "b", "A", 900.0),  # October
            (pd.Timestamp("2026-10-31T23:00Z"), "b", "b", "A", 3600.0),  # November
        ]
    )
    report = build_month_report("2026-10", make_policy(), edge, CAPACITY)
    used = report.summary.set_index("member")["used_gpu_hours"]
    assert used["a"] == 0.5
    assert used["b"] == 0.25
    days = report.coverage_daily.set_index("day")["hours"]
    assert days[pd.Timestamp("2026-10-25").date()] == 25  # the DST day
    assert days[pd.Timestamp("2026-10-01").date()] == 24
    assert int(days.sum()) == 745
    daily = report.daily_gpu_hours
    assert daily.loc[pd.Timestamp("2026-10-01").date(), "a"] == 0.5
    assert daily.loc[pd.Timestamp("2026-10-31").date(), "b"] == 0.25


def full_month_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    hours = pd.date_range("2026-09-30T22:00Z", "2026-10-31T22:00Z", freq="h")
    usage = usage_frame([(h, "a", "a", "H", 3600.0) for h in hours])
    capacity = pd.DataFrame(
        [(h, "a", "H", 7200.0) for h in hours],
        columns=["hour", "owner", "gpu_model", "gpu_seconds_available"],
    )
    return usage, capacity


def test_complete_month_has_no_coverage_flags() -> None:
    usage, capacity = full_month_frames()
    report = build_month_report("2026-10", make_policy(shared="[]"), usage, capacity)
    assert report.complete
    assert report.flags == ["no data for member b this month", "no data for member c this month"]


def test_pending_and_partial_hours_are_flagged_per_local_day() -> None:
    usage, capacity = full_month_frames()
    hours = pd.date_range("2026-09-30T22:00Z", "2026-10-31T22:00Z", freq="h")
    status = pd.DataFrame({"hour": hours, "status": "metered", "coverage": 1.0})
    pending = pd.to_datetime(["2026-10-14T08:00Z", "2026-10-14T09:00Z", "2026-10-14T10:00Z"])
    status.loc[status["hour"].isin(pending), "status"] = "pending"
    status.loc[status["hour"].isin(pending), "coverage"] = None
    # the ledger has no rows for pending hours
    usage = usage[~usage["hour"].isin(pending)]
    capacity = capacity[~capacity["hour"].isin(pending)]
    # 2026-10-20T23:00Z is 2026-10-21 01:00 in Paris: partial data that day
    usage.loc[usage["hour"] == pd.Timestamp("2026-10-20T23:00Z"), "coverage"] = 0.75
    # an hour never attempted at all is missing too
    status = status[status["hour"] != pd.Timestamp("2026-10-30T12:00Z")]
    report = build_month_report(
        "2026-10", make_policy(shared="[]"), usage, capacity, hour_status=status
    )
    assert not report.complete
    assert "data missing for 3 hours on 2026-10-14" in report.flags
    assert "data missing for 1 hour on 2026-10-30" in report.flags
    assert "partial data (coverage down to 75%) for 1 hour on 2026-10-21" in report.flags
    assert report.flags[0] == "data missing for 4 hours of 745 this month"
    daily = report.coverage_daily.set_index("day")
    assert daily.loc[pd.Timestamp("2026-10-14").date(), "hours_missing"] == 3
    assert daily.loc[pd.Timestamp("2026-10-21").date(), "hours_partial"] == 1
    consortium = report.consortium.set_index("item")["gpu_hours"]
    assert consortium["hours missing"] == 4
    assert consortium["hours partial"] == 1


def test_a_month_given_with_spaces_is_kept_without_them() -> None:
    # " 2026-10" was checked stripped, then kept as given (the report's month, its folder).
    report = build_month_report(" 2026-10 ", make_policy(shared="[]"), USAGE, CAPACITY)
    assert report.month == "2026-10"


@pytest.mark.parametrize(
    ("coverage", "said"),
    [(0.996, "99.6%"), (0.9999999, "99.9%"), (0.92, "92%"), (0.5, "50%"), (0.1234, "12.3%")],
)
def test_a_partial_hour_is_never_said_to_be_fully_covered(coverage: float, said: str) -> None:
    # Rounded to a whole percent, an hour at 99.6 % was "partial data (coverage down to
    # 100%)": floored to a tenth, at most 99.9 %.
    usage, capacity = full_month_frames()
    usage.loc[usage["hour"] == pd.Timestamp("2026-10-05T10:00Z"), "coverage"] = coverage
    report = build_month_report("2026-10", make_policy(shared="[]"), usage, capacity)
    assert f"partial data (coverage down to {said}) for 1 hour on 2026-10-05" in report.flags


def test_days_without_any_data_have_no_utilization_not_zero() -> None:
    report = build_month_report("2026-10", make_policy(), USAGE, CAPACITY)
    util = report.utilization_daily.set_index("day")
    assert pd.isna(util.loc[pd.Timestamp("2026-10-05").date(), "allocation"])
    assert util.loc[pd.Timestamp("2026-10-10").date(), "allocation"] == pytest.approx(7 / 8)
