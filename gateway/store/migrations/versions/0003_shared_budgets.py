"""One request budget per provider shared by every worker (PostgreSQL), and which worker made an attempt.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_budgets",
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("next_slot", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider"),
    )
    with op.batch_alter_table("delivery_attempts") as table:
        table.add_column(sa.Column("worker", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery_attempts") as table:
        table.drop_column("worker")
    op.drop_table("provider_budgets")
