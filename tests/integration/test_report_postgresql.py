"""`fairpool report` and the monthly job on a PostgreSQL ledger: the unit tests that read
the ledger (tests/unit/test_report_cli.py), with `ledger_url` a fresh PostgreSQL database
that their own fixture fills."""

from __future__ import annotations

import pytest

from tests.unit.test_report_cli import (
    ledger_url,
    test_member_report_from_the_ledger,
    test_month_without_data_exits_1,
    test_monthly_job_writes_last_month_once,
    test_report_from_the_ledger,
)

pytestmark = pytest.mark.integration

__all__ = [
    "ledger_url",
    "test_member_report_from_the_ledger",
    "test_month_without_data_exits_1",
    "test_monthly_job_writes_last_month_once",
    "test_report_from_the_ledger",
]
