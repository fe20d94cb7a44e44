"""The layout is the architecture: the pure engine imports nothing from the shells, and
the cost model nothing from metering, the ledger or rendering."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(package: Path) -> dict[str, set[str]]:
    """Module file -> absolute module names it imports (top-level or not)."""
    out: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        out[str(path.relative_to(ROOT))] = names
    return out


def offending(package: str, allowed_prefixes: tuple[str, ...]) -> list[str]:
    project = ("scheduler", "policies", "reports", "proto", "bench", "tests")
    bad = []
    for module, names in imported_modules(ROOT / package).items():
        for name in sorted(names):
            if name.split(".")[0] in project and not name.startswith(allowed_prefixes):
                bad.append(f"{module} imports {name}")
    return bad


def test_the_engine_imports_nothing_from_the_shells() -> None:
    assert offending("scheduler/engine", ("scheduler.engine", "policies")) == []


def test_the_cost_model_is_pure() -> None:
    assert offending("reports/costmodel", ("reports.costmodel", "policies")) == []


def test_the_check_sees_a_shell_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "scheduler" / "engine"
    fake.mkdir(parents=True)
    (fake / "leak.py").write_text("def f():\n    from scheduler.k8s.daemon import Daemon\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert offending("scheduler/engine", ("scheduler.engine", "policies")) == [
        "scheduler/engine/leak.py imports scheduler.k8s.daemon"
    ]
