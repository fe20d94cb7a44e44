"""Rotating the ledger role's password while a meter writes to a real PostgreSQL ledger
whose URL is in a file (`--ledger-url-file`, the chart's mounted Secret): ALTER ROLE, the
file rewritten, and the running meter's new connections use the new password; no hour
is lost or written twice."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.exc import OperationalError

from policies.model import Policy
from reports.ledger import Ledger
from reports.ledger.url_file import read_url_file
from reports.metering.meter import Meter
from reports.metering.prom_source import PromSource
from tests.integration.test_meter_prometheus import (
    END,
    START,
    metering_scenario,
    metering_tsdb,
    policy,
    prometheus,
)
from tests.pgtest import PostgresServer
from tests.promtest import PrometheusServer

pytestmark = pytest.mark.integration

__all__ = ["metering_scenario", "metering_tsdb", "policy", "prometheus"]

FLAG = "--ledger-url-file"


class Role:
    """A login role of its own owning a fresh database: the session's server keeps its
    `fairpool` role's password for the other tests."""

    def __init__(self, postgres: PostgresServer) -> None:
        self.postgres = postgres
        self.name = f"rot_{uuid.uuid4().hex[:10]}"
        self.database = postgres.create_database(self.name).rsplit("/", 1)[1]
        with self._admin(self.database) as conn:
            conn.execute(f"CREATE ROLE {self.name} LOGIN PASSWORD 'first-password'")  # type: ignore[arg-type]
            conn.execute(f"ALTER DATABASE {self.database} OWNER TO {self.name}")  # type: ignore[arg-type]
            conn.execute(f"ALTER SCHEMA public OWNER TO {self.name}")  # type: ignore[arg-type]

    def url(self, password: str) -> str:
        return (
            f"postgresql+psycopg://{self.name}:{password}@127.0.0.1:"
            f"{self.postgres.port}/{self.database}"
        )

    def rotate(self, password: str) -> None:
        """ALTER ROLE: sessions already open stay; new ones need the new password."""
        with self._admin("postgres") as conn:
            conn.execute(f"ALTER ROLE {self.name} PASSWORD '{password}'")  # type: ignore[arg-type]

    def drop(self) -> None:
        self.postgres.drop_database(self.database)
        with self._admin("postgres") as conn:
            conn.execute(f"DROP ROLE IF EXISTS {self.name}")  # type: ignore[arg-type]

    def _admin(self, database: str) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.postgres.port,
            user="fairpool",
            password=self.postgres.password,
            dbname=database,
            autocommit=True,
        )


@pytest.fixture
def role(postgres: PostgresServer) -> Iterator[Role]:
    made = Role(postgres)
    yield made
    made.drop()


def close_pooled(ledger: Ledger) -> None:
    # What an idle timeout, a proxy or the next Ledger opened (the monthly report job)
    # comes to: the writer's next statement needs a new connection.
    ledger.engine.dispose()


def write(path: Path, url: str) -> None:
    # As the kubelet does: a new file swapped in whole, never a half-written one.
    partial = path.with_suffix(".new")
    partial.write_text(url + "\n")
    partial.replace(path)


def test_the_running_meter_uses_the_rotated_password_from_the_file(
    role: Role, prometheus: PrometheusServer, policy: Policy, tmp_path: Path
) -> None:
    secret = tmp_path / "url"
    write(secret, role.url("first-password"))
    ledger = Ledger(read_url_file(secret, FLAG))
    meter = Meter(PromSource(prometheus.url), ledger, policy)
    middle = START + (END - START) / 2
    assert meter.meter_range(START, middle).hours_ok == 3

    role.rotate("second-password")
    write(secret, role.url("second-password"))
    close_pooled(ledger)
    summary = meter.meter_range(middle, END)

    assert summary.hours_ok == 3, summary.outcomes
    assert ledger.pending_hours() == []
    usage = ledger.usage_frame(START, END)
    assert ledger.hour_status(START, END)["status"].tolist() == ["metered"] * 6
    assert not usage.duplicated(["hour", "pod_uid"]).any()
    ledger.close()


def test_a_ledger_opened_after_the_rotation_reads_the_file_again(
    role: Role, tmp_path: Path
) -> None:
    # The monthly report job and the API's reports open the ledger again with the URL the
    # program was started with.
    secret = tmp_path / "url"
    write(secret, role.url("first-password"))
    started_with = read_url_file(secret, FLAG)
    Ledger(started_with).close()
    role.rotate("second-password")
    write(secret, role.url("second-password"))
    with Ledger(started_with, readonly=True) as ledger:
        assert ledger.pending_hours() == []


def test_hours_metered_before_the_file_is_refreshed_are_metered_after(
    role: Role, prometheus: PrometheusServer, policy: Policy, tmp_path: Path
) -> None:
    secret = tmp_path / "url"
    write(secret, role.url("first-password"))
    ledger = Ledger(read_url_file(secret, FLAG))
    meter = Meter(PromSource(prometheus.url), ledger, policy)
    assert meter.meter_range(START, START + (END - START) / 2).hours_ok == 3

    # The database has the new password; the kubelet has not refreshed the file yet.
    role.rotate("second-password")
    close_pooled(ledger)
    with pytest.raises(OperationalError, match="password authentication failed"):
        meter.meter_range(START, END)

    write(secret, role.url("second-password"))
    again = meter.meter_range(START, END)
    assert again.hours_ok == 6, again.outcomes
    assert ledger.pending_hours() == []
    usage = ledger.usage_frame(START, END)
    assert not usage.duplicated(["hour", "pod_uid"]).any()
    assert ledger.hour_status(START, END)["status"].tolist() == ["metered"] * 6
    ledger.close()


def test_a_connection_refused_while_the_file_changed_is_tried_again_with_the_new_url(
    role: Role, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "url"
    write(secret, role.url("first-password"))
    ledger = Ledger(read_url_file(secret, FLAG))
    role.rotate("second-password")
    close_pooled(ledger)
    dialect = ledger.engine.dialect
    real_connect = dialect.connect
    tries: list[str] = []

    def connect_while_refreshed(*args: Any, **kwargs: Any) -> Any:
        # The kubelet's refresh lands after the file was read for this connection and
        # before the server answered it: the real server refuses the old password.
        if not tries:
            write(secret, role.url("second-password"))
        tries.append(kwargs["password"])
        return real_connect(*args, **kwargs)

    dialect.connect = connect_while_refreshed  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="reports.ledger.url_file"):
        assert ledger.pending_hours() == []
    assert tries == ["first-password", "second-password"]
    assert "trying" in caplog.text and "second-password" not in caplog.text
    ledger.close()


def test_a_connection_refused_with_the_file_unchanged_is_not_tried_again(
    role: Role, tmp_path: Path
) -> None:
    secret = tmp_path / "url"
    write(secret, role.url("first-password"))
    ledger = Ledger(read_url_file(secret, FLAG))
    role.rotate("second-password")
    close_pooled(ledger)
    with pytest.raises(OperationalError, match="password authentication failed"):
        ledger.pending_hours()
    ledger.close()
