"""The cost report of a simulation: the simulator's usage through the same cost model
and renderer as metered usage (so `make demo` ends in a real report).

`fairpool simulate` bills its tables as they are in memory (`simulation_report`);
`fairpool report --from-simulation` reads them back from a simulation's folder."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from policies.errors import InputError, OutputError
from policies.files import remove_staging, staging_folder
from policies.loader import load_policy
from policies.model import Policy
from reports.costmodel import MonthReport, build_month_report
from reports.costmodel.frames import CAPACITY_COLUMNS, RECLAIM_COLUMNS
from reports.costmodel.months import month_bounds
from reports.costmodel.usage_row import BILLED_USAGE_COLUMNS
from reports.rendering.render import write_report

USAGE_FILE = "usage.parquet"
CAPACITY_FILE = "capacity.parquet"
RECLAIM_FILE = "reclaim_lost.parquet"
SUMMARY_FILE = "summary.json"
POLICY_FILE = "policy.yaml"
"""The policy the simulation ran with (`scheduler.sim.outputs` writes it)."""


class SimulationOutputError(InputError):
    """A simulation folder without the files the report needs."""


def _read(path: Path, required: bool, columns: Sequence[str]) -> pd.DataFrame | None:
    if not path.exists():
        if required:
            raise SimulationOutputError(f"{path}: not found (run `fairpool simulate` first)")
        return None
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise SimulationOutputError(f"{path}: cannot read parquet: {exc}") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        # Was a KeyError traceback from the first column looked up.
        raise SimulationOutputError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def read_simulation(
    out_dir: Path,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None, dict[str, Any]]:
    out_dir = Path(out_dir)
    usage = _read(out_dir / USAGE_FILE, True, BILLED_USAGE_COLUMNS)
    capacity = _read(out_dir / CAPACITY_FILE, True, CAPACITY_COLUMNS)
    reclaim = _read(out_dir / RECLAIM_FILE, False, RECLAIM_COLUMNS)
    summary: dict[str, Any] = {}
    summary_path = out_dir / SUMMARY_FILE
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SimulationOutputError(f"{summary_path}: line {exc.lineno}: {exc.msg}") from exc
    assert usage is not None and capacity is not None
    return usage, capacity, reclaim, summary


def busiest_month(usage: pd.DataFrame, capacity: pd.DataFrame, policy: Policy) -> str:
    """The month (policy time zone) with the most GPU-seconds used, else of capacity."""
    tz = policy.billing.zone
    frame, column = (
        (usage, "gpu_seconds") if not usage.empty else (capacity, "gpu_seconds_available")
    )
    if frame.empty:
        raise SimulationOutputError("simulation: no usage and no capacity rows")
    hours = pd.to_datetime(frame["hour"], utc=True)
    local = hours.dt.tz_convert(tz)
    months = local.dt.strftime("%Y-%m")
    totals = frame[column].groupby(months.to_numpy()).sum()
    best = totals[totals == totals.max()].index.min()  # ties: the earlier month
    return str(best)


def simulation_report(
    usage: pd.DataFrame,
    capacity: pd.DataFrame,
    reclaim: pd.DataFrame | None,
    summary: Mapping[str, Any],
    policy: Policy,
    month: str | None = None,
) -> MonthReport:
    """The bill of a simulation's usage, capacity and reclaim tables for `month` (default:
    its busiest month), over the simulated window only: no hour outside it is missing,
    purchases are prorated to it."""
    chosen = month or busiest_month(usage, capacity, policy)
    window = simulated_window(capacity, summary)
    report = build_month_report(
        chosen,
        policy,
        usage,
        capacity,
        reclaim,
        simulation_summary=summary,
        source="simulation",
        window=window,
    )
    first, last = month_bounds(chosen, policy.billing.zone)
    billed = (max(window[0], first), min(window[1], last))
    hours = (billed[1] - billed[0]).total_seconds() / 3600
    full = (window[1] - window[0]).total_seconds() / 3600
    # The window to the minute and its hours as exactly: whole hours, floored, said a
    # window of 89.85 hours inside the month "ran 89 hours" beside "90 hours" billed.
    report.period_note = (
        f"simulated window {billed[0]:%Y-%m-%d %H:%M}Z to {billed[1]:%Y-%m-%d %H:%M}Z "
        f"({_hours(hours)} hours of {chosen}"
        + (f"; the simulation ran {_hours(full)} hours" if _hours(full) != _hours(hours) else "")
        + "): only these hours are billed; purchases and shared fixed costs are prorated "
        "to them"
    )
    return report


def _hours(value: float) -> str:
    """Hours to the hundredth (a window is named to the minute), without trailing zeros."""
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def simulated_window(
    capacity: pd.DataFrame, summary: Mapping[str, Any]
) -> tuple[datetime, datetime]:
    """The span the simulation covered: summary.json's window, else the hours of its
    capacity table."""
    block = summary.get("window")
    if isinstance(block, Mapping) and block.get("start") and block.get("end"):
        try:
            return (_utc(str(block["start"])), _utc(str(block["end"])))
        except ValueError as exc:
            raise SimulationOutputError(f"summary.json: window: {exc}") from exc
    if capacity.empty:
        raise SimulationOutputError("simulation: no capacity rows to find its window")
    hours = pd.to_datetime(capacity["hour"], utc=True)
    return hours.min().to_pydatetime(), (hours.max() + pd.Timedelta(hours=1)).to_pydatetime()


def _utc(text: str) -> datetime:
    stamp = pd.Timestamp(text)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


def simulation_policy(out_dir: Path, policy_file: Path | None) -> tuple[Policy, str]:
    """The policy to bill a simulation's folder with, and a line saying which: the one
    given, else the one the simulation ran with (its `policy.yaml`). A folder written
    before fairpool kept it is billed with the built-in policy only when that is the one
    its summary names: a simulation of another policy billed at the demo's prices was a
    report with the wrong prices and no word of it."""
    kept = Path(out_dir) / POLICY_FILE
    if policy_file is not None:
        policy = load_policy(policy_file)
        said = f"policy: {policy_file} ({policy.metadata.name})"
        ran = _ran_with(out_dir)
        if ran is not None and ran != policy.metadata.name:
            said += f"; the simulation ran with policy {ran}"
        return policy, said
    if kept.exists():
        policy = load_policy(kept)
        return policy, f"policy: the simulation's own, {kept} ({policy.metadata.name})"
    policy = load_policy(None)
    ran = _ran_with(out_dir)
    if ran is not None and ran != policy.metadata.name:
        raise SimulationOutputError(
            f"{out_dir}: the simulation ran with policy {ran!r} and its folder has no "
            f"{POLICY_FILE} (written before fairpool kept it there): give that policy "
            "with --policy"
        )
    return policy, f"policy: the built-in demo policy ({policy.metadata.name})"


def _ran_with(out_dir: Path) -> str | None:
    """The name of the policy the simulation's summary says it ran with."""
    path = Path(out_dir) / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # read_simulation says what is wrong with it
    block = summary.get("simulation") if isinstance(summary, dict) else None
    name = block.get("policy") if isinstance(block, dict) else None
    return name if isinstance(name, str) else None


