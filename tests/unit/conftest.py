"""Fixtures shared by unit tests.

- `ledger_url` (function): a fresh SQLite ledger URL in the test's own folder (no file yet).
  The ledger tests take it, so that tests/integration/test_ledger_postgresql.py runs the
  very same tests against a real PostgreSQL server by giving `ledger_url` another value.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"
