"""The usage ledger: hour replacement is atomic and idempotent, times stay UTC."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import event

from policies.errors import InputError
from reports.ledger import (
    CAPACITY_COLUMNS,
    USAGE_COLUMNS,
    HourWrite,
    Ledger,
    MeteringRun,
    hours_between,
)

H0 = datetime(2026, 10, 5, 10, tzinfo=UTC)
H1 = H0 + timedelta(hours=1)


def usage(uids: list[str], seconds: float = 3600.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "pod_uid": uids,
            "namespace": ["lab-bio"] * len(uids),
            "pod": [f"pod-{u}" for u in uids],
            "job_id": ["job-1"] * len(uids),
            "member": ["lab-bio"] * len(uids),
            "owner": ["uni-north"] * len(uids),
            "gpu_model": ["NVIDIA-H100-80GB-HBM3"] * len(uids),
            "node": ["gpu-1"] * len(uids),
            "gpu_seconds": [seconds] * len(uids),
            "utilization": ([0.5] + [float("nan")] * (len(uids) - 1))[: len(uids)],
            "coverage": [1.0] * len(uids),
            "policy_version": [3] * len(uids),
            "source": ["fairpool"] * len(uids),
        }
    )


def capacity() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "node": ["gpu-1"],
            "owner": ["uni-north"],
            "gpu_model": ["NVIDIA-H100-80GB-HBM3"],
            "gpu_seconds_available": [8 * 3600.0],
            "coverage": [1.0],
        }
    )


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with Ledger(ledger_url) as opened:
        yield opened


def test_replace_hour_round_trips_with_utc_hours(ledger: Ledger) -> None:
    ledger.replace_hour(H0, usage(["a", "b"]), capacity(), None, coverage=0.9)
    frame = ledger.usage_frame(H0, H1)
    assert list(frame.columns) == USAGE_COLUMNS
    assert len(frame) == 2
    assert str(frame["hour"].dt.tz) == "UTC"
    assert frame["hour"].iloc[0] == pd.Timestamp(H0)
    assert frame["gpu_seconds"].sum() == 7200.0
    # Unknown utilization stays unknown, never zero.
    assert frame.set_index("pod_uid").loc["b", "utilization"] != 0.0
    assert pd.isna(frame.set_index("pod_uid").loc["b", "utilization"])
    cap = ledger.capacity_frame(H0, H1)
    assert list(cap.columns) == CAPACITY_COLUMNS
    assert cap["gpu_seconds_available"].tolist() == [28800.0]
    status = ledger.hour_status(H0, H1)
    assert status["status"].tolist() == ["metered"]
    assert status["coverage"].tolist() == [0.9]


def test_rerun_replaces_never_duplicates(ledger: Ledger) -> None:
    ledger.replace_hour(H0, usage(["a", "b"]), capacity(), None, coverage=1.0)
    ledger.replace_hour(H0, usage(["a"], seconds=1800.0), capacity(), None, coverage=1.0)
    frame = ledger.usage_frame(H0, H1)
    assert frame["pod_uid"].tolist() == ["a"]
    assert frame["gpu_seconds"].tolist() == [1800.0]
    assert ledger.hour_status(H0, H1)["attempts"].tolist() == [2]


def test_failed_replace_leaves_previous_rows(ledger: Ledger) -> None:
    ledger.replace_hour(H0, usage(["a"]), capacity(), None, coverage=1.0)
    bad = usage(["x", "x"])  # duplicate primary key: the insert fails mid-transaction
    with pytest.raises(Exception):  # noqa: B017 - any database error will do
        ledger.replace_hour(H0, bad, capacity(), None, coverage=1.0)
    assert ledger.usage_frame(H0, H1)["pod_uid"].tolist() == ["a"]


def test_pending_then_metered(ledger: Ledger) -> None:
    ledger.mark_pending(H0, "connection refused")
    ledger.mark_pending(H0, "connection refused again")
    assert ledger.pending_hours() == [H0]
    status = ledger.hour_status(H0, H1)
    assert status["attempts"].tolist() == [2]
    assert status["last_error"].tolist() == ["connection refused again"]
    ledger.replace_hour(H0, usage(["a"]), capacity(), None, coverage=1.0)
    assert ledger.pending_hours() == []
    assert ledger.hour_status(H0, H1)["attempts"].tolist() == [3]


def test_failure_after_metering_keeps_hour_metered(ledger: Ledger) -> None:
    ledger.replace_hour(H0, usage(["a"]), capacity(), None, coverage=1.0)
    ledger.mark_pending(H0, "prometheus down")
    assert ledger.pending_hours() == []
    assert len(ledger.usage_frame(H0, H1)) == 1


def test_reclaim_lost_and_runs(ledger: Ledger) -> None:
    lost = pd.DataFrame(
        {"member": ["physics"], "gpu_model": ["NVIDIA-H100-80GB-HBM3"], "gpu_seconds_lost": [90.0]}
    )
    ledger.replace_hour(H0, usage([]), capacity(), lost, coverage=1.0)
    assert ledger.reclaim_lost_frame(H0, H1)["gpu_seconds_lost"].tolist() == [90.0]
    run_id = ledger.record_run(
        MeteringRun(H0, H1, H0, H1, hours_ok=1, hours_pending=0, mean_coverage=1.0)
    )
    assert run_id == 1
    assert ledger.metering_runs()["hours_ok"].tolist() == [1]


def test_reclaim_lost_keeps_one_row_per_cause(ledger: Ledger) -> None:
    model = "NVIDIA-H100-80GB-HBM3"
    lost = pd.DataFrame(
        {
            "member": ["physics"] * 3,
            "gpu_model": [model] * 3,
            "cause": ["entitlement", "consolidation", ""],
            "gpu_seconds_lost": [90.0, 30.0, 5.0],
        }
    )
    ledger.replace_hour(H0, usage([]), capacity(), lost, coverage=1.0)
    frame = ledger.reclaim_lost_frame(H0, H1).sort_values("gpu_seconds_lost")
    assert frame["cause"].tolist() == ["", "consolidation", "entitlement"]
    assert frame["gpu_seconds_lost"].tolist() == [5.0, 30.0, 90.0]
    # A cause fairpool does not know is refused, and the hour's rows are kept.
    bad = lost.assign(cause=["reclaim", "entitlement", ""])
    with pytest.raises(InputError, match="reclaim_lost cause 'reclaim' is not one of"):
        ledger.replace_hour(H0, usage([]), capacity(), bad, coverage=1.0)
    assert len(ledger.reclaim_lost_frame(H0, H1)) == 3


def test_bad_hours_are_input_errors(ledger: Ledger) -> None:
    with pytest.raises(InputError, match="no time zone"):
        ledger.replace_hour(datetime(2026, 10, 5, 10), usage([]), capacity(), None, 1.0)
    with pytest.raises(InputError, match="start of an hour"):
        ledger.replace_hour(H0 + timedelta(minutes=5), usage([]), capacity(), None, 1.0)
    with pytest.raises(InputError, match="lack column"):
        ledger.replace_hour(H0, usage([]).drop(columns=["member"]), capacity(), None, 1.0)


def test_hours_between() -> None:
    assert hours_between(H0, H0 + timedelta(hours=3)) == [
        H0,
        H1,
        H0 + timedelta(hours=2),
    ]


def test_two_meters_on_the_same_hours_leave_one_copy_each(ledger_url: str) -> None:
    """Two meters (each its own engine, as two processes would be) meter the same day at
    once, while a third records failures on it: every hour ends with exactly one meter's
    rows, whole, and every attempt counted."""
    hours = [H0 + timedelta(hours=i) for i in range(24)]
    copies = {
        "first": usage(["a", "b"], seconds=3600.0),
        "second": usage(["a", "b", "c"], seconds=1800.0),
    }
    Ledger(ledger_url).close()
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def meter(name: str) -> None:
        try:
            with Ledger(ledger_url) as own:
                start.wait()
                order = hours if name == "first" else hours[::-1]
                for hour in order:
                    own.replace_hour(hour, copies[name], capacity(), None, coverage=1.0)
        except BaseException as exc:
            errors.append(exc)

    def failures() -> None:
        try:
            with Ledger(ledger_url) as own:
                start.wait()
                for hour in hours:
                    own.mark_pending(hour, "prometheus timed out")
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=meter, args=("first",)),
        threading.Thread(target=meter, args=("second",)),
        threading.Thread(target=failures),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with Ledger(ledger_url) as ledger:
        frame = ledger.usage_frame(hours[0], hours[-1] + timedelta(hours=1))
        for hour in hours:
            rows = frame[frame["hour"] == pd.Timestamp(hour)]
            kept = (sorted(rows["pod_uid"]), rows["gpu_seconds"].sum())
            assert kept in ((["a", "b"], 7200.0), (["a", "b", "c"], 5400.0)), hour
        capacity_rows = ledger.capacity_frame(hours[0], hours[-1] + timedelta(hours=1))
        assert capacity_rows["gpu_seconds_available"].sum() == 24 * 8 * 3600.0
        status = ledger.hour_status(hours[0], hours[-1] + timedelta(hours=1))
        assert status["status"].tolist() == ["metered"] * 24
        assert status["attempts"].tolist() == [3] * 24


def test_replace_hours_writes_a_chunk_whole_or_not_at_all(ledger: Ledger) -> None:
    H2 = H1 + timedelta(hours=1)
    ledger.replace_hour(H0, usage(["old"]), capacity(), None, coverage=1.0)
    # A failure in the chunk's last hour: no hour of the chunk changes.
    with pytest.raises(Exception):  # noqa: B017 - any database error will do
        ledger.replace_hours(
            [
                HourWrite(H0, usage(["a"]), capacity(), None, 1.0),
                HourWrite(H1, usage(["x", "x"]), capacity(), None, 1.0),
            ]
        )
    assert ledger.usage_frame(H0, H2)["pod_uid"].tolist() == ["old"]
    assert ledger.hour_status(H0, H2)["attempts"].tolist() == [1]
    ledger.replace_hours(
        [
            HourWrite(H0, usage(["a", "b"]), capacity(), None, 0.5),
            HourWrite(H1, usage(["c"], seconds=60.0), capacity(), None, 1.0),
        ]
    )
    frame = ledger.usage_frame(H0, H2)
    assert list(zip(frame["hour"], frame["pod_uid"], strict=True)) == [
        (pd.Timestamp(H0), "a"),
        (pd.Timestamp(H0), "b"),
        (pd.Timestamp(H1), "c"),
    ]
    assert frame["gpu_seconds"].tolist() == [3600.0, 3600.0, 60.0]
    status = ledger.hour_status(H0, H2)
    assert status["attempts"].tolist() == [2, 1]
    assert status["coverage"].tolist() == [0.5, 1.0]
    assert len(ledger.capacity_frame(H0, H2)) == 2
    with pytest.raises(InputError, match="twice"):
        ledger.replace_hours([HourWrite(H0, usage([]), capacity(), None, 1.0)] * 2)


def test_forget_refuses_a_name_longer_than_the_ledger_holds(ledger: Ledger) -> None:
    """Both backends alike: PostgreSQL refused a longer name with a DataError (a
    traceback), SQLite kept it whole."""
    with pytest.raises(InputError, match="at most 253 characters"):
        ledger.forget(H0, H1, "a" * 254, "cluster moved")
    assert ledger.forgotten_ranges().empty
    assert ledger.forget(H0, H1, "a" * 253, "cluster moved") == [H0]
    assert ledger.forgotten_ranges()["forgotten_by"].tolist() == ["a" * 253]


def test_forget_waits_for_a_meter_writing_an_hour_of_its_range(ledger_url: str) -> None:
    """An admin gives up a range while the hourly job writes one of its hours: the hour
    ends metered, and the rest of the range given up. (On PostgreSQL `forget` locked only
    the range's first hour and failed with a duplicate key on the hour the meter wrote.)"""
    Ledger(ledger_url).close()
    written, go = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    given_up: list[datetime] = []

    def before_commit(_conn: object) -> None:
        written.set()
        go.wait(10)

    def meter() -> None:
        try:
            with Ledger(ledger_url) as own:
                event.listen(own.engine, "commit", before_commit)
                own.replace_hour(H1, usage(["a"]), capacity(), None, coverage=1.0)
        except BaseException as exc:
            errors.append(exc)

    def forget() -> None:
        try:
            with Ledger(ledger_url) as own:
                given_up.extend(own.forget(H0, H1 + timedelta(hours=1), "alice", "moved"))
        except BaseException as exc:
            errors.append(exc)

    metering = threading.Thread(target=meter)
    metering.start()
    assert written.wait(10)
    forgetting = threading.Thread(target=forget)
    forgetting.start()
    forgetting.join(0.5)  # it reaches the hour the meter holds, and waits there
    go.set()
    metering.join()
    forgetting.join()
    assert errors == []
    assert given_up == [H0]
    with Ledger(ledger_url) as ledger:
        status = ledger.hour_status(H0, H1 + timedelta(hours=1))
        assert status["status"].tolist() == ["forgotten", "metered"]
