"""Baseline: the ledger's tables as they were before migrations existed.

A ledger made before migrations (by SQLAlchemy's create_all) already holds some or all of
these tables: the usage ledger created every table, the policy audit log only
`policy_versions`. This revision creates the ones that are missing and adopts the others
as they are, so such a ledger is upgraded without touching its rows.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Every hour and time is UTC: timestamptz on PostgreSQL, naive UTC text on SQLite
# (reports.ledger.schema.UTCDateTime converts on the way in and out).
_UTC = sa.DateTime(timezone=True)
_NAME = 253


def _tables() -> list[tuple[str, list[sa.Column[object]]]]:
    return [
        (
            "usage",
            [
                sa.Column("hour", _UTC, primary_key=True, nullable=False),
                sa.Column("pod_uid", sa.String(128), primary_key=True, nullable=False),
                sa.Column("namespace", sa.String(_NAME), nullable=False),
                sa.Column("pod", sa.String(_NAME), nullable=False),
                sa.Column("job_id", sa.String(_NAME), nullable=False),
                sa.Column("member", sa.String(_NAME), nullable=False),
                sa.Column("owner", sa.String(_NAME), nullable=False),
                sa.Column("gpu_model", sa.String(_NAME), nullable=False),
                sa.Column("node", sa.String(_NAME), nullable=False),
                sa.Column("gpu_seconds", sa.Float(), nullable=False),
                sa.Column("utilization", sa.Float(), nullable=True),
                sa.Column("coverage", sa.Float(), nullable=False),
                sa.Column("policy_version", sa.Integer(), nullable=False),
                sa.Column("source", sa.String(32), nullable=False),
            ],
        ),
        (
            "capacity",
            [
                sa.Column("hour", _UTC, primary_key=True, nullable=False),
                sa.Column("node", sa.String(_NAME), primary_key=True, nullable=False),
                sa.Column("owner", sa.String(_NAME), nullable=False),
                sa.Column("gpu_model", sa.String(_NAME), nullable=False),
                sa.Column("gpu_seconds_available", sa.Float(), nullable=False),
                sa.Column("coverage", sa.Float(), nullable=False),
            ],
        ),
        (
            "reclaim_lost",
            [
                sa.Column("hour", _UTC, primary_key=True, nullable=False),
                sa.Column("member", sa.String(_NAME), primary_key=True, nullable=False),
                sa.Column("gpu_model", sa.String(_NAME), primary_key=True, nullable=False),
                sa.Column("gpu_seconds_lost", sa.Float(), nullable=False),
            ],
        ),
        (
            "hours",
            [
                sa.Column("hour", _UTC, primary_key=True, nullable=False),
                sa.Column("status", sa.String(16), nullable=False),
                sa.Column("coverage", sa.Float(), nullable=True),
                sa.Column("attempts", sa.Integer(), nullable=False),
                sa.Column("last_error", sa.Text(), nullable=True),
                sa.Column("metered_at", _UTC, nullable=True),
            ],
        ),
        (
            "metering_runs",
            [
                sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
                sa.Column("started_at", _UTC, nullable=False),
                sa.Column("finished_at", _UTC, nullable=True),
                sa.Column("range_start", _UTC, nullable=False),
                sa.Column("range_end", _UTC, nullable=False),
                sa.Column("hours_ok", sa.Integer(), nullable=False),
                sa.Column("hours_pending", sa.Integer(), nullable=False),
                sa.Column("mean_coverage", sa.Float(), nullable=True),
                sa.Column("error", sa.Text(), nullable=True),
            ],
        ),
        (
            "policy_versions",
            [
                sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
                sa.Column("author", sa.String(_NAME), nullable=False),
                sa.Column("applied_at", _UTC, nullable=False),
                sa.Column("origin", sa.String(16), nullable=False),
                sa.Column("comment", sa.Text(), nullable=False),
                sa.Column("document", sa.Text(), nullable=False),
                sa.Column("diff", sa.Text(), nullable=False),
                sa.Column("sha256", sa.String(64), nullable=False),
            ],
        ),
    ]


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, columns in _tables():
        if name not in existing:
            op.create_table(name, *columns)


def downgrade() -> None:
    for name, _columns in reversed(_tables()):
        op.drop_table(name)
