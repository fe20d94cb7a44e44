"""Report benchmark: one month (October 2026, Europe/Paris, 745 hours) of 1,000 GPUs with
~30,000 pods in memory, through the cost model and the renderer.

Runs in a fresh subprocess so the peak RSS is the report's own. Targets: the
report in under 30 s, peak memory under 2 GiB."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from scheduler.cli.tables import print_table

GPUS = 1000
MONTH = "2026-10"
TARGET_S = 30.0
TARGET_RSS_MIB = 2048.0


def _child() -> dict[str, float]:
    from policies.loader import load_policy
    from reports.costmodel import build_month_report, check_invariants
    from reports.rendering.render import write_report
    from reports.sources.synthetic import demo_nodes, synthetic_month

    policy = load_policy()
    started = time.perf_counter()
    usage, capacity, reclaim = synthetic_month(
        policy, MONTH, demo_nodes(policy, GPUS), mean_pod_hours=20.0
    )
    generated = time.perf_counter()
    report = build_month_report(MONTH, policy, usage, capacity, reclaim, source="benchmark")
    check_invariants(report)
    modelled = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        paths = write_report(report, Path(folder) / MONTH)
        html_bytes = paths[-1].stat().st_size
    rendered = time.perf_counter()
    return {
        "gpus": float(capacity.groupby("hour")["gpu_seconds_available"].sum().iloc[0] / 3600),
        "hours": float(report.hours),
        "usage_rows": float(len(usage)),
        "pods": float(usage["pod_uid"].nunique()),
        "generate_s": generated - started,
        "cost_model_s": modelled - generated,
        "render_s": rendered - modelled,
        "html_kib": html_bytes / 1024,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run(console: Console) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "bench.bench_report", "--child"],
        capture_output=True,
        text=True,
        check=False,
    )
    if process.returncode != 0:
        console.print(f"[red]report benchmark failed[/]\n{process.stderr[-2000:]}")
        raise SystemExit(1)
    result = json.loads(process.stdout.strip().splitlines()[-1])
    report_s = result["cost_model_s"] + result["render_s"]
    table = Table(title=f"Monthly report, {int(result['gpus']):,} GPUs x {int(result['hours'])} h")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("ok", justify="center")

    def ok(good: bool) -> str:
        return "[green]yes[/]" if good else "[red]NO[/]"

    table.add_row("usage rows (hour x pod)", f"{int(result['usage_rows']):,}", "", "")
    table.add_row("pods", f"{int(result['pods']):,}", "", "")
    table.add_row("synthetic usage built", f"{result['generate_s']:.1f} s", "", "")
    table.add_row("cost model", f"{result['cost_model_s']:.1f} s", "", "")
    table.add_row("rendering (CSV, JSON, Parquet, HTML)", f"{result['render_s']:.1f} s", "", "")
    table.add_row(
        "report (cost model + rendering)",
        f"{report_s:.1f} s",
        f"< {TARGET_S:.0f} s",
        ok(report_s < TARGET_S),
    )
    table.add_row(
        "peak memory (RSS)",
        f"{result['peak_rss_mib']:,.0f} MiB",
        f"< {TARGET_RSS_MIB:,.0f} MiB",
        ok(result["peak_rss_mib"] < TARGET_RSS_MIB),
    )
    table.add_row("HTML size", f"{result['html_kib']:,.0f} KiB", "", "")
    print_table(console, table)


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        print(json.dumps(_child()))
    else:
        run(Console())
