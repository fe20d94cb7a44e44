"""The ledger's Alembic migrations: `env.py` and one module per revision in `versions/`.

`reports.ledger.migrate` runs them; a schema change to `reports.ledger.schema` comes with a
new revision here (`alembic -c reports/ledger/migrations/alembic.ini revision
--autogenerate -m "..."`), and `tests/unit/test_ledger_migrations.py` checks that the
revisions build exactly the schema's tables.
"""