def simulated_report(out_dir: Path, policy: Policy, month: str | None = None) -> MonthReport:
    """The bill of the simulation whose tables are in `out_dir`."""
    usage, capacity, reclaim, summary = read_simulation(out_dir)
    return simulation_report(usage, capacity, reclaim, summary, policy, month)


def write_simulation_report(report: MonthReport, out_dir: Path, overwrite: bool = True) -> Path:
    """Write a simulation's bill into `out_dir/report`; returns the HTML path. A rerun of
    the simulation replaces its report folder whole (`overwrite`), so no invoice of a
    member the new run lacks stays beside the new report."""
    target = Path(out_dir) / "report"
    if not (overwrite and target.is_dir()):
        return write_report(report, target, overwrite=overwrite)[-1]
    staging = staging_folder(target)
    try:
        written = write_report(report, staging, overwrite=True)
        remove_simulation_report(out_dir)
        os.replace(staging, target)
    except OSError as exc:
        raise OutputError(target, exc) from exc
    finally:
        remove_staging(staging)
    return target / written[-1].name


def remove_simulation_report(out_dir: Path) -> None:
    """The report folder of the simulation in `out_dir`, if any: a rerun with nothing
    to bill must not leave the last run's report beside its own tables."""
    target = Path(out_dir) / "report"
    if target.is_dir():
        try:
            shutil.rmtree(target)
        except OSError as exc:
            raise OutputError(target, exc) from exc


def write_simulated_report(
    out_dir: Path, policy: Policy, month: str | None = None, overwrite: bool = True
) -> Path:
    """Build the month's report from `out_dir`'s simulation files into `out_dir/report`;
    returns the HTML path."""
    report = simulated_report(Path(out_dir), policy, month)
    return write_simulation_report(report, out_dir, overwrite)
