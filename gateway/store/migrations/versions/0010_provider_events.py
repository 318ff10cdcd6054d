"""Provider events (Wix webhooks): each stored once by its id, queued, and acted on after the answer.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_events",
        sa.Column("provider", sa.String(length=40), primary_key=True),
        sa.Column("event_id", sa.String(length=200), primary_key=True),
        sa.Column("entity_id", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("event", sa.JSON(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_provider_events_queue", "provider_events", ["status", "not_before"])
    op.create_index("ix_provider_events_entity", "provider_events", ["provider", "entity_id", "version"])


def downgrade() -> None:
    op.drop_table("provider_events")
