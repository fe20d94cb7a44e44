"""The compiled engine (`make engine`, mypyc) and its Python sources are one engine: a
contended replay on the built-in defaults makes the same decisions, and the simulator
(whose modules that run at every event are compiled with the engine) the same records,
with either; and the choice of build refuses a compiled engine that is not what the
sources say."""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler import engine_build
from scheduler.engine.snapshot import Node, PendingJob, PendingPod, PodSpec, Taint

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = ROOT / "policies" / "defaults"

REPLAY = """
import hashlib, json
from policies.inventory import load_inventory
from policies.loader import load_policy
from scheduler.cli.simulate import default_trace
from scheduler.engine_build import kind
from scheduler.sim import simulator, waiting
from scheduler.sim.cluster import build_nodes
from scheduler.sim.simulator import Simulator

inventory = load_inventory("{defaults}/cluster.yaml")
policy = load_policy("{defaults}/policy.yaml")
trace, _ = default_trace(inventory, policy, 6.0, 1.3, 5)
result = Simulator(build_nodes(inventory), policy, trace, None).run()
decided = repr((sorted(result.jobs.items()), result.pod_runs, result.victims,
                result.timeline, result.lost, result.usage, result.cycles))
print(json.dumps({{
    "build": kind(),
    "simulator": [m.__file__.endswith(".so") for m in (simulator, waiting)],
    "digest": hashlib.sha256(decided.encode()).hexdigest(),
    "cycles": result.cycles,
    "preemptions": len(result.victims),
    "consolidations": result.consolidation_preemptions,
}}))
"""


def _replay(build: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", REPLAY.format(defaults=DEFAULTS)],
        env={**os.environ, engine_build.VARIABLE: build},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_compiled_and_the_interpreted_engine_decide_the_same() -> None:
    compiled, interpreted = _replay("compiled"), _replay("interpreted")
    assert compiled["build"] == "compiled"
    assert interpreted["build"] == "interpreted"
    # The simulator's compiled modules go with the engine's build.
    assert compiled["simulator"] == [True, True]
    assert interpreted["simulator"] == [False, False]
    # The replay is contended: reclaim and consolidation are part of what is compared.
    assert int(compiled["preemptions"]) > 0  # type: ignore[call-overload]
    assert int(compiled["consolidations"]) > 0  # type: ignore[call-overload]
    assert compiled == {**interpreted, "build": "compiled", "simulator": [True, True]}


def _engine_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compiled: dict[str, str]) -> Path:
    """Stand-in folders: `engine/` with `__init__.py`, `a.py` and `b.py`, and `sim/` with
    `c.py` (its one compiled module) and `d.py`, each compiled module beside its source;
    and a build record for the sources in `compiled` (each with its real SHA-256, or the
    one given when not empty); none when `compiled` is empty. Returns the folders'
    parent."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    sources = {
        "engine/__init__.py": "#",
        "engine/a.py": "x = 1\n",
        "engine/b.py": "y = 2\n",
        "sim/c.py": "z = 3\n",
        "sim/d.py": "w = 4\n",
    }
    for name, text in sources.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    for name in ("engine/a", "engine/b", "sim/c"):
        (tmp_path / f"{name}{suffix}").write_bytes(b"")
    if compiled:
        digests = {n: hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in compiled}
        digests.update({n: d for n, d in compiled.items() if d})
        (tmp_path / "engine" / "compiled.json").write_text(json.dumps(digests))
    monkeypatch.setattr(engine_build, "ENGINE_DIR", tmp_path / "engine")
    monkeypatch.setattr(engine_build, "SIM_DIR", tmp_path / "sim")
    monkeypatch.setattr(engine_build, "SIM_MODULES", ("c",))
    return tmp_path


def test_a_source_edited_since_the_build_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = {"engine/a.py": "", "engine/b.py": "", "sim/c.py": ""}
    folder = _engine_dir(tmp_path, monkeypatch, built)
    assert engine_build.stale_modules() == []
    (folder / "engine" / "b.py").write_text("y = 3\n")
    assert engine_build.stale_modules() == ["engine/b.py"]
    (folder / "sim" / "c.py").write_text("z = 4\n")
    assert engine_build.stale_modules() == ["engine/b.py", "sim/c.py"]


def test_only_the_simulators_compiled_modules_are_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _engine_dir(tmp_path, monkeypatch, {"engine/a.py": "", "engine/b.py": ""})
    # sim/c.py is one of them, and the record does not have it; sim/d.py is not.
    assert engine_build.stale_modules() == ["sim/c.py"]
    (folder / "sim" / "d.py").write_text("w = 5\n")
    assert engine_build.stale_modules() == ["sim/c.py"]


def test_a_source_without_its_compiled_module_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = {"engine/a.py": "", "engine/b.py": "", "sim/c.py": ""}
    folder = _engine_dir(tmp_path, monkeypatch, built)
    (folder / "engine" / f"a{importlib.machinery.EXTENSION_SUFFIXES[0]}").unlink()
    assert engine_build.stale_modules() == ["engine/a.py"]


def test_no_build_record_means_not_compiled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _engine_dir(tmp_path, monkeypatch, {})
    assert engine_build.stale_modules() is None


def test_asking_for_the_compiled_engine_when_it_is_stale_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _engine_dir(tmp_path, monkeypatch, {"engine/a.py": "", "engine/b.py": "", "sim/c.py": "0" * 64})
    monkeypatch.setenv(engine_build.VARIABLE, "compiled")
    monkeypatch.delitem(sys.modules, engine_build.PACKAGE)
    with pytest.raises(
        SystemExit, match=r"FAIRPOOL_ENGINE=compiled: .*out of date for sim/c\.py.*make engine"
    ):
        engine_build.choose()


def test_make_rebuilds_when_a_compiled_simulator_module_changes() -> None:
    # mk/engine.mk cannot import the list: it names the simulator's compiled modules
    # itself, so that editing one rebuilds the engine.
    text = (ROOT / "mk" / "engine.mk").read_text()
    found = re.search(r"\$\(foreach m,([\w ]+),scheduler/sim/\$\(m\)\.py\)", text)
    assert found is not None, "mk/engine.mk lists no simulator module"
    assert tuple(found.group(1).split()) == engine_build.SIM_MODULES


def test_an_unknown_build_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(engine_build.VARIABLE, "fast")
    with pytest.raises(SystemExit, match=r"FAIRPOOL_ENGINE: expected one of .* got 'fast'"):
        engine_build.choose()


def test_frozen_engine_records_survive_pickling() -> None:
    # Standalone replays send the cluster's nodes to worker processes.
    node = Node(
        name="n1",
        owner="m",
        gpu_model="H100",
        gpus=8,
        cpu_milli=1000,
        memory_bytes=2**30,
        max_pods=110,
        topology_domain="r1",
        labels={"a": "b"},
        taints=(Taint(key="k", value="v", effect="NoSchedule"),),
    )
    job = PendingJob(
        job_id="j",
        member="m",
        pods=(
            PendingPod(
                uid="p", name="p", namespace="m", spec=PodSpec(gpus=1, node_selector={"a": "b"})
            ),
        ),
        submitted_at=1.0,
    )
    assert pickle.loads(pickle.dumps(node)) == node
    assert pickle.loads(pickle.dumps(job)) == job
