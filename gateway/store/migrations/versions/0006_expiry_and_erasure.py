"""Consent that ends and people who leave: due expiries, erasures and the subject tombstone.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "expiries",
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("subject_id", sa.String(length=200), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("decision_id"),
    )
    op.create_index("ix_expiries_due", "expiries", ["due_at"])
    op.create_table(
        "erasures",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("subject_id", sa.String(length=200), nullable=False),
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("requested_by", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_erasures_subject", "erasures", ["subject_id"])
    op.create_index("ix_erasures_status", "erasures", ["status"])
    with op.batch_alter_table("subjects") as table:
        table.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subjects") as table:
        table.drop_column("erased_at")
    op.drop_index("ix_erasures_status", "erasures")
    op.drop_index("ix_erasures_subject", "erasures")
    op.drop_table("erasures")
    op.drop_index("ix_expiries_due", "expiries")
    op.drop_table("expiries")
