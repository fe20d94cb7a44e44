"""The ledger's Alembic migrations: `env.py` and one module per revision in `versions/`.

`reports.ledger.migrate` runs them; a schema change to `reports.ledger.schema` comes with a
new revision here (numbered 0002, 0003...; how to write one: `alembic.ini`), and
`tests/unit/test_ledger_migrations.py` checks that the revisions build exactly the
schema's tables, on SQLite and (tests/integration) on PostgreSQL.
"""
