"""Writing a report: the files, money as strings, member restriction, overwrite refusal,
atomic writes."""

from __future__ import annotations

import json
import os
import pickle
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

import reports.rendering.render as render
from policies.errors import OutputError
from policies.loader import parse_policy
from reports.costmodel import MonthReport, build_month_report, money
from reports.costmodel.frames import UNATTRIBUTED
from reports.costmodel.money import cents
from reports.rendering.render import ReportExistsError, write_report
from tests.unit.test_costmodel import (
    CAPACITY,
    H0,
    H1,
    USAGE,
    build,
    make_policy,
    make_policy_text,
    usage_frame,
)


@pytest.fixture(scope="module")
def report() -> MonthReport:
    return build_month_report("2026-10", make_policy(idle="by-usage"), USAGE, CAPACITY)


def test_full_report_files(report: MonthReport, tmp_path: Path) -> None:
    out = tmp_path / "2026-10"
    paths = write_report(report, out)
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [
            *(f"invoice-{m}.{ext}" for m in "abc" for ext in ("csv", "json")),
            "summary.csv",
            "summary.parquet",
            "settlement.csv",
            "report.html",
        ]
    )
    assert paths[-1].name == "report.html"
    assert all(p.exists() for p in paths)
    invoice = json.loads((out / "invoice-b.json").read_text())
    assert invoice["total"] == "37.76"
    assert invoice["money"]["charges"] == "2.00"
    assert invoice["money"]["net_settlement"] == "-1.00"
    assert invoice["period"]["hours"] == 745
    amounts = [line["amount"] for line in invoice["lines"] if line["amount"] is not None]
    assert sum(Decimal(a) for a in amounts) == Decimal("37.76")
    csv = pd.read_csv(out / "invoice-b.csv", dtype=str)
    assert csv.iloc[-1]["description"] == "Total due"
    assert csv.iloc[-1]["amount"] == "37.76"
    summary = pd.read_csv(out / "summary.csv", dtype=str).set_index("member")
    assert summary.loc["pool", "total"] == "112.00"
    assert summary.loc["a", "total"] == "39.77"
    parquet = pd.read_parquet(out / "summary.parquet").set_index("member")
    assert parquet.loc["pool", "total"] == Decimal("112.00")
    assert sum(parquet.drop(index="pool")["total"]) == Decimal("112.00")
    settlement = pd.read_csv(out / "settlement.csv", dtype=str, index_col=0)
    assert settlement.loc["b", "a"] == "2.00"
    assert settlement.loc["c", "b"] == "1.00"
    html = (out / "report.html").read_text()
    assert html.count("<svg") >= 5
    assert "<script" not in html
    assert "http://" not in html.replace("http://www.w3.org/", "")
    assert "https://" not in html
    for member in "abc":
        assert f'id="invoice-{member}"' in html


def test_member_report_shows_no_other_members_lines(report: MonthReport, tmp_path: Path) -> None:
    out = tmp_path / "b-only"
    paths = write_report(report, out, member="b")
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [
            "invoice-b.csv",
            "invoice-b.json",
            "summary.csv",
            "summary.parquet",
            "settlement.csv",
            "report-b.html",
        ]
    )
    summary = pd.read_csv(out / "summary.csv", dtype=str)
    assert list(summary["member"]) == ["b", "pool"]
    assert summary.iloc[-1]["total"] == "112.00"
    settlement = pd.read_csv(out / "settlement.csv", dtype=str, index_col=0)
    # b is a party to b->a and c->b; a and c's dealings with each other are not shown
    assert settlement.loc["c", "a"] == "0.00"
    assert settlement.loc["a", "c"] == "0.00"
    html = (out / "report-b.html").read_text()
    assert 'id="invoice-b"' in html
    assert 'id="invoice-a"' not in html
    assert 'id="invoice-c"' not in html
    # a's own line items (its H capacity) and totals appear nowhere in b's report
    assert "Contributed capacity, H" not in html
    assert "39.77" not in html and "34.47" not in html
    for path in paths:
        if path.suffix in (".csv", ".json", ".html"):
            text = path.read_text()
            assert "Contributed capacity, H" not in text
            assert "39.77" not in text


