"""`fairpool simulate` bills its tables in memory; reading them back from the folder's
Parquet files (`fairpool report --from-simulation`) gives the same bill to the cent."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from policies.loader import parse_policy
from reports.costmodel import MonthReport
from reports.costmodel.usage_row import USAGE_COLUMNS
from reports.rendering.render import write_report
from reports.sources.simulation import simulated_report
from tests.unit.test_sim_cli import POLICY, inputs, run


def test_in_memory_bill_equals_the_bill_read_back_from_parquet(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run([*inputs(tmp_path), "--out", str(out)]) == 0
    usage = pd.read_parquet(out / "usage.parquet")
    assert list(usage.columns) == USAGE_COLUMNS
    assert set(usage["source"]) == {"simulation"}

    month = json.loads((out / "summary.json").read_text())["window"]["month"]
    reread = simulated_report(out, parse_policy(POLICY), month)
    write_report(reread, tmp_path / "reread")
    written = sorted(p.name for p in (out / "report").iterdir() if p.suffix in {".csv", ".json"})
    assert "invoice-a.json" in written and "settlement.csv" in written
    for name in written:
        assert (out / "report" / name).read_text() == (tmp_path / "reread" / name).read_text()


def _demo_window(length: timedelta) -> MonthReport:
    """The bill of the demo's synthetic October cut to its first `length`, as a
    simulation of that long reports it (lab-bio purchased 4 A100 at 1.30)."""
    from policies.loader import load_policy
    from reports.costmodel.months import month_bounds
    from reports.sources.simulation import simulation_report
    from reports.sources.synthetic import demo_nodes, synthetic_month

    demo = load_policy()
    start, _ = month_bounds("2026-10", demo.billing.zone)
    end = start + length
    usage, capacity, reclaim = synthetic_month(demo, "2026-10", demo_nodes(demo, 32))

    def cut(frame: pd.DataFrame) -> pd.DataFrame:
        hours = pd.to_datetime(frame["hour"], utc=True)
        return frame[(hours >= pd.Timestamp(start)) & (hours < pd.Timestamp(end))]

    summary = {"window": {"start": start.isoformat(), "end": end.isoformat(), "month": "2026-10"}}
    return simulation_report(cut(usage), cut(capacity), cut(reclaim), summary, demo)


def test_a_three_day_simulation_bills_three_days(tmp_path: Path) -> None:
    report = _demo_window(timedelta(days=3))
    assert report.hours == 72
    assert not [f for f in report.flags if "missing" in f], report.flags
    assert report.complete
    paid = report.summary.set_index("member").loc["lab-bio", "purchase_paid"]
    assert paid == Decimal("4") * 72 * Decimal("1.30")
    assert report.period_note.startswith("simulated window")
    # Its page said "every hour of the month has data" above "72 hours of 2026-10".
    html = write_report(report, tmp_path / "report")[-1].read_text()
    assert "every hour of the period billed (below) has data" in html
    assert "every hour of the month" not in html
    # The demo's shared fixed costs (1,200.00 + 2,000.00 a month; October 2026 in Paris
    # has 745 hours) for 72 hours: 115.97 + 193.29.
    assert report.shared_fixed_cost == Decimal("115.97") + Decimal("193.29")


def test_a_window_ending_inside_an_hour_pays_that_hour_in_part(tmp_path: Path) -> None:
    """Purchases and shared fixed costs follow the window's exact length, as capacity
    does: a window ending at 00:10 on the fourth day paid its last hour whole."""
    report = _demo_window(timedelta(days=3, minutes=10))
    assert report.hours == 73  # the hours it touches
    row = report.summary.set_index("member").loc["lab-bio"]
    # 4 GPUs x 72 1/6 hours x 1.30 = 375.2666...: 375.27, not 73 whole hours' 379.60.
    assert row["purchase_paid"] == Decimal("375.27")
    assert row["purchased_gpu_hours"] == pytest.approx(4 * (72 + 1 / 6))
    # 1,200.00 + 2,000.00 a month of 745 hours, for 72 1/6 hours: 116.24 + 193.74.
    assert report.shared_fixed_cost == Decimal("116.24") + Decimal("193.74")


def test_the_period_note_gives_the_windows_hours_and_the_invoices_their_prices(
    tmp_path: Path,
) -> None:
    """A window of 89 h 51 min, all inside October, was "90 hours of 2026-10; the
    simulation ran 89 hours" (whole hours, floored, of the touched hours and the
    window), and a simulation's JSON invoices had an empty `policy.prices`."""
    report = _demo_window(timedelta(hours=89, minutes=51))
    assert report.period_note.startswith(
        "simulated window 2026-09-30 22:00Z to 2026-10-04 15:51Z (89.85 hours of 2026-10): "
    ), report.period_note
    write_report(report, tmp_path / "report")
    invoice = json.loads((tmp_path / "report" / "invoice-lab-bio.json").read_text())
    assert invoice["policy"]["prices"] == (
        "prices: policy demo-consortium (version 0) for every hour"
    )
    # A simulation longer than the month says how long it ran beside what is billed.
    longer = _demo_window(timedelta(days=31, hours=12))
    assert "(745 hours of 2026-10; the simulation ran 756 hours)" in longer.period_note


def test_report_from_a_simulation_bills_with_the_policy_it_ran_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The folder keeps the policy the simulation ran with (`policy.yaml`), and `report
    --from-simulation` without `--policy` bills with it: it billed with the built-in demo
    policy, another consortium's members and prices, without a word."""
    out = tmp_path / "out"
    assert run([*inputs(tmp_path), "--out", str(out)]) == 0
    assert (out / "policy.yaml").read_text() == POLICY
    simulated = {p.name: p.read_text() for p in (out / "report").iterdir() if p.suffix == ".csv"}
    again = tmp_path / "again"
    capsys.readouterr()
    assert run(["report", "--from-simulation", str(out), "--out", str(again)]) == 0
    assert "the simulation's own" in capsys.readouterr().err
    for name, text in simulated.items():
        assert (again / name).read_text() == text, name
    # A folder from before fairpool kept its policy: refused unless it ran the demo's.
    (out / "policy.yaml").unlink()
    assert run(["report", "--from-simulation", str(out), "--out", str(tmp_path / "x")]) == 2
    assert "give that policy with --policy" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    given = ["--policy", str(tmp_path / "policy.yaml"), "--out", str(tmp_path / "y")]
    assert run(["report", "--from-simulation", str(out), *given]) == 0
    assert (tmp_path / "y" / "settlement.csv").read_text() == simulated["settlement.csv"]
