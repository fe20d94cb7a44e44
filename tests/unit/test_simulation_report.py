"""`fairpool simulate` bills its tables in memory; reading them back from the folder's
Parquet files (`fairpool report --from-simulation`) gives the same bill to the cent."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from policies.loader import parse_policy
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
