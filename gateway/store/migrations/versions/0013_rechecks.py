"""Rechecks: a delivery queued to push a pair again once a request that went unanswered (a timeout, a
worker that died with requests in flight) can no longer land; when claimed, it pushes the whole state
whatever the provider acknowledged since.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as table:
        table.add_column(sa.Column("recheck", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as table:
        table.drop_column("recheck")
