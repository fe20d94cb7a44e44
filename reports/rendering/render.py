"""Writing a month's report: invoices (CSV, JSON), summary (CSV, Parquet), settlement
(CSV) and one self-contained HTML page with inline SVG charts.

Everything is written into a temporary folder beside the destination first and moved
in only when all files exist, so an error leaves nothing half written; files already
there are never replaced unless asked, and a report replaced leaves none of its files
behind (`_swap_in`).
"""

from __future__ import annotations

import errno
import functools
import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from policies.errors import InputError, OutputError
from policies.files import remove_staging, staging_folder, sync_folder
from reports.costmodel import MonthReport
from reports.costmodel.flags import concerned
from reports.costmodel.frames import LOST_CAUSES
from reports.costmodel.money import ZERO, money_str, rate_str
from reports.rendering import charts

TEMPLATES = Path(__file__).parent / "templates"
MONEY_COLUMNS = (
    "capacity_cost",
    "charges",
    "credits",
    "purchase_paid",
    "purchase_received",
    "idle_adjustment",
    "shared_fixed",
    "total",
    "net_settlement",
    "lent_and_purchase_net_money",
)


DAY_FLAGS_SHOWN = 10
"""Per-day coverage flags listed at the top of the HTML page (all are in its table)."""


class ReportExistsError(InputError):
    """A report file is already there and overwriting was not asked for."""


def restrict(report: MonthReport, member: str) -> MonthReport:
    """The report as `member` may see it: its own invoice, the pool's totals, and
    only the settlement and flows it is a party to."""
    if member not in report.members:
        raise InputError(f"--member: {member!r} is not a member in this report")
    keep = [m for m in report.members if m == member]
    settlement = report.settlement.copy()
    others = [m for m in report.members if m != member]
    for a in others:
        for b in others:
            settlement.loc[a, b] = ZERO
    parties = report.settlement.loc[member].ne(ZERO) | report.settlement[member].ne(ZERO)
    visible = [m for m in report.members if m == member or bool(parties.get(m, False))]
    flows = report.lent_flows.copy()
    for a in others:
        for b in others:
            flows.loc[a, b] = 0.0
    daily = report.daily_gpu_hours
    restricted_daily = pd.DataFrame(index=daily.index)
    if member in daily.columns:
        restricted_daily[member] = daily[member]
    rest = [c for c in daily.columns if c != member]
    if rest:
        restricted_daily["other members"] = daily[rest].sum(axis=1)
    net = report.net_settlement
    return replace(
        report,
        members=keep,
        summary=report.summary[report.summary["member"] == member].reset_index(drop=True),
        invoices=report.invoice(member),
        settlement=settlement.loc[visible, visible],
        net_settlement=net[(net["payer"] == member) | (net["payee"] == member)].reset_index(
            drop=True
        ),
        lent_flows=flows.loc[visible, visible],
        daily_gpu_hours=restricted_daily,
        entitlement_vs_use=report.entitlement_vs_use[
            report.entitlement_vs_use["member"] == member
        ].reset_index(drop=True),
        flags=[f for f in report.flags if concerned(f) <= {member}],
    )


# --- formatting ---------------------------------------------------------------------


