"""`fairpool meter`: flags, exit codes, and an unreachable Prometheus."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from policies.loader import DEFAULT_POLICY
from reports.ledger import Ledger
from reports.metering import prom_source
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
        # Listed hour by hour, year 1 to 9999 ran until killed.
        (["--from", "1971-01-01", "--to", "2199-12-31"], "--from/--to: 1971-01-01T00:00+00:00"),
        (["--from", "2025-01-01", "--to", "2026-01-03"], "more than 366 days"),
        (["--forget", "1971-01-01", "2199-12-31", "--reason", "r"], "more than 366 days"),
        # Year 1 reached pandas' overflow in the ledger's tables.
        (["--from", "0001-01-01", "--to", "0001-01-02"], "--from: '0001-01-01' is not in the"),
        (["--forget", "1969-12-31", "1970-01-02", "--reason", "r"], "--forget: '1969-12-31'"),
        (["--now", "9999-12-31T00:00"], "--now: '9999-12-31T00:00' is not in the years"),
        # Would have metered open hours empty, for good.
        (["--now", "2199-01-01T00:00"], "--now: 2199-01-01T00:00 is later than the clock"),
        # An hour waits max-gap to be metered: `inf` metered nothing, ever.
        (["--max-gap", "inf"], "--max-gap: at most 3,600 s (an hour), got inf"),
        (["--max-gap", "nan"], "--max-gap: at most 3,600 s"),
        (["--chunk-hours", "100000000"], "--chunk-hours: from 1 to 744"),
        (["--scrape-interval", "7"], "--scrape-interval: 7.0 must divide an hour"),
        (["--scrape-interval", "0.0009"], "--scrape-interval: 0.0009 must be whole milli"),
        (["--scrape-interval", "nan"], "--scrape-interval: nan must be a positive"),
        # --forget meters nothing: these were dropped, and no hourly job ran.
        (["--forget", "2026-10-01", "2026-10-02", "--reason", "r", "--watch"], "--watch: not"),
        (
            ["--forget", "2026-10-01", "2026-10-02", "--reason", "r", "--from", "2026-10-01"],
            "--from: not with --forget",
        ),
        (["--forget", "2026-10-01", "2026-10-02", "--reason", "r", "--to", "2026-10-02"], "--to"),
        (["--forget", "2026-10-01", "2026-10-02", "--reason", "r", "--now", "2026-10-03"], "--now"),
        (["--forget", "2026-10-01", "2026-10-02", "--reason", "r", "--by", " "], "--by: must"),
        (["--forget", "2026-10-01", "2026-10-02", "--reason", "r", "--by", "a" * 254], "--by: at"),
    ],
)
def test_bad_times_exit_2_naming_the_flag(
    args: list[str], flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["--ledger", f"sqlite:///{tmp_path / 'l.db'}", *args]) == 2
    assert flag in capsys.readouterr().err


@pytest.mark.parametrize("interval", ["7.2", "4.8", "0.9"])
def test_scrape_intervals_that_divide_an_hour_are_taken(
    interval: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Float `%` refused them; the run goes on to the next check (no policy anywhere).
    assert run(["--ledger", f"sqlite:///{tmp_path / 'l.db'}", "--scrape-interval", interval]) == 2
    err = capsys.readouterr().err
    assert "--scrape-interval" not in err
    assert "--policy: required" in err


def test_forget_refuses_hours_not_closed_yet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An hour given up before it closes would never be metered.
    now = datetime.now(UTC)
    url = f"sqlite:///{tmp_path / 'l.db'}"
    until = (now + timedelta(days=2)).isoformat()
    args = ["--ledger", url, "--forget", (now - timedelta(days=1)).isoformat(), until]
    assert run([*args, "--reason", "r"]) == 2
    assert "reaches into the current hour or later" in capsys.readouterr().err


def test_times_without_zone_are_utc() -> None:
    assert parse_time("2026-10-01T05:00", "--from") == datetime(2026, 10, 1, 5, tzinfo=UTC)
    assert parse_time("2026-10-01T07:00+02:00", "--from") == datetime(2026, 10, 1, 5, tzinfo=UTC)
    assert parse_time("2026-10-01T05:00Z", "--from") == datetime(2026, 10, 1, 5, tzinfo=UTC)


def test_unreachable_prometheus_exits_1_in_one_line_and_records_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = tmp_path / "l.db"
    nobody = f"http://127.0.0.1:{free_port()}"
    argv = ["--prometheus", nobody, "--ledger", f"sqlite:///{ledger}", "--policy"]
    code = run([*argv, str(DEFAULT_POLICY), "--from", "2026-10-01", "--to", "2026-10-01T03:00"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"error: Prometheus {nobody}: cannot connect" in err
    assert "Traceback" not in err and len([x for x in err.splitlines() if "error" in x]) == 1
    assert not ledger.exists()


@pytest.mark.parametrize(
    "url", ["localhost:9090", "http://[bad", "ftp://127.0.0.1:9090", "http://x:port"]
)
def test_malformed_prometheus_url_exits_2_naming_it(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = tmp_path / "l.db"
    argv = ["--prometheus", url, "--ledger", f"sqlite:///{ledger}", "--policy"]
    assert run([*argv, str(DEFAULT_POLICY), "--from", "2026-10-01", "--to", "2026-10-02"]) == 2
    err = capsys.readouterr().err
    assert "--prometheus" in err and url in err and "Traceback" not in err
    assert not ledger.exists()


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


def test_a_server_that_is_not_prometheus_exits_1_saying_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/wrong"
    ledger = tmp_path / "l.db"
    try:
        argv = ["--prometheus", url, "--ledger", f"sqlite:///{ledger}", "--policy"]
        assert run([*argv, str(DEFAULT_POLICY), "--from", "2026-10-01", "--to", "2026-10-02"]) == 1
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert f"error: Prometheus {url}: HTTP 501" in err and "not a Prometheus API" in err
    assert not ledger.exists()


def test_now_replays_the_hourly_run_of_that_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nobody answers at that port: the retries' backoff would only add seconds of sleep.
    monkeypatch.setattr(prom_source, "RETRY_BACKOFF_S", 0.0)
    url = f"sqlite:///{tmp_path / 'l.db'}"
    nobody = f"http://127.0.0.1:{free_port()}"
    argv = ["--prometheus", nobody, "--ledger", url, "--policy", str(DEFAULT_POLICY)]
    # The hourly run keeps what it cannot read pending (the next run retries it), as --watch does.
    assert run([*argv, "--now", "2026-10-01T05:10Z"]) == 1
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
    assert (
        run(["--ledger", url, "--policy", str(DEFAULT_POLICY), "--now", "2026-10-01T05:10Z"]) == 1
    )
    err = capsys.readouterr().err
    assert (
        f"ledger postgresql+psycopg://fairpool:***@127.0.0.1:{port}/ledger: cannot connect" in err
    )
    assert "s3cret" not in err and "Traceback" not in err