def test_a_member_view_keeps_the_pool_flags_and_hides_other_members_pods(
    tmp_path: Path,
) -> None:
    # Flags were matched to members by their words: with a member named `data`, every
    # "data missing for ..." flag left the other members' views, while a flag naming
    # another member's pod (its namespace and name) stayed in them.
    unpriced = usage_frame([(H0, "a", "b", UNATTRIBUTED, 60.0), (H1, "b", "a", UNATTRIBUTED, 60.0)])
    unpriced["pod"] = ["a-own-pod", "b-secret-pod"]
    usage = pd.concat([USAGE, unpriced.assign(pod_uid=["x", "y"])], ignore_index=True)
    policy = make_policy(extra_member="- {name: data, namespaces: [data]}")
    report = build(policy, usage=usage)
    assert any(f.startswith("data missing for") for f in report.flags)
    assert "no data for member data this month" in report.flags
    write_report(report, tmp_path, member="a")
    flags = json.loads((tmp_path / "invoice-a.json").read_text())["flags"]
    assert [f for f in flags if f.startswith("data missing")] == [
        f for f in report.flags if f.startswith("data missing")
    ]
    assert any("a/a-own-pod" in f for f in flags)
    assert "no data for member data this month" not in flags
    for path in tmp_path.iterdir():
        assert "b-secret-pod" not in path.read_text(errors="replace"), path.name
    # A flag is a str subclass: a pickled report keeps the members its flags concern.
    copied = pickle.loads(pickle.dumps(report)).flags
    assert [getattr(f, "members", None) for f in copied] == [
        getattr(f, "members", None) for f in report.flags
    ]


def test_csv_hours_are_rounded_as_in_the_json(tmp_path: Path) -> None:
    # 1000 GPU-seconds: 0.2777... GPU-hours, printed whole (0.2777777777777778) in the
    # CSV files while the JSON invoice said 0.277778.
    odd = usage_frame([(H1, "c", "a", "H", 1000.0)]).assign(pod_uid="odd")
    report = build(make_policy(), usage=pd.concat([USAGE, odd], ignore_index=True))
    write_report(report, tmp_path)
    invoice = json.loads((tmp_path / "invoice-c.json").read_text())
    line = next(x for x in invoice["lines"] if x["section"] == "others-hardware")
    assert line["gpu_hours"] == 0.277778
    csv = pd.read_csv(tmp_path / "invoice-c.csv", dtype=str, keep_default_na=False)
    assert "0.277778" in set(csv["gpu_hours"])
    summary = pd.read_csv(tmp_path / "summary.csv", dtype=str).set_index("member")
    assert summary.loc["c", "used_on_others_charged_gpu_hours"] == str(
        invoice["gpu_hours"]["used_on_others_charged_gpu_hours"]
    )
    assert summary.loc["c", "used_gpu_hours"] == "1.277778"


def test_the_pool_row_adds_up_lost_work_per_cause() -> None:
    lost = pd.DataFrame(
        [(H0, "b", "H", "entitlement", 1800.0), (H0, "c", "H", "fair_share", 3600.0)],
        columns=["hour", "member", "gpu_model", "cause", "gpu_seconds_lost"],
    )
    table = render.summary_table(build(make_policy(), reclaim_lost=lost))
    pool = table[table["member"] == "pool"].iloc[0]
    assert pool["reclaim_lost_gpu_hours"] == pytest.approx(1.5)
    assert pool["reclaim_lost_entitlement_gpu_hours"] == pytest.approx(0.5)
    assert pool["reclaim_lost_fair_share_gpu_hours"] == pytest.approx(1.0)
    assert pool["reclaim_lost_consolidation_gpu_hours"] == 0.0


