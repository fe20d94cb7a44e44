"""The ledger's migrations: they build exactly `reports.ledger.schema`, adopt a ledger made
before migrations existed without losing a row, and two processes opening one ledger at
once do not race."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, func, inspect, make_url, select, text
from sqlalchemy.engine import Engine

from reports.ledger import Ledger, MeteringRun, migrate
from reports.ledger.schema import metadata, usage_table
from scheduler.api.policy_audit import AuditLog
from scheduler.cli.main import main

BEFORE_MIGRATIONS = Path(__file__).parents[1] / "data" / "ledger_before_migrations"
H0 = datetime(2026, 10, 5, 10, tzinfo=UTC)
H1 = H0 + timedelta(hours=1)


def schema_diff(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return migrate.current_revision(conn)


def run_sql(url: str, tables: set[str] | None = None) -> None:
    """Load the pre-migration ledger (only `tables`' statements when given)."""
    backend = make_url(url).get_backend_name()
    script = (BEFORE_MIGRATIONS / f"{backend}.sql").read_text()
    statements = [s.strip() for s in script.split(";\n") if s.strip()]
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            body = "\n".join(x for x in statement.splitlines() if not x.startswith("--"))
            words = body.split()
            if not words:
                continue
            table = words[2]
            if tables is None or table in tables:
                conn.exec_driver_sql(body)
    engine.dispose()


def test_migrations_build_exactly_the_schema(ledger_url: str) -> None:
    Ledger(ledger_url).close()
    engine = create_engine(ledger_url)
    assert schema_diff(engine) == []
    assert revision(engine) == migrate.head_revision()
    engine.dispose()


def test_a_ledger_made_before_migrations_keeps_its_rows(ledger_url: str) -> None:
    run_sql(ledger_url)
    engine = create_engine(ledger_url)
    assert revision(engine) is None
    with Ledger(ledger_url) as ledger:
        usage = ledger.usage_frame(H0, H1).set_index("pod_uid")
        assert usage["gpu_seconds"].to_dict() == {"uid-a": 14400.0, "uid-b": 3600.0}
        assert usage.loc["uid-b", "source"] == "kube-state-metrics"
        assert ledger.capacity_frame(H0, H1)["gpu_seconds_available"].tolist() == [28800.0]
        lost = ledger.reclaim_lost_frame(H0, H1)
        assert lost["gpu_seconds_lost"].tolist() == [150.0]
        assert lost["cause"].tolist() == [""]  # metered before causes were recorded
        assert ledger.pending_hours() == [H1]
        assert ledger.metering_runs()["hours_ok"].tolist() == [1]
        # Still a working ledger: the next run's id follows the old ones.
        later = H0 + timedelta(hours=5)
        run = MeteringRun(later, later, later, later + timedelta(hours=1), 1, 0, 1.0)
        assert ledger.record_run(run) == 2
    audit = AuditLog(ledger_url)
    first = audit.get(1)
    assert first is not None
    assert first.author == "alice"
    audit.close()
    assert revision(engine) == migrate.head_revision()
    assert schema_diff(engine) == []
    engine.dispose()


def test_lost_work_gains_a_cause_and_a_downgrade_adds_the_causes_up(ledger_url: str) -> None:
    engine = create_engine(ledger_url)
    cfg = migrate.config()

    def to(target: str, step: Callable[[Config, str], None]) -> None:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            step(cfg, target)

    def rows(cause: bool = True) -> list[tuple[object, ...]]:
        names = f"member, gpu_model, {'cause, ' if cause else ''}gpu_seconds_lost"
        with engine.connect() as conn:
            found = conn.execute(
                text(f"SELECT {names} FROM reclaim_lost ORDER BY gpu_seconds_lost")
            )
            return [tuple(r) for r in found]

    insert = "INSERT INTO reclaim_lost (hour, member, gpu_model, {}gpu_seconds_lost) VALUES "
    to("0002", command.upgrade)
    with engine.begin() as conn:
        conn.execute(text(insert.format("") + "(:h, 'a', 'H', 150.0)"), {"h": H0})
    to("head", command.upgrade)
    assert rows() == [("a", "H", "", 150.0)]
    # The cause is part of the key: a second cause of the same hour, member and model.
    with engine.begin() as conn:
        conn.execute(
            text(insert.format("cause, ") + "(:h, 'a', 'H', 'entitlement', 30.0)"), {"h": H0}
        )
    assert rows() == [("a", "H", "entitlement", 30.0), ("a", "H", "", 150.0)]
    to("0002", command.downgrade)
    assert rows(cause=False) == [("a", "H", 180.0)]
    to("head", command.upgrade)
    assert rows() == [("a", "H", "", 180.0)]
    assert schema_diff(engine) == []
    engine.dispose()


def test_an_audit_log_made_before_migrations_gets_the_other_tables(ledger_url: str) -> None:
    run_sql(ledger_url, tables={"policy_versions"})
    AuditLog(ledger_url).close()
    engine = create_engine(ledger_url)
    assert schema_diff(engine) == []
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) >= {t.name for t in metadata.sorted_tables}
    engine.dispose()
    audit = AuditLog(ledger_url)
    latest = audit.latest()
    assert latest is not None
    assert latest.version == 1
    audit.close()


def test_ledgers_opened_at_once_migrate_once(ledger_url: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_one(kind: int) -> None:
        try:
            start.wait()
            if kind % 2:
                AuditLog(ledger_url).close()
            else:
                Ledger(ledger_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    engine = create_engine(ledger_url)
    assert revision(engine) == migrate.head_revision()
    assert schema_diff(engine) == []
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(usage_table)).scalar_one() == 0
    engine.dispose()


def test_upgrade_reports_the_revision_it_found(ledger_url: str) -> None:
    run_sql(ledger_url)
    engine = create_engine(ledger_url)
    assert migrate.upgrade(engine) == ""
    assert migrate.upgrade(engine) == migrate.head_revision()
    engine.dispose()


def test_the_upgrade_command_adopts_an_old_ledger(
    ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_sql(ledger_url)
    head = migrate.head_revision()
    for said in ("no revision -> revision", "already at revision"):
        with pytest.raises(SystemExit) as exit_info:
            main(["ledger", "upgrade", "--ledger", ledger_url])
        assert exit_info.value.code == 0
        out = " ".join(capsys.readouterr().out.split())
        assert f"{said} {head}" in out
    with Ledger(ledger_url, readonly=True) as ledger:
        assert len(ledger.usage_frame(H0, H1)) == 2


def test_a_ledger_a_newer_fairpool_wrote_is_refused_and_left_as_it_is(
    ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Alembic's "Can't locate revision '0099'" was a traceback out of every command
    that opens the ledger; now one line, exit 1, and the database untouched."""
    with pytest.raises(SystemExit):
        main(["ledger", "upgrade", "--ledger", ledger_url])
    engine = create_engine(ledger_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["ledger", "upgrade", "--ledger", ledger_url])
    assert exit_info.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "its tables are at revision '0099', which this version of fairpool does not know" in err
    assert "Traceback" not in err
    assert revision(engine) == "0099"
    engine.dispose()
