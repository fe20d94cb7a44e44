"""Coverage per node and source; hours given up, with who, when and why.

Additive: two new tables, no existing column changes.

- `node_coverage` (hour, node): the share of expected samples found for allocation,
  capacity and utilization (DCGM) separately.
- `forgotten_ranges`: each `fairpool meter --forget FROM TO`, with who ran it, when and
  why; the hours it gave up carry the status "forgotten" in `hours`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_UTC = sa.DateTime(timezone=True)
_NAME = 253


def upgrade() -> None:
    op.create_table(
        "node_coverage",
        sa.Column("hour", _UTC, primary_key=True, nullable=False),
        sa.Column("node", sa.String(_NAME), primary_key=True, nullable=False),
        sa.Column("allocation", sa.Float(), nullable=True),
        sa.Column("capacity", sa.Float(), nullable=True),
        sa.Column("utilization", sa.Float(), nullable=True),
    )
    op.create_table(
        "forgotten_ranges",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("range_start", _UTC, nullable=False),
        sa.Column("range_end", _UTC, nullable=False),
        sa.Column("hours", sa.Integer(), nullable=False),
        sa.Column("forgotten_by", sa.String(_NAME), nullable=False),
        sa.Column("forgotten_at", _UTC, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("forgotten_ranges")
    op.drop_table("node_coverage")
