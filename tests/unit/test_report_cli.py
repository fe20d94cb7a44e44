"""`fairpool report` and the monthly report job, against a real SQLite ledger."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import click
import pandas as pd
import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from policies.loader import DEFAULT_POLICY, load_policy
from reports.ledger import Ledger
from reports.sources.monthly_job import (
    ledger_month_report,
    monthly_trigger,
    report_due,
    run_monthly_report,
    schedule_monthly_report,
)
from reports.sources.simulation import busiest_month, write_simulated_report
from reports.sources.synthetic import demo_nodes, synthetic_month
from scheduler.cli.main import cli, main

DEMO = load_policy()  # Europe/Paris
DEMO_FILE = str(DEFAULT_POLICY)


def fill_ledger(url: str, hours: list[pd.Timestamp]) -> None:
    """Two hours of a known scenario in the demo consortium, written hour by hour."""
    with Ledger(url) as ledger:
        for hour in hours:
            usage = pd.DataFrame(
                [
                    ("u1", "uni-north", "uni-north", "NVIDIA-H100-80GB-HBM3", 3600.0),
                    ("u2", "lab-bio", "uni-north", "NVIDIA-H100-80GB-HBM3", 1800.0),
                ],
                columns=["pod_uid", "member", "owner", "gpu_model", "gpu_seconds"],
            ).assign(
                hour=hour,
                namespace=lambda f: f["member"],
                node="n1",
                utilization=0.5,
                coverage=1.0,
                policy_version=0,
            )
            capacity = pd.DataFrame(
                [("n1", "uni-north", "NVIDIA-H100-80GB-HBM3", 8 * 3600.0, 1.0)],
                columns=["node", "owner", "gpu_model", "gpu_seconds_available", "coverage"],
            ).assign(hour=hour)
            ledger.replace_hour(hour.to_pydatetime(), usage, capacity, None, 1.0)


@pytest.fixture
def ledger_url(ledger_url: str) -> str:
    """The ledger (SQLite here, PostgreSQL in tests/integration) with two known hours."""
    fill_ledger(ledger_url, [pd.Timestamp("2026-10-05T10:00Z"), pd.Timestamp("2026-10-05T11:00Z")])
    return ledger_url


def run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)
    return int(exit_info.value.code or 0)


def test_report_from_the_ledger(
    ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "oct"
    code = run(
        [
            "report",
            "--month",
            "2026-10",
            "--ledger",
            ledger_url,
            "--policy",
            DEMO_FILE,
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "uni-north" in captured.out and "lab-bio" in captured.out
    assert "data missing for 743 hours of 745" in captured.out
    invoice = json.loads((out / "invoice-lab-bio.json").read_text())
    # lab-bio used 2 x 0.5 H100-hours on uni-north's nodes at 2.40
    assert invoice["money"]["charges"] == "2.40"
    assert invoice["complete"] is False
    assert (out / "report.html").exists()
    # a second run refuses to overwrite, naming the file
    code = run(
        [
            "report",
            "--month",
            "2026-10",
            "--ledger",
            ledger_url,
            "--policy",
            DEMO_FILE,
            "--out",
            str(out),
        ]
    )
    assert code == 2
    assert "already there" in capsys.readouterr().err


def test_member_report_from_the_ledger(ledger_url: str, tmp_path: Path) -> None:
    out = tmp_path / "m"
    args = [
        "report",
        "--month",
        "2026-10",
        "--member",
        "lab-bio",
        "--ledger",
        ledger_url,
        "--policy",
        DEMO_FILE,
    ]
    assert run([*args, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("invoice")) == [
        "invoice-lab-bio.csv",
        "invoice-lab-bio.json",
    ]


def test_member_view_has_its_own_default_folder(
    ledger_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both views defaulted to out/reports/MONTH: with --overwrite, lab-bio's view
    # replaced the full report's summary.csv and settlement.csv beside its report.html.
    monkeypatch.chdir(tmp_path)
    args = ["report", "--month", "2026-10", "--ledger", ledger_url, "--policy", DEMO_FILE]
    assert run(args) == 0
    full = tmp_path / "out" / "reports" / "2026-10"
    summary = (full / "summary.csv").read_text()
    assert run([*args, "--member", "lab-bio", "--overwrite"]) == 0
    assert (full / "summary.csv").read_text() == summary
    view = full / "member-lab-bio"
    assert sorted(p.name for p in view.iterdir()) == [
        "invoice-lab-bio.csv",
        "invoice-lab-bio.json",
        "report-lab-bio.html",
        "settlement.csv",
        "summary.csv",
        "summary.parquet",
    ]
    assert list(pd.read_csv(view / "summary.csv")["member"]) == ["lab-bio", "pool"]


def test_a_month_with_spaces_names_its_default_folder_without_them(
    ledger_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["report", "--month", " 2026-10", "--ledger", ledger_url, "--policy", DEMO_FILE]
    assert run(argv) == 0
    assert [p.name for p in (tmp_path / "out" / "reports").iterdir()] == ["2026-10"]
    invoice = tmp_path / "out" / "reports" / "2026-10" / "invoice-lab-bio.json"
    assert json.loads(invoice.read_text())["month"] == "2026-10"


def test_bad_month_exits_2_naming_the_option(
    ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["report", "--month", "2026-13", "--ledger", ledger_url, "--policy", DEMO_FILE]) == 2
    assert "--month" in capsys.readouterr().err


def test_month_without_data_exits_1(
    ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nov"
    code = run(
        [
            "report",
            "--month",
            "2026-11",
            "--ledger",
            ledger_url,
            "--policy",
            DEMO_FILE,
            "--out",
            str(out),
        ]
    )
    assert code == 1
    assert "no usage and no capacity recorded for 2026-11" in capsys.readouterr().err
    assert not out.exists()


def test_report_from_a_simulation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    usage, capacity, reclaim = synthetic_month(DEMO, "2026-10", demo_nodes(DEMO, 32))
    usage.to_parquet(tmp_path / "usage.parquet")
    capacity.to_parquet(tmp_path / "capacity.parquet")
    reclaim.to_parquet(tmp_path / "reclaim_lost.parquet")
    (tmp_path / "summary.json").write_text(
        json.dumps({"members": {"physics": {"pooling_dividend_gpu_hours": 42.0}}})
    )
    assert busiest_month(usage, capacity, DEMO) == "2026-10"
    html = write_simulated_report(tmp_path, DEMO)
    assert html == tmp_path / "report" / "report.html"
    text = html.read_text()
    assert "source: simulation" in text
    assert "42.0" in text
    assert "Data complete" in text
    assert run(["report", "--from-simulation", str(tmp_path), "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "physics" in out
    # Its columns include purchases (lab-bio buys 4 A100s): they were headed `charges`
    # and `credits`, which summary.csv gives without them.
    assert "charges" not in out.split("pool cost")[0]
    assert "paid" in out and "received" in out and "purchased-GPU payments" in out
    # A table without a column the bill needs was a KeyError traceback.
    usage.drop(columns=["hour"]).to_parquet(tmp_path / "usage.parquet")
    assert run(["report", "--from-simulation", str(tmp_path), "--overwrite"]) == 2
    assert "usage.parquet: missing column(s) hour" in capsys.readouterr().err
    usage.to_parquet(tmp_path / "usage.parquet")
    # Was a traceback about the staging folder.
    blocked = ["--out", str(tmp_path / "summary.json" / "report")]
    assert run(["report", "--from-simulation", str(tmp_path), *blocked]) == 2
    assert "summary.json is a file, not a folder" in capsys.readouterr().err


def test_monthly_job_writes_last_month_once(ledger_url: str, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    now = datetime(2026, 11, 1, 5, 0, tzinfo=UTC)  # 06:00 in Paris
    html = run_monthly_report(now, ledger_url, DEMO, reports)
    assert html == reports / "2026-10" / "report.html"
    signed = reports / "2026-10" / "invoice-uni-north.json"
    signed.write_text("signed")
    assert run_monthly_report(now, ledger_url, DEMO, reports) is None
    assert signed.read_text() == "signed"
    assert run_monthly_report(now, ledger_url, DEMO, reports, overwrite=True) == html
    assert signed.read_text() != "signed"
    # December's job finds no data for November: nothing written, no crash
    december = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
    assert run_monthly_report(december, ledger_url, DEMO, reports) is None
    assert not (reports / "2026-11").exists()


def test_monthly_trigger_fires_on_day_one_in_the_policy_zone() -> None:
    trigger = monthly_trigger(DEMO)
    after = datetime(2026, 10, 15, tzinfo=UTC)
    fire = trigger.get_next_fire_time(None, after)
    assert fire is not None
    assert fire.astimezone(UTC) == datetime(2026, 11, 1, 5, 0, tzinfo=UTC)  # 06:00 CET
    summer = trigger.get_next_fire_time(None, datetime(2026, 6, 15, tzinfo=UTC))
    assert summer is not None
    assert summer.astimezone(UTC) == datetime(2026, 7, 1, 4, 0, tzinfo=UTC)  # 06:00 CEST
    scheduler = BackgroundScheduler(timezone=DEMO.billing.zone)
    early = datetime(2026, 11, 1, 4, 59, tzinfo=UTC)  # 05:59 in Paris: not due yet
    schedule_monthly_report(scheduler, "sqlite://", DEMO, Path("unused"), now=early)
    assert [j.id for j in scheduler.get_jobs()] == ["fairpool-monthly-report"]


def test_a_meter_started_after_the_monthly_run_writes_the_missing_report() -> None:
    # Down at day 1, 06:00 (a restart, a drain, an upgrade): the trigger's next run is
    # next month, so the start writes it (`run_monthly_report` leaves one written alone).
    scheduler = BackgroundScheduler(timezone=DEMO.billing.zone)
    later = datetime(2026, 11, 3, 12, tzinfo=UTC)
    schedule_monthly_report(scheduler, "sqlite://", DEMO, Path("unused"), now=later)
    jobs = {j.id: j for j in scheduler.get_jobs()}
    assert set(jobs) == {"fairpool-monthly-report", "fairpool-monthly-report-catch-up"}
    assert jobs["fairpool-monthly-report-catch-up"].next_run_time == later
    assert report_due(datetime(2026, 11, 1, 5, 0, tzinfo=UTC), DEMO)
    assert not report_due(datetime(2026, 11, 1, 4, 59, 59, tzinfo=UTC), DEMO)


def record_versions(url: str, versions: list[tuple[int, datetime, str]]) -> None:
    """Policy versions in the ledger's audit log, as the gRPC API's policy store writes
    them; each is the demo policy with the H100 at `price`."""
    from scheduler.api.policy_audit import AuditLog
    from scheduler.api.policy_store import Origin, StoredVersion

    text = DEFAULT_POLICY.read_text()
    log = AuditLog(url)
    for version, applied_at, price in versions:
        document = text.replace(
            "name: demo-consortium", f"name: demo-consortium\n  version: {version}"
        ).replace('hourlyCost: "2.40"', f'hourlyCost: "{price}"')
        log.append(StoredVersion(version, "admin", applied_at, Origin.API, "", document, ""))
    log.close()


def test_each_hour_is_priced_at_the_version_in_force_then(
    ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Version 1 (H100 at 1.00) governs 10:00; version 2 (H100 at 3.00), applied at
    # 10:30, governs 11:00. The usage rows name version 0 (stamped by an older meter).
    record_versions(
        ledger_url,
        [
            (1, datetime(2026, 9, 1, tzinfo=UTC), "1.00"),
            (2, datetime(2026, 10, 5, 10, 30, tzinfo=UTC), "3.00"),
        ],
    )
    out = tmp_path / "oct"
    assert run(["report", "--month", "2026-10", "--ledger", ledger_url, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "version 2 from the ledger's policy history" in captured.err
    assert "versions 1, 2, from the ledger's policy history" in captured.out
    invoice = json.loads((out / "invoice-lab-bio.json").read_text())
    # lab-bio used 0.5 H100-hours on uni-north's nodes in each hour: 0.50 + 1.50
    assert invoice["money"]["charges"] == "2.00"


def test_report_without_policy_or_history_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.db"
    out = tmp_path / "oct"
    argv = ["report", "--month", "2026-10", "--ledger", f"sqlite:///{missing}", "--out", str(out)]
    assert run(argv) == 2
    assert "--policy: required" in capsys.readouterr().err
    assert not missing.exists() and not out.exists()


def test_policy_file_alone_is_said_to_price_every_hour(
    ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "oct"
    args = ["report", "--month", "2026-10", "--ledger", ledger_url, "--policy", DEMO_FILE]
    assert run([*args, "--out", str(out)]) == 0
    assert "the ledger has no policy history" in capsys.readouterr().out


def test_report_says_which_hours_were_given_up(ledger_url: str, tmp_path: Path) -> None:
    with Ledger(ledger_url) as ledger:
        ledger.forget(
            datetime(2026, 10, 1, tzinfo=UTC),
            datetime(2026, 10, 1, 6, tzinfo=UTC),
            "alice",
            "cluster not installed yet",
        )
    out = tmp_path / "oct"
    args = ["report", "--month", "2026-10", "--ledger", ledger_url, "--policy", DEMO_FILE]
    assert run([*args, "--out", str(out)]) == 0
    flags = json.loads((out / "invoice-lab-bio.json").read_text())["flags"]
    assert (
        "metering given up for 6 hours of these (fairpool meter --forget): they will not be metered"
        in flags
    )
    assert any("given up by alice" in f and "cluster not installed yet" in f for f in flags)


def test_report_monthly_says_when_it_runs(
    ledger_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The start line once printed the trigger's text, "cron[day='1', hour='6', ...]",
    # which rich read as a style tag and dropped: "monthly report job: cron -> ...".
    ran: list[Path] = []
    monkeypatch.setattr(
        "reports.sources.monthly_job.run_forever", lambda url, policy, out: ran.append(out)
    )
    reports = tmp_path / "[signed]"
    args = ["report", "monthly", "--ledger", ledger_url, "--policy", DEMO_FILE]
    assert run([*args, "--reports-dir", str(reports)]) == 0
    out = "".join(capsys.readouterr().out.split())  # rich wraps lines anywhere
    said = f"monthly report job: day 1 at 06:00 Europe/Paris -> {reports}/<YYYY-MM>/"
    assert "".join(said.split()) in out
    assert ran == [reports]


def _ledger_options(group: click.Group, path: str) -> Iterator[tuple[str, click.Option]]:
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None
        if isinstance(command, click.Group):
            yield from _ledger_options(command, f"{path} {name}")
        for param in command.params:
            if isinstance(param, click.Option) and "--ledger" in param.opts:
                yield f"{path} {name}", param


def test_every_ledger_option_shows_the_same_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `report monthly --help` showed no default for --ledger, `report --help` did.
    said = "[default: ($FAIRPOOL_LEDGER or sqlite:///fairpool-ledger.db)]"
    for args in (["report", "--help"], ["report", "monthly", "--help"]):
        assert run(args) == 0
        assert "".join(said.split()) in "".join(capsys.readouterr().out.split()), args
    options = dict(_ledger_options(cli, "fairpool"))
    assert {"fairpool report", "fairpool report monthly", "fairpool meter status"} <= set(options)
    monkeypatch.setenv("FAIRPOOL_LEDGER", "sqlite:////elsewhere.db")
    for where, option in options.items():
        assert option.show_default == "$FAIRPOOL_LEDGER or sqlite:///fairpool-ledger.db", where
        assert option.get_default(click.Context(click.Command(where))) == (
            "sqlite:////elsewhere.db"
        ), where


def test_a_policy_name_with_brackets_is_printed_whole(
    ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # rich took "[draft]" in the summary table's title for a style: "consortium  v2".
    policy = tmp_path / "policy.yaml"
    text = DEFAULT_POLICY.read_text()
    policy.write_text(text.replace(f"name: {DEMO.metadata.name}\n", 'name: "pool [draft] v2"\n', 1))
    args = ["report", "--month", "2026-10", "--ledger", ledger_url, "--policy", str(policy)]
    assert run([*args, "--out", str(tmp_path / "out")]) == 0
    assert "pool [draft] v2 · 2026-10" in capsys.readouterr().out


def test_a_ledger_node_labelled_with_no_member_is_billed_unowned_and_flagged(
    tmp_path: Path,
) -> None:
    """The meter records a node's owner label as it finds it; `lab-bioo` (a typo) became
    a member of the report, credited with the node's capacity. The scheduler gives such
    a node to nobody's entitlement, and the bill now agrees."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    hour = pd.Timestamp("2026-10-06T09:00Z")
    model = "NVIDIA-H100-80GB-HBM3"
    with Ledger(url) as ledger:
        usage = pd.DataFrame(
            [("u1", "lab-bio", "lab-bioo", model, 3600.0)],
            columns=["pod_uid", "member", "owner", "gpu_model", "gpu_seconds"],
        ).assign(
            hour=hour,
            namespace="lab-bio",
            node="gpu-7",
            utilization=0.5,
            coverage=1.0,
            policy_version=0,
        )
        capacity = pd.DataFrame(
            [("gpu-7", "lab-bioo", model, 4 * 3600.0, 1.0)],
            columns=["node", "owner", "gpu_model", "gpu_seconds_available", "coverage"],
        ).assign(hour=hour)
        ledger.replace_hour(hour.to_pydatetime(), usage, capacity, None, 1.0)
    report = ledger_month_report(url, DEMO, "2026-10")
    assert "lab-bioo" not in report.members
    assert report.summary.set_index("member").loc["unattributed", "contributed_gpu_hours"] == 4.0
    flags = [f for f in report.flags if "'lab-bioo'" in f]
    assert len(flags) == 1 and "on node(s) gpu-7" in flags[0], report.flags
