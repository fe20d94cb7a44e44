"""Lost work per cause: `reclaim_lost` gains `cause` in its key.

The daemon's lost-work counter has carried the cause of each preemption (`entitlement`,
`fair_share`, `consolidation`) since the engine named it; the meter now keeps one row per
cause instead of adding them up. Rows metered before keep their GPU-seconds under the
cause "" (not recorded): the report counts them in the total lost to reclaim only.

PostgreSQL changes the key in place. SQLite cannot, so there the table is copied into
one with the new key, every row kept.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_UTC = sa.DateTime(timezone=True)
_NAME = 253
_OLD_KEY = ["hour", "member", "gpu_model"]
_PKEY = "reclaim_lost_pkey"
"""PostgreSQL's name for the key 0001 made."""


def _copy(key: list[str], with_cause: bool, select: str) -> None:
    """SQLite: `reclaim_lost` rebuilt with `key`, its rows from `select`."""
    columns: list[sa.Column[object]] = [
        sa.Column("hour", _UTC, nullable=False),
        sa.Column("member", sa.String(_NAME), nullable=False),
        sa.Column("gpu_model", sa.String(_NAME), nullable=False),
    ]
    if with_cause:
        columns.append(sa.Column("cause", sa.String(32), nullable=False, server_default=""))
    columns.append(sa.Column("gpu_seconds_lost", sa.Float(), nullable=False))
    op.create_table("reclaim_lost_new", *columns, sa.PrimaryKeyConstraint(*key))
    names = ", ".join(c.name for c in columns)
    op.execute(f"INSERT INTO reclaim_lost_new ({names}) {select}")
    op.drop_table("reclaim_lost")
    op.rename_table("reclaim_lost_new", "reclaim_lost")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _copy(
            [*_OLD_KEY, "cause"],
            True,
            "SELECT hour, member, gpu_model, '', gpu_seconds_lost FROM reclaim_lost",
        )
        return
    op.add_column(
        "reclaim_lost", sa.Column("cause", sa.String(32), nullable=False, server_default="")
    )
    op.drop_constraint(_PKEY, "reclaim_lost", type_="primary")
    op.create_primary_key(_PKEY, "reclaim_lost", [*_OLD_KEY, "cause"])


def downgrade() -> None:
    # The causes of one (hour, member, model) add up into the one row it had.
    summed = (
        "SELECT hour, member, gpu_model, SUM(gpu_seconds_lost) FROM reclaim_lost "
        "GROUP BY hour, member, gpu_model"
    )
    if op.get_bind().dialect.name == "sqlite":
        _copy(_OLD_KEY, False, summed)
        return
    op.execute(f"CREATE TEMPORARY TABLE reclaim_lost_sum AS {summed}")
    op.execute("DELETE FROM reclaim_lost")
    op.drop_constraint(_PKEY, "reclaim_lost", type_="primary")
    op.drop_column("reclaim_lost", "cause")
    op.create_primary_key(_PKEY, "reclaim_lost", _OLD_KEY)
    op.execute(
        "INSERT INTO reclaim_lost (hour, member, gpu_model, gpu_seconds_lost) "
        "SELECT * FROM reclaim_lost_sum"
    )
    op.execute("DROP TABLE reclaim_lost_sum")