def _hours(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return f"{float(value):,.1f}"


def _hours_or_nodata(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "no data"
    return f"{float(value):,.1f}"


def format_money(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    amount = Decimal(value)
    text = f"{abs(amount):,.2f}"
    return f"−{text}" if amount < 0 else text


def format_rate(value: Any) -> str:
    """A price per GPU-hour, exact (`rate_str`), with thousands separated."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return rate_str(Decimal(value), grouping=True) or ""


def _percent(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "missing"
    return f"{float(value):.0%}"


def _known(value: Any) -> bool:
    return _clean(value) is not None


def _text(value: Any) -> str:
    return "" if _clean(value) is None else str(value)


@functools.cache
def _environment() -> jinja2.Environment:
    """One per process: compiling the page's template took about 25 ms of each report
    (environments and their templates are safe to share between threads)."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        hours=_hours,
        hours_or_nodata=_hours_or_nodata,
        money=format_money,
        rate=format_rate,
        percent=_percent,
        text=_text,
    )
    environment.tests["known"] = _known
    return environment


# --- the files ----------------------------------------------------------------------


def _money_frame(frame: pd.DataFrame, columns: tuple[str, ...] | list[str]) -> pd.DataFrame:
    out = frame.copy()
    for column in columns:
        if column in out:
            out[column] = [money_str(v) if v is not None else None for v in out[column]]
    return out


HOURS_DECIMALS = 6
"""GPU-hours (and efficiency) are written to 6 decimals in the CSV and JSON files."""


def _hours_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """GPU-hour columns (and efficiency) rounded as the JSON invoices round them: the CSV
    files printed binary floats whole (86.30671555555546 beside 86.306716)."""
    out = frame.copy()
    for column in out.columns:
        if column == "gpu_hours" or column.endswith("_gpu_hours") or column == "efficiency":
            out[column] = [
                round(float(v), HOURS_DECIMALS) if _known(v) else None for v in out[column]
            ]
    return out


def _clean(value: Any) -> Any:
    """NaN (pandas' missing) as None, so JSON stays valid."""
    if isinstance(value, float) and pd.isna(value):
        return None
    return value


def summary_table(report: MonthReport, pool_from: MonthReport | None = None) -> pd.DataFrame:
    """Per-member rows and one `pool` row (Decimal money); the pool row comes from
    `pool_from` (the whole report) when the rows are restricted to one member."""
    rows = report.summary.copy()
    report = pool_from or report
    pool: dict[str, Any] = {c: None for c in rows.columns}
    pool["member"] = "pool"
    pool["status"] = "complete" if report.complete else "incomplete"
    for column in (
        "contributed_gpu_hours",
        "used_gpu_hours",
        "used_on_others_charged_gpu_hours",
        "reclaim_lost_gpu_hours",
        *(f"reclaim_lost_{cause}_gpu_hours" for cause in LOST_CAUSES),
    ):
        values = [v for v in report.summary[column] if v is not None and not pd.isna(v)]
        pool[column] = float(sum(values))
    pool["total"] = report.pool_cost
    pool["capacity_cost"] = report.capacity_cost
    pool["shared_fixed"] = report.shared_fixed_cost
    return pd.concat([rows, pd.DataFrame([pool])], ignore_index=True)


def _invoice_json(report: MonthReport, member: str) -> dict[str, Any]:
    row = report.summary[report.summary["member"] == member].iloc[0].to_dict()
    lines = []
    for line in report.invoice(member).to_dict("records"):
        lines.append(
            {
                "section": line["section"],
                "description": line["description"],
                "counterparty": _clean(line["counterparty"]),
                "gpu_model": _clean(line["gpu_model"]),
                "gpu_hours": (
                    None if pd.isna(line["gpu_hours"]) else round(line["gpu_hours"], HOURS_DECIMALS)
                ),
                "rate": rate_str(line["rate"]),
                "amount": money_str(line["amount"]),
                "info_value": money_str(line["info_value"]),
            }
        )
    quantities = {
        k: (None if _clean(v) is None else round(float(v), HOURS_DECIMALS))
        for k, v in row.items()
        if k.endswith("_gpu_hours") or k == "efficiency"
    }
    return {
        "member": member,
        "month": report.month,
        "period": {
            "start": report.start.isoformat(),
            "end": report.end.isoformat(),
            "time_zone": report.time_zone,
            "hours": report.hours,
            "note": report.period_note,
        },
        "currency": report.currency,
        "policy": {
            "name": report.policy_name,
            "versions": report.policy_versions,
            "prices": report.price_basis,
        },
        "source": report.source,
        "status": row["status"],
        "complete": report.complete,
        "lines": lines,
        "total": money_str(row["total"]),
        "money": {k: money_str(row[k]) for k in MONEY_COLUMNS},
        "gpu_hours": quantities,
        "flags": report.flags,
        "rounding_rule": report.rounding_rule,
    }


def _invoice_csv(report: MonthReport, member: str) -> pd.DataFrame:
    lines = _hours_frame(_money_frame(report.invoice(member), ["amount", "info_value"]))
    lines["rate"] = [rate_str(v) if _known(v) else None for v in lines["rate"]]
    total: dict[str, Any] = {c: None for c in lines.columns}
    total.update(member=member, section="total", description="Total due", amount=None)
    total["amount"] = money_str(report.total(member))
    return pd.concat([lines, pd.DataFrame([total])], ignore_index=True)


def lost_rows(report: MonthReport) -> list[dict[str, Any]]:
    """Members whose work preemption threw away this month: GPU-hours in all, per cause,
    and those whose cause was not recorded (ledger rows metered before it was)."""
    rows = []
    for row in report.summary.to_dict("records"):
        total = _clean(row["reclaim_lost_gpu_hours"])
        if total is None or float(total) <= 0:
            continue
        causes = {c: float(row[f"reclaim_lost_{c}_gpu_hours"] or 0.0) for c in LOST_CAUSES}
        rows.append(
            {
                "member": row["member"],
                "total": float(total),
                **causes,
                # Rounding of the sums is not a cause of its own.
                "unrecorded": max(0.0, round(float(total) - sum(causes.values()), 6)),
            }
        )
    return rows


def _html(report: MonthReport, member: str | None) -> str:
    colors = charts.color_for(list(report.daily_gpu_hours.columns) or report.members)
    chart_svgs = {
        "daily": charts.daily_stacked(report.daily_gpu_hours, colors),
        "entitlement": charts.entitlement_vs_use(report.entitlement_vs_use, colors),
        "lent": charts.lent_heatmap(report.lent_flows),
        "utilization": charts.utilization(report.utilization_daily),
        "coverage": charts.coverage(report.coverage_daily),
    }
    template = _environment().get_template("report.html.j2")
    invoices = [
        {
            "member": m,
            "row": report.summary[report.summary["member"] == m].iloc[0].to_dict(),
            "lines": report.invoice(m).to_dict("records"),
        }
        for m in report.members
    ]
    # Every flag is shown but the per-day coverage ones past the first few: those are in
    # the coverage table, and cut with them (the first 12 flags, whatever they were) a
    # month with many partial days hid its unpriced usage and members with no data.
    days = {d["message"] for d in report.coverage_daily.to_dict("records") if d["message"]}
    day_flags = [f for f in report.flags if f in days]
    return template.render(
        report=report,
        member=member,
        flags=[f for f in report.flags if f not in days] + day_flags[:DAY_FLAGS_SHOWN],
        more_days=max(0, len(day_flags) - DAY_FLAGS_SHOWN),
        summary=report.summary.to_dict("records"),
        consortium=report.consortium.to_dict("records"),
        invoices=invoices,
        settlement=report.settlement,
        net_settlement=report.net_settlement.to_dict("records"),
        lost=lost_rows(report),
        coverage_days=[d for d in report.coverage_daily.to_dict("records") if d["message"]],
        charts=chart_svgs,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


def _files(report: MonthReport, member: str | None) -> dict[str, Any]:
    """File name -> writer(path)."""
    shown = restrict(report, member) if member is not None else report
    writers: dict[str, Any] = {}
    for m in shown.members:
        writers[f"invoice-{m}.csv"] = lambda p, m=m: _invoice_csv(shown, m).to_csv(p, index=False)
        writers[f"invoice-{m}.json"] = lambda p, m=m: p.write_text(
            json.dumps(_invoice_json(shown, m), indent=2, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )
    table = summary_table(shown, pool_from=report)
    writers["summary.csv"] = lambda p: _hours_frame(_money_frame(table, MONEY_COLUMNS)).to_csv(
        p, index=False
    )
    writers["summary.parquet"] = lambda p: _parquet(table, p)
    writers["settlement.csv"] = lambda p: _settlement_csv(shown).to_csv(p)
    if member is None and len(report.unattributed):
        writers["unattributed.csv"] = lambda p: report.unattributed.to_csv(p, index=False)
    writers[page_name(member)] = lambda p: p.write_text(_html(shown, member), encoding="utf-8")
    return writers


def page_name(member: str | None) -> str:
    """The HTML page of the full report, or of `member`'s view."""
    return "report.html" if member is None else f"report-{member}.html"


def _is_report_file(name: str, member: str | None) -> bool:
    """A name a report of this view writes (or wrote, for a month whose members or
    unpriced usage differed): the view's invoices, summary, settlement and page."""
    if name in ("summary.csv", "summary.parquet", "settlement.csv", page_name(member)):
        return True
    if member is not None:
        return name in (f"invoice-{member}.csv", f"invoice-{member}.json")
    return name == "unattributed.csv" or (
        name.startswith("invoice-") and name.endswith((".csv", ".json"))
    )


def _report_files(out_dir: Path, member: str | None) -> list[str]:
    """The files of an earlier report of this view in `out_dir` (none when there is no
    such folder). Anything else there (a member's view in its folder, notes) is not the
    report's and stays."""
    try:
        names = sorted(os.listdir(out_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise OutputError(out_dir, exc) from exc
    return [n for n in names if _is_report_file(n, member) and (out_dir / n).is_file()]


def _swap_in(staging: Path, out_dir: Path, new: list[str], old: list[str]) -> None:
    """Replace the earlier report's files in `out_dir` (`old`) by the new ones written in
    `staging`: the old ones are moved aside, the new ones in, then the old ones removed,
    so that no file of the earlier report (an invoice of a member no longer in the month,
    an unattributed.csv) stays beside the new one. A failure puts back what was moved:
    the folder holds the earlier report whole, never half of each. The folder itself is
    kept (not swapped for a new one) with whatever else is in it, its mode and owner."""
    aside = staging_folder(out_dir)
    moved_old: list[str] = []
    moved_new: list[str] = []
    try:
        for name in old:
            os.replace(out_dir / name, aside / name)
            moved_old.append(name)
        for name in new:
            os.replace(staging / name, out_dir / name)
            moved_new.append(name)
    except OSError as exc:
        error = OutputError(out_dir, exc)
        try:
            for name in reversed(moved_new):
                os.replace(out_dir / name, staging / name)
            for name in reversed(moved_old):
                os.replace(aside / name, out_dir / name)
        except OSError:
            # The earlier report is not lost: its files stay where they were moved.
            error.args = (f"{error}; the earlier report's files are in {aside}",)
            raise error from exc
        remove_staging(aside)
        raise error from exc
    sync_folder(out_dir)
    remove_staging(aside)


def _other_view(out_dir: Path, member: str | None) -> str | None:
    """The HTML page of another view of the month (the full report, or another member's
    view) already in `out_dir`, if any."""
    try:
        names = sorted(os.listdir(out_dir))
    except (FileNotFoundError, NotADirectoryError):
        return None  # nothing there; a path through a file is said when writing
    except OSError as exc:
        raise OutputError(out_dir, exc) from exc
    mine = page_name(member)
    for name in names:
        if name != mine and (name == "report.html" or _is_member_page(name)):
            return name
    return None


def _is_member_page(name: str) -> bool:
    return name.startswith("report-") and name.endswith(".html") and len(name) > len("report-.html")


def _parquet(table: pd.DataFrame, path: Path) -> None:
    out = table.copy()
    for column in MONEY_COLUMNS:
        out[column] = [None if v is None else Decimal(money_str(v) or "0") for v in out[column]]
    out.to_parquet(path, index=False)


def _settlement_csv(report: MonthReport) -> pd.DataFrame:
    frame = report.settlement.map(money_str)
    frame.index.name = "payer \\ payee"
    return frame


def write_report(
    report: MonthReport, out_dir: Path, member: str | None = None, overwrite: bool = False
) -> list[Path]:
    """Write the report files into `out_dir`; returns their paths (HTML last)."""
    out_dir = Path(out_dir)
    writers = _files(report, member)
    targets = [out_dir / name for name in writers]
    other = _other_view(out_dir, member)
    if other is not None:
        # The views share file names (summary.csv, settlement.csv, the invoices): one
        # written over another mixed them, a member's summary beside the full page.
        who = "the full report" if member is None else f"member {member}'s view"
        raise ReportExistsError(
            f"{out_dir}: holds another view of a report ({other}); {who} has files of "
            "the same names and is not written there, even with --overwrite: give it "
            "its own folder (--out)"
        )
    old = _report_files(out_dir, member)
    if not overwrite:
        for path in [*(t for t in targets if t.exists()), *(out_dir / n for n in old)]:
            raise ReportExistsError(
                f"{path}: a report file is already there (use --overwrite to replace it)"
            )
    for target in targets:
        if target.name not in old and (target.exists() or target.is_symlink()):
            # Not a file a report writes (a folder named summary.parquet): refused before
            # anything is moved, rather than failing halfway through the swap.
            what = "a folder is there" if target.is_dir() else "something not a file is there"
            raise OutputError(target, IsADirectoryError(errno.EISDIR, what))
    staging = staging_folder(out_dir)
    try:
        for name, writer in writers.items():
            writer(staging / name)
        if not out_dir.exists():
            os.replace(staging, out_dir)
        else:
            _swap_in(staging, out_dir, list(writers), old)
    except OSError as exc:
        raise OutputError(out_dir, exc) from exc
    finally:
        remove_staging(staging)
    html = [t for t in targets if t.suffix == ".html"]
    return [t for t in targets if t.suffix != ".html"] + html
