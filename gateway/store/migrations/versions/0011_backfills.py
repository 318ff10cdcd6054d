"""Backfills: a provider sent every subject's state again, as a durable, leased, resumable job,
and the delivery each subject rode on (its receipt).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UNFINISHED = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    op.create_table(
        "backfills",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cursor", sa.String(length=200), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=36), nullable=True),
    )
    op.create_index(
        "ux_backfills_unfinished",
        "backfills",
        ["provider"],
        unique=True,
        sqlite_where=UNFINISHED,
        postgresql_where=UNFINISHED,
    )
    op.create_table(
        "backfill_items",
        sa.Column("backfill_id", sa.String(length=36), sa.ForeignKey("backfills.id"), primary_key=True),
        sa.Column("subject_id", sa.String(length=200), primary_key=True),
        sa.Column("delivery_id", sa.String(length=36), sa.ForeignKey("deliveries.id"), nullable=False),
    )
    op.create_index("ix_backfill_items_delivery", "backfill_items", ["delivery_id"])


def downgrade() -> None:
    op.drop_table("backfill_items")
    op.drop_table("backfills")
