"""`fairpool meter`: flags, exit codes, and an unreachable Prometheus."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from policies.loader import DEFAULT_POLICY
from reports.ledger import Ledger
from scheduler.cli.main import main
from scheduler.cli.meter import parse_time
from tests.promtest import free_port


def run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(["meter", *args])
        raise SystemExit(0)
    return int(exc.value.code or 0)


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--from", "yesterday", "--to", "2026-10-02"], "--from"),
        (["--from", "2026-10-02", "--to", "2026-13-01"], "--to"),
        (["--from", "2026-10-02", "--to", "2026-10-01"], "--to"),
        (["--from", "2026-10-02"], "--from"),
        (["--reports-dir", "out"], "--reports-dir"),
        (["--watch", "--from", "2026-10-01", "--to", "2026-10-02"], "--watch"),
    ],
)
def test_bad_times_exit_2_naming_the_flag(
    args: list[str], flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["--ledger", f"sqlite:///{tmp_path / 'l.db'}", *args]) == 2
    assert flag in capsys.readouterr().err


def test_times_without_zone_are_utc() -> None:
    assert parse_time("2026-10-01T05:00", "--from") == datetime(2026, 10, 1, 5, tzinfo=UTC)
    assert parse_time("2026-10-01T07:00+02:00", "--from") == datetime(2026, 10, 1, 5, tzinfo=UTC)
    assert parse_time("2026-10-01T05:00Z", "--from") == datetime(2026, 10, 1, 5, tzinfo=UTC)


def test_unreachable_prometheus_leaves_hours_pending(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    nobody = f"http://127.0.0.1:{free_port()}"
    code = run(
        [
            "--prometheus",
            nobody,
            "--ledger",
            url,
            "--policy",
            str(DEFAULT_POLICY),
            "--from",
            "2026-10-01",
            "--to",
            "2026-10-01T03:00",
        ]
    )
    assert code == 1
    ledger = Ledger(url)
    assert len(ledger.pending_hours()) == 3
    assert (
        "cannot connect"
        in ledger.hour_status(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 2, tzinfo=UTC))[
            "last_error"
        ].iloc[0]
    )
    assert ledger.metering_runs()["hours_pending"].tolist() == [3]


def test_status_lists_pending_hours_and_forget_ends_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    h = datetime(2026, 10, 1, 3, tzinfo=UTC)
    with Ledger(url) as ledger:
        ledger.mark_pending(h, "prometheus unavailable: cannot connect")
        ledger.mark_pending(h, "prometheus unavailable: timed out")
        ledger.mark_pending(h.replace(hour=5), "no series in Prometheus for this hour")
    assert run(["status", "--ledger", url]) == 0
    out = capsys.readouterr().out
    assert "2 pending hour(s)" in out and "2026-10-01 03:00" in out and "timed out" in out
    assert "│        2 │" in out  # attempts

    forget = ["--ledger", url, "--forget", "2026-10-01T00:00", "2026-10-01T04:00"]
    assert run(forget) == 2
    assert "--reason" in capsys.readouterr().err
    assert run([*forget, "--reason", "cluster moved", "--by", "alice"]) == 0
    with Ledger(url) as ledger:
        assert ledger.pending_hours() == [h.replace(hour=5)]
        ranges = ledger.forgotten_ranges()
        status = ledger.hour_status(h.replace(hour=0), h.replace(hour=6)).set_index("hour")
    assert ranges[["hours", "forgotten_by", "reason"]].values.tolist() == [
        [4, "alice", "cluster moved"]
    ]
    assert status["status"].value_counts().to_dict() == {"forgotten": 4, "pending": 1}
    capsys.readouterr()
    assert run(["status", "--ledger", url]) == 0
    assert "1 pending hour(s)" in capsys.readouterr().out


def test_meter_without_policy_or_history_exits_2_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = tmp_path / "l.db"
    assert run(["--ledger", f"sqlite:///{ledger}", "--prometheus", "http://127.0.0.1:1"]) == 2
    assert "--policy: required" in capsys.readouterr().err
    assert not ledger.exists()
