"""Admin page sessions kept server-side, so signing out ends one at once; token budgets keyed
also by "<token name>#decisions" (each token's decision budget).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_admin_sessions_expiry", "admin_sessions", ["expires_at"])
    with op.batch_alter_table("token_budgets") as table:
        table.alter_column("token", type_=sa.String(length=120), existing_type=sa.String(length=100))


def downgrade() -> None:
    op.execute("DELETE FROM token_budgets WHERE token LIKE '%#decisions'")
    with op.batch_alter_table("token_budgets") as table:
        table.alter_column("token", type_=sa.String(length=100), existing_type=sa.String(length=120))
    op.drop_index("ix_admin_sessions_expiry", "admin_sessions")
    op.drop_table("admin_sessions")
