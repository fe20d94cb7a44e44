"""`fairpool meter`: flags, exit codes, and an unreachable Prometheus."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

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


def test_now_replays_the_hourly_run_of_that_time(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    nobody = f"http://127.0.0.1:{free_port()}"
    assert run(["--prometheus", nobody, "--ledger", url, "--now", "2026-10-01T05:10Z"]) == 1
    assert Ledger(url).pending_hours() == [datetime(2026, 10, 1, 4, tzinfo=UTC)]


def test_now_goes_with_one_hourly_run_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    args = [
        "--ledger",
        url,
        "--now",
        "2026-10-01T05:10Z",
        "--from",
        "2026-10-01",
        "--to",
        "2026-10-02",
    ]
    assert run(args) == 2
    assert "--now" in capsys.readouterr().err


def test_unreachable_ledger_database_is_a_clear_error_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    url = f"postgresql+psycopg://fairpool:s3cret@127.0.0.1:{port}/ledger"
    assert run(["--ledger", url, "--now", "2026-10-01T05:10Z"]) == 1
    err = capsys.readouterr().err
    assert f"ledger postgresql+psycopg://fairpool:***@127.0.0.1:{port}/ledger unreachable" in err
    assert "s3cret" not in err and "Traceback" not in err
    assert "metered by the next run" in err
