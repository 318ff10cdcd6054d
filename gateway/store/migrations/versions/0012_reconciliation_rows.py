"""Materialized reconciliation rows: each subject × provider's status, the marks of subjects whose
rows' inputs changed since, and the provider settings the rows were computed with. Empty at first:
no provider's fingerprint is known, so the first refresh marks every subject and the view computes
rows live until the refresher has stored them.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconciliation_rows",
        sa.Column("subject_id", sa.String(length=200), primary_key=True),
        sa.Column("provider", sa.String(length=40), primary_key=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_reconciliation_rows_status", "reconciliation_rows", ["status", "subject_id", "provider"])
    op.create_index("ix_reconciliation_rows_provider", "reconciliation_rows", ["provider", "status", "subject_id"])
    op.create_table(
        "reconciliation_stale",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("subject_id", sa.String(length=200), nullable=False),
    )
    op.create_index("ix_reconciliation_stale_subject", "reconciliation_stale", ["subject_id"])
    op.create_table(
        "reconciliation_providers",
        sa.Column("provider", sa.String(length=40), primary_key=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("reconciliation_providers")
    op.drop_table("reconciliation_stale")
    op.drop_table("reconciliation_rows")
