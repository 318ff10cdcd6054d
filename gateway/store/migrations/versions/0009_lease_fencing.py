"""Lease fencing: each claim of a delivery holds its own lease id, so an outcome recorded after the
lease lapsed (the pair may have been claimed again and pushed meanwhile) is told apart; and a fence
per subject × provider, moved by such a late outcome, so an acknowledgement read before it is not
trusted either.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as table:
        table.add_column(sa.Column("lease_id", sa.String(length=36), nullable=True))
    with op.batch_alter_table("provider_state") as table:
        table.add_column(sa.Column("fence", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("provider_state") as table:
        table.drop_column("fence")
    with op.batch_alter_table("deliveries") as table:
        table.drop_column("lease_id")