def test_the_html_report_shows_lost_work_by_cause(tmp_path: Path) -> None:
    lost = pd.DataFrame(
        [
            (H0, "b", "H", "entitlement", 1800.0),
            (H0, "b", "H", "consolidation", 360.0),
            (H0, "c", "H", "", 3600.0),
        ],
        columns=["hour", "member", "gpu_model", "cause", "gpu_seconds_lost"],
    )
    report = build(make_policy(), reclaim_lost=lost)
    assert render.lost_rows(report) == [
        {
            "member": "b",
            "total": pytest.approx(0.6),
            "entitlement": pytest.approx(0.5),
            "fair_share": 0.0,
            "consolidation": pytest.approx(0.1),
            "queue": 0.0,
            "unrecorded": pytest.approx(0.0),
        },
        {
            "member": "c",
            "total": pytest.approx(1.0),
            "entitlement": 0.0,
            "fair_share": 0.0,
            "consolidation": 0.0,
            "queue": 0.0,
            "unrecorded": pytest.approx(1.0),
        },
    ]
    write_report(report, tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="lost"' in html and "Cause not recorded" in html
    # Nothing lost: no table.
    write_report(build(make_policy()), tmp_path / "none")
    assert 'id="lost"' not in (tmp_path / "none" / "report.html").read_text()


def test_member_must_exist(report: MonthReport, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="--member: 'zz'"):
        write_report(report, tmp_path / "x", member="zz")


def test_a_folder_holds_one_view(report: MonthReport, tmp_path: Path) -> None:
    # A member's view written over the full report (or the converse) replaced its
    # summary.csv and settlement.csv, even its own invoice's flags, beside the other
    # view's page: refused, even with overwrite, and nothing is touched.
    write_report(report, tmp_path / "full")
    before = {p.name: p.read_bytes() for p in (tmp_path / "full").iterdir()}
    with pytest.raises(ReportExistsError, match=r"another view of a report \(report\.html\)"):
        write_report(report, tmp_path / "full", member="b", overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "full").iterdir()} == before
    write_report(report, tmp_path / "b", member="b")
    before = {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}
    with pytest.raises(ReportExistsError, match=r"\(report-b\.html\)"):
        write_report(report, tmp_path / "b", overwrite=True)
    with pytest.raises(ReportExistsError, match=r"member c's view"):
        write_report(report, tmp_path / "b", member="c", overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()} == before
    # The same view is rewritten as before.
    write_report(report, tmp_path / "b", member="b", overwrite=True)


def test_refuses_to_overwrite_unless_asked(report: MonthReport, tmp_path: Path) -> None:
    out = tmp_path / "r"
    write_report(report, out)
    before = (out / "invoice-a.json").read_text()
    (out / "invoice-a.json").write_text("signed by the treasurer")
    with pytest.raises(ReportExistsError, match=str(out / "invoice-a.csv")):
        write_report(report, out)
    assert (out / "invoice-a.json").read_text() == "signed by the treasurer"
    write_report(report, out, overwrite=True)
    assert (out / "invoice-a.json").read_text() == before


