"""The ledger's and the policy audit log's tests, run again on a real PostgreSQL server:
the tests are the unit tests' own (imported below); only `ledger_url` differs (here a fresh
PostgreSQL database, tests/integration/conftest.py)."""

from __future__ import annotations

import pytest

from tests.unit.test_api_policy import *  # noqa: F403
from tests.unit.test_ledger import *  # noqa: F403
from tests.unit.test_ledger_migrations import *  # noqa: F403

pytestmark = pytest.mark.integration
