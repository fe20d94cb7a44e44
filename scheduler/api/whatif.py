"""What-if simulation for ShareService.Simulate: the same trace replayed by the simulator
(`fairpool simulate`, the fixed interface) under the current and a draft policy, on the
cluster the scheduler sees now.

Each run is a child process: a simulation is CPU-bound and long, and a child can be killed
when the caller's deadline passes without leaving a thread behind.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from policies.errors import InputError
from policies.model import Policy
from scheduler.api.policy_store import canonical_document
from scheduler.engine.snapshot import Snapshot
from scheduler.traces.csv import CANONICAL_COLUMNS

DEFAULT_TIMEOUT_SECONDS = 600.0
MIB = 1 << 20


class SimulationFailed(RuntimeError):
    """The simulator broke (not the caller's input)."""


def inventory_document(snapshot: Snapshot) -> str:
    """A ClusterInventory of the snapshot's Ready, owned GPU nodes, grouped by shape."""
    groups: Counter[tuple[str, str, int, int, int, int, str]] = Counter()
    for node in snapshot.nodes:
        if node.owner is None or node.gpu_model is None or not node.ready or node.gpus <= 0:
            continue
        key = (
            node.owner,
            node.gpu_model,
            node.gpus,
            max(1, node.cpu_milli // 1000),
            max(1, node.memory_bytes // (1024 * MIB)),
            max(1, node.max_pods),
            node.topology_domain or "default",
        )
        groups[key] += 1
    if not groups:
        raise InputError("the cluster has no Ready GPU nodes with an owner to simulate on")
    node_groups: list[dict[str, Any]] = []
    for i, (key, count) in enumerate(sorted(groups.items())):
        owner, model, gpus, cpu, memory, max_pods, domain = key
        name = re.sub(r"[^a-z0-9]+", "-", f"{owner}-{model}".lower()).strip("-")[:50]
        node_groups.append(
            {
                "name": f"{name}-{i}",
                "owner": owner,
                "count": count,
                "gpusPerNode": gpus,
                "gpuModel": model,
                "cpu": cpu,
                "memoryGiB": memory,
                "maxPods": max_pods,
                "topologyDomain": domain,
            }
        )
    document = {
        "apiVersion": "fairpool.io/v1",
        "kind": "ClusterInventory",
        "spec": {"nodeGroups": node_groups},
    }
    return yaml.safe_dump(document, sort_keys=False)


def trace_from_usage(usage: pd.DataFrame, start: datetime, members: set[str]) -> str | None:
    """A trace (CSV text) of the jobs metered in the ledger, for replaying real demand.

    The ledger holds GPU-seconds per pod and hour, not requests, so each job is rebuilt
    from what it used: its pods, GPUs per pod (the most GPU-seconds any of its pods used
    in one hour, over 3600), submitted when first metered, running for its GPU-seconds
    over its GPUs. Waiting before the first metered hour is not in the ledger, and is
    lost. None when no member used anything."""
    frame = usage[usage["member"].isin(members)]
    if frame.empty:
        return None
    origin = start.timestamp()
    rows = []
    for job_id, job in frame.groupby("job_id", sort=True):
        pods = job.groupby("pod_uid")["gpu_seconds"]
        gpus_per_pod = max(1, round(float(pods.max().max()) / 3600.0))
        num_pods = int(pods.ngroups)
        duration = max(1.0, float(job["gpu_seconds"].sum()) / (gpus_per_pod * num_pods))
        first = min(job["hour"]).timestamp()
        rows.append(
            (
                str(job_id) or str(job["pod_uid"].iloc[0]),
                str(job["member"].iloc[0]),
                round(max(0.0, first - origin), 3),
                round(duration, 3),
                num_pods,
                gpus_per_pod,
                str(job["gpu_model"].iloc[0]),
            )
        )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CANONICAL_COLUMNS[:7])
    writer.writerows(rows)
    return out.getvalue()


class WhatIf:
    def __init__(self, command: list[str] | None = None) -> None:
        self._command = command or [sys.executable, "-m", "scheduler.cli.main", "simulate"]

    def compare(
        self,
        snapshot: Snapshot,
        current: Policy,
        draft: Policy,
        trace_csv: str,
        timeout: float | None,
        batch_s: float = 0.0,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(summary under current, summary under draft), both replayed with `batch_s`
        (`fairpool simulate --batch-seconds`). Raises InputError for a bad trace or a
        policy the cluster cannot use, TimeoutError past `timeout`."""
        limit = DEFAULT_TIMEOUT_SECONDS if timeout is None else min(timeout, 3600.0)
        with tempfile.TemporaryDirectory(prefix="fairpool-whatif-") as tmp:
            folder = Path(tmp)
            (folder / "cluster.yaml").write_text(inventory_document(snapshot))
            (folder / "trace.csv").write_text(trace_csv)
            (folder / "current.yaml").write_text(canonical_document(current, current.version))
            (folder / "draft.yaml").write_text(canonical_document(draft, draft.version))
            with ThreadPoolExecutor(2) as pool:
                runs = [
                    pool.submit(self._run, folder, label, limit, batch_s)
                    for label in ("current", "draft")
                ]
                return runs[0].result(), runs[1].result()

    def _run(self, folder: Path, label: str, timeout: float, batch_s: float) -> dict[str, Any]:
        out = folder / f"out-{label}"
        command = [
            *self._command,
            "--cluster",
            str(folder / "cluster.yaml"),
            "--policy",
            str(folder / f"{label}.yaml"),
            "--trace",
            str(folder / "trace.csv"),
            "--out",
            str(out),
            "--batch-seconds",
            repr(batch_s),
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=max(timeout, 0.1), check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"the {label} simulation ran out of time") from exc
        if done.returncode == 2:
            text = done.stderr.strip().replace(str(folder) + "/", "")
            raise InputError(f"{label} simulation: {text[-2000:]}")
        if done.returncode != 0:
            raise SimulationFailed(
                f"the {label} simulation failed (exit {done.returncode}): "
                f"{done.stderr.strip()[-1500:]}"
            )
        try:
            summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
        except (OSError, ValueError) as exc:
            raise SimulationFailed(f"the {label} simulation wrote no summary.json") from exc
        return summary
