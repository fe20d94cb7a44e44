"""Writing a study into `--out DIR`, all or nothing: every file, its cost report
included, is written into a temporary folder beside DIR, then renamed into DIR, so an
error (or Ctrl-C) while they are written leaves DIR as it was, and never the last run's
report beside this run's tables."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pandas as pd

from policies.errors import OutputError
from policies.files import remove_staging, staging_folder
from reports.costmodel import MonthReport
from reports.rendering.render import write_report
from reports.sources.simulation import POLICY_FILE, remove_simulation_report
from scheduler.sim.pipeline import Study

REPORT_FOLDER = "report"
OUTPUT_FILES = (
    "summary.json",
    "jobs.csv",
    "jobs.parquet",
    "members.csv",
    "members.parquet",
    "timeline.parquet",
    "usage.parquet",
    "capacity.parquet",
    "reclaim_lost.parquet",
    POLICY_FILE,
)


def summary_json(study: Study) -> str:
    return json.dumps(study.summary, indent=2, allow_nan=False) + "\n"


def _write_tables(study: Study, folder: Path, policy_text: str) -> None:
    (folder / "summary.json").write_text(summary_json(study), encoding="utf-8")
    (folder / POLICY_FILE).write_text(policy_text, encoding="utf-8")
    tables: dict[str, pd.DataFrame] = {
        "jobs": study.jobs,
        "members": study.members,
    }
    for name, frame in tables.items():
        frame.to_csv(folder / f"{name}.csv", index=False)
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    study.timeline.to_parquet(folder / "timeline.parquet", index=False)
    study.usage.to_parquet(folder / "usage.parquet", index=False)
    study.capacity.to_parquet(folder / "capacity.parquet", index=False)
    study.reclaim_lost.to_parquet(folder / "reclaim_lost.parquet", index=False)


def check_out_dir(out_dir: Path) -> None:
    """Refuse, before a replay that may take minutes, a folder `write_study` could not
    write: a file in its place or on its path, or a parent without write permission
    (the files are staged beside it)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(out_dir, NotADirectoryError(errno.ENOTDIR, "", str(out_dir)))
    existing = out_dir.absolute().parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(out_dir, NotADirectoryError(errno.ENOTDIR, "", str(existing)))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(out_dir, PermissionError(errno.EACCES, os.strerror(errno.EACCES)))


def write_study(
    study: Study, out_dir: Path, policy_text: str, report: MonthReport | None = None
) -> list[Path]:
    """Write every output file of `study` into `out_dir` (created when missing), with
    `policy_text`, the policy it ran with, and `report`, its cost report, into
    `out_dir/report` (which is removed when there is none: a report belongs with the
    tables it bills)."""
    out_dir = Path(out_dir)
    staging = staging_folder(out_dir)
    try:
        _write_tables(study, staging, policy_text)
        if report is not None:
            write_report(report, staging / REPORT_FOLDER, overwrite=True)
        try:
            out_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(out_dir, exc) from exc
        # The last run's report goes first: cut short from here on, the folder holds no
        # report (`fairpool report --from-simulation` makes it again), never a stale one.
        remove_simulation_report(out_dir)
        written = []
        for name in OUTPUT_FILES:
            target = out_dir / name
            os.replace(staging / name, target)
            written.append(target)
        if report is not None:
            target = out_dir / REPORT_FOLDER
            os.replace(staging / REPORT_FOLDER, target)
            written.append(target)
        return written
    finally:
        remove_staging(staging)