def test_an_error_while_writing_leaves_nothing(
    report: MonthReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> str:
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(render, "_html", broken)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_report(report, tmp_path / "new")
    assert list(tmp_path.iterdir()) == []  # no report folder, no staging folder

    existing = tmp_path / "old"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    with pytest.raises(RuntimeError):
        write_report(report, existing, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_rebuilt_report_leaves_none_of_the_old_ones_files(tmp_path: Path) -> None:
    # The first report had a member more (d) and usage on a node with no GPU model; the
    # rebuilt one has neither: its invoices and unattributed.csv stayed beside it.
    extra = usage_frame([(H0, "d", "a", "H", 360.0), (H1, "b", "a", UNATTRIBUTED, 360.0)])
    first = build(
        make_policy(extra_member="- {name: d, namespaces: [d]}"),
        usage=pd.concat([USAGE, extra.assign(pod_uid=["x", "y"])], ignore_index=True),
    )
    out = tmp_path / "2026-10"
    write_report(first, out)
    assert (out / "unattributed.csv").exists() and (out / "invoice-d.json").exists()
    (out / "notes.txt").write_text("the treasurer's")
    write_report(first, out / "member-b", member="b")
    rebuilt = build(make_policy())
    paths = write_report(rebuilt, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*(p.name for p in paths), "notes.txt", "member-b"]
    )
    assert (out / "notes.txt").read_text() == "the treasurer's"
    assert (out / "member-b" / "report-b.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-10"]  # nothing left aside


def test_a_failure_while_swapping_keeps_the_earlier_report(
    report: MonthReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r"
    write_report(build(make_policy(extra_member="- {name: d, namespaces: [d]}")), out)
    before = _contents(out)
    real_replace = os.replace
    moved: list[str] = []

    def failing(src: str | Path, dst: str | Path) -> None:
        # The third new file cannot be moved in (a full disk, a permission).
        if Path(dst).parent == out:
            moved.append(Path(dst).name)
            if len(moved) == 3:
                raise PermissionError(13, "Permission denied", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(render.os, "replace", failing)
    with pytest.raises(OutputError, match=rf"{out}: cannot write there \(Permission denied\)"):
        write_report(report, out, overwrite=True)
    assert _contents(out) == before  # the earlier report whole, not half of each
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_a_folder_where_a_report_file_goes_is_said_before_anything_moves(
    report: MonthReport, tmp_path: Path
) -> None:
    # summary.parquet a folder: the files before it were replaced, those after it not,
    # and the error was a traceback.
    out = tmp_path / "r"
    write_report(report, out)
    (out / "summary.parquet").unlink()
    (out / "summary.parquet").mkdir()
    before = _contents(out)
    with pytest.raises(OutputError, match=r"summary\.parquet: cannot write there \(a folder"):
        write_report(report, out, overwrite=True)
    assert _contents(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_the_page_hides_no_flag_behind_the_days_with_missing_data(tmp_path: Path) -> None:
    # An hour missing on every day of the month: 31 per-day flags came before the
    # unpriced usage and no-data ones, and the page showed the first 12 flags only.
    hours = pd.date_range("2026-09-30T22:00Z", "2026-10-31T22:00Z", freq="h")
    metered = hours[hours.hour != 3]
    usage = usage_frame([(metered[0], "b", "a", UNATTRIBUTED, 3600.0)])
    capacity = pd.DataFrame(
        [(h, "a", "H", 7200.0) for h in metered],
        columns=["hour", "owner", "gpu_model", "gpu_seconds_available"],
    )
    status = pd.DataFrame({"hour": metered, "status": "metered", "coverage": 1.0})
    report = build(make_policy(), usage=usage, capacity=capacity, hour_status=status)
    days = [f for f in report.flags if f.startswith("data missing for 1 hour on")]
    assert len(days) == 31
    assert report.flags[-31:] == days  # per-day coverage last: it is in its table too
    unpriced = next(f for f in report.flags if "no known GPU model" in f)
    no_data = next(f for f in report.flags if f.startswith("no data for member"))
    write_report(report, tmp_path)
    html = (tmp_path / "report.html").read_text()
    flags = html.split('id="flags"')[1].split("</div>")[0]
    assert unpriced.split(":")[0] in flags and no_data in flags
    assert days[0] in flags and days[-1] not in flags
    assert "and 21 more days with missing or partial data" in flags


def test_no_data_member_renders_as_no_data(tmp_path: Path) -> None:
    policy = make_policy(extra_member="- {name: d, namespaces: [d]}")
    report = build_month_report("2026-10", policy, USAGE, CAPACITY)
    paths = write_report(report, tmp_path / "r")
    html = paths[-1].read_text()
    assert "no data" in html
    invoice = json.loads((tmp_path / "r" / "invoice-d.json").read_text())
    assert invoice["status"] == "no data"
    assert invoice["gpu_hours"]["used_gpu_hours"] is None
    assert "data missing for" in html  # the month is mostly unmetered


def test_the_rate_is_the_exact_price(tmp_path: Path) -> None:
    # H at 0.125 per GPU-hour: rounded to the cent the rate read 0.12, and an invoice's
    # GPU-hours x rate no longer gave its amount.
    policy = parse_policy(make_policy_text().replace('"2.00"', '"0.125"'))
    write_report(build(policy), tmp_path)
    csv = pd.read_csv(tmp_path / "invoice-b.csv", dtype=str, keep_default_na=False)
    line = csv[csv["section"] == "others-hardware"].iloc[0]
    assert (line["gpu_model"], line["gpu_hours"], line["rate"]) == ("H", "1.0", "0.125")
    assert cents(Decimal(line["gpu_hours"]) * Decimal(line["rate"])) == Decimal(line["amount"])
    # A price with no more than cents keeps two decimals.
    assert set(csv[csv["gpu_model"] == "A"]["rate"]) == {"1.00"}
    invoice = json.loads((tmp_path / "invoice-b.json").read_text())
    rates = {(x["section"], x["gpu_model"]): x["rate"] for x in invoice["lines"]}
    assert rates[("others-hardware", "H")] == "0.125"
    assert rates[("capacity", "A")] == "1.00"
    html = (tmp_path / "report.html").read_text()
    assert '<td class="num">0.125</td>' in html


@pytest.mark.parametrize(
    ("price", "shown"),
    [("0.125", "0.125"), ("2", "2.00"), ("2.500000", "2.50"), ("1E+2", "100.00"), ("-0", "0.00")],
)
def test_rate_str(price: str, shown: str) -> None:
    assert money.rate_str(Decimal(price)) == shown
