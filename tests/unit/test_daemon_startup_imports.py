"""A scheduler whose policy is a file or a ConfigMap starts without the ledger's database
libraries or the report tables: they cost about half a second of every start (a restart or
a fail-over is that much longer before the first bind)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("pandas", "sqlalchemy", "alembic")


def _imported_after(statement: str, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_the_daemon_and_its_command_import_no_ledger_or_report_library() -> None:
    assert _imported_after("import scheduler.cli.run, scheduler.k8s.daemon") == []


def test_the_api_front_imports_no_ledger_report_or_kubernetes_library() -> None:
    """The front is a process of its own, started again when it ends: the address is
    unanswered while it imports (about a second more with these)."""
    assert _imported_after("import scheduler.api.front", (*HEAVY, "kubernetes")) == []


def test_the_audit_log_still_brings_the_ledger_in() -> None:
    """The check above can fail: the module that needs the database does import it."""
    assert "sqlalchemy" in _imported_after("import scheduler.api.policy_audit")
