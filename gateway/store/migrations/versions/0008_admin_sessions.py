"""Admin page sessions kept server-side, so signing out ends one at once; token budgets keyed
also by "<token name>#decisions" (each token's decision budget); stored idempotent answers kept
as their decisions' ids, not the decisions (replays read them back from the ledger).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from typing import Any

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
    keys = sa.table("idempotency_keys", sa.column("scope"), sa.column("key"), sa.column("response_body", sa.JSON))
    bind = op.get_bind()
    for scope, key, answer in bind.execute(sa.select(keys).where(keys.c.response_body.is_not(None))).all():
        match = (keys.c.scope == scope) & (keys.c.key == key)
        bind.execute(sa.update(keys).where(match).values(response_body=_kept(answer)))


def _kept(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer stored whole, as its decisions' ids (this revision's format, frozen here)."""
    if "kept" in answer:
        return answer
    if "results" not in answer:
        return {"kept": 1, "decision": answer["id"]}
    results = [r | {"decision": r["decision"]["id"]} if "decision" in r else r for r in answer["results"]]
    return {"kept": 1, "results": results}


def downgrade() -> None:
    op.execute("DELETE FROM token_budgets WHERE token LIKE '%#decisions'")
    with op.batch_alter_table("token_budgets") as table:
        table.alter_column("token", type_=sa.String(length=100), existing_type=sa.String(length=120))
    op.drop_index("ix_admin_sessions_expiry", "admin_sessions")
    op.drop_table("admin_sessions")
