"""Alembic's entry point for the ledger: runs the revisions on the connection that
`reports.ledger.migrate` hands over (already in a transaction and holding the migration
lock), or on a URL given with ``-x url=...`` when a developer writes a revision."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from reports.ledger.schema import metadata


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        compare_type=True,
        # SQLite alters a table by copying it; batch mode does that for us.
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("give the ledger URL: alembic ... -x url=sqlite:///path.db")
    engine = create_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
