"""Adoption trust: what the gateway wrote to each provider (provenance), an index of addresses and
when the subjects holding each last changed.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("provider_state") as table:
        table.add_column(sa.Column("writes", sa.JSON(), nullable=False, server_default="{}"))
    op.create_table(
        "addresses",
        sa.Column("subject_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("current", sa.Integer(), nullable=False),
        sa.Column("replaced_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("subject_id", "kind", "address"),
    )
    op.create_index("ix_addresses_address", "addresses", ["address", "current"])
    op.create_table(
        "address_company",
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )
    # the current addresses of every subject that is not erased (emails compared in lower case); who
    # held them since when is unknown: no provider time is refused for predating it
    op.execute(
        "INSERT INTO addresses (subject_id, kind, address, current)"
        " SELECT id, 'email', lower(email), 1 FROM subjects WHERE email IS NOT NULL AND erased_at IS NULL"
    )
    op.execute(
        "INSERT INTO addresses (subject_id, kind, address, current)"
        " SELECT id, 'phone', phone, 1 FROM subjects WHERE phone IS NOT NULL AND erased_at IS NULL"
    )


def downgrade() -> None:
    op.drop_table("address_company")
    op.drop_index("ix_addresses_address", "addresses")
    op.drop_table("addresses")
    with op.batch_alter_table("provider_state") as table:
        table.drop_column("writes")
