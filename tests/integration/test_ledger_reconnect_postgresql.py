"""A ledger kept open (the meter's `--watch`, the scheduler's policy log) outlives its
connections: when PostgreSQL ends them (a restart, a failover, an idle timeout at a
proxy), the next statement opens a new one rather than failing on a dead one."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from reports.ledger import Ledger
from tests.pgtest import PostgresServer

pytestmark = pytest.mark.integration


def end_sessions(postgres: PostgresServer, database: str) -> int:
    """What a server restart does to the ledger's pooled connections."""
    with psycopg.connect(postgres.url("postgres").replace("+psycopg", ""), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return len(rows)


def test_the_next_statement_after_the_server_ended_the_connections_succeeds(
    postgres: PostgresServer, postgres_url: str
) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    hour = datetime(2026, 10, 5, 9, tzinfo=UTC)
    with Ledger(postgres_url) as ledger:
        ledger.mark_pending(hour, "prometheus unreachable")
        assert end_sessions(postgres, database) >= 1
        # Before: psycopg.OperationalError "terminating connection due to administrator
        # command", and the hour's run failed until the next one.
        assert ledger.pending_hours() == [hour]
