"""Writing a study into `--out DIR`, all or nothing: every file is written into a
temporary folder beside DIR, then renamed into DIR, so an error leaves DIR as it was."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from scheduler.sim.pipeline import Study

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
)


def summary_json(study: Study) -> str:
    return json.dumps(study.summary, indent=2, allow_nan=False) + "\n"


def _write_tables(study: Study, folder: Path) -> None:
    (folder / "summary.json").write_text(summary_json(study), encoding="utf-8")
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


def write_study(study: Study, out_dir: Path) -> list[Path]:
    """Write every output file of `study` into `out_dir` (created when missing)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _write_tables(study, staging)
        out_dir.mkdir(exist_ok=True)
        written = []
        for name in OUTPUT_FILES:
            target = out_dir / name
            os.replace(staging / name, target)
            written.append(target)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)
