"""The schema as it stood before migrations: ledger, subject state, outbox, idempotency keys.

A database created by `db upgrade` before migrations existed holds exactly this; `gateway.schema`
stamps such a database with this revision instead of creating the tables again.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def timestamp(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("subject_id", sa.String(length=200), nullable=False),
        timestamp("occurred_at"),
        timestamp("received_at"),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("effective", sa.JSON(), nullable=False),
        sa.Column("superseded", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_decisions_subject", "decisions", ["subject_id", "seq"])
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.JSON(), nullable=True),
        timestamp("created_at"),
        timestamp("expires_at"),
        sa.PrimaryKeyConstraint("scope", "key"),
    )
    op.create_index("ix_idempotency_expiry", "idempotency_keys", ["expires_at"])
    op.create_table(
        "provider_state",
        sa.Column("subject_id", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("acknowledged", sa.JSON(), nullable=False),
        sa.Column("memo", sa.JSON(), nullable=False),
        timestamp("acknowledged_at"),
        sa.PrimaryKeyConstraint("subject_id", "provider"),
    )
    op.create_table(
        "subjects",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("tcf_string", sa.Text(), nullable=True),
        sa.Column("vendors", sa.JSON(), nullable=False),
        timestamp("expires_at", nullable=True),
        sa.Column("source", sa.String(length=60), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        timestamp("occurred_at"),
        timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("subject_id", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reschedules", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        timestamp("next_attempt_at"),
        timestamp("lease_until", nullable=True),
        timestamp("created_at"),
        timestamp("updated_at"),
        sa.ForeignKeyConstraint(["decision_id"], ["decisions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_deliveries_decision", "deliveries", ["decision_id"])
    op.create_index("ix_deliveries_due", "deliveries", ["provider", "status", "next_attempt_at"])
    op.create_index("ix_deliveries_pair", "deliveries", ["subject_id", "provider", "status"])
    op.create_table(
        "subject_purposes",
        sa.Column("subject_id", sa.String(length=200), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        timestamp("occurred_at"),
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(["subject_id"], ["subjects.id"]),
        sa.PrimaryKeyConstraint("subject_id", "purpose"),
    )
    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(length=36), nullable=False),
        timestamp("started_at"),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_delivery_attempts_delivery", "delivery_attempts", ["delivery_id", "id"])
    op.create_table(
        "delivery_decisions",
        sa.Column("delivery_id", sa.String(length=36), nullable=False),
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(["decision_id"], ["decisions.id"]),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.id"]),
        sa.PrimaryKeyConstraint("delivery_id", "decision_id"),
    )
    op.create_index("ix_delivery_decisions_decision", "delivery_decisions", ["decision_id"])


def downgrade() -> None:
    for table in (
        "delivery_decisions",
        "delivery_attempts",
        "subject_purposes",
        "deliveries",
        "subjects",
        "provider_state",
        "idempotency_keys",
        "decisions",
    ):
        op.drop_table(table)
