"""What-if simulation for ShareService.Simulate: the same trace replayed by the simulator
(`fairpool simulate`, the fixed interface) under the current and a draft policy, on the
cluster the scheduler sees now.

Each run is a child process: a simulation is CPU-bound and long, and a child can be killed
when the caller's deadline passes without leaving a thread behind.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from policies.errors import InputError
from policies.model import Policy
from scheduler.api.policy_store import canonical_document
from scheduler.snapshot import Snapshot

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
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(summary under current, summary under draft). Raises InputError for a bad
        trace or a policy the cluster cannot use, TimeoutError past `timeout`."""
        limit = DEFAULT_TIMEOUT_SECONDS if timeout is None else min(timeout, 3600.0)
        with tempfile.TemporaryDirectory(prefix="fairpool-whatif-") as tmp:
            folder = Path(tmp)
            (folder / "cluster.yaml").write_text(inventory_document(snapshot))
            (folder / "trace.csv").write_text(trace_csv)
            (folder / "current.yaml").write_text(canonical_document(current, current.version))
            (folder / "draft.yaml").write_text(canonical_document(draft, draft.version))
            with ThreadPoolExecutor(2) as pool:
                runs = [
                    pool.submit(self._run, folder, label, limit) for label in ("current", "draft")
                ]
                return runs[0].result(), runs[1].result()

    def _run(self, folder: Path, label: str, timeout: float) -> dict[str, Any]:
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
