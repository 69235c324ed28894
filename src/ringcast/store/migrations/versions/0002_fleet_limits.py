"""Fleet-wide limits: limiters (capacity and rate per scope) and call leases;
counters (node epochs that are never reused).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "limiters",
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=True),
        sa.Column("rate", sa.Float(), nullable=True),
        sa.Column("tokens", sa.Float(), server_default="1", nullable=False),
        sa.Column("refilled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_limiters"),
    )
    op.create_table(
        "leases",
        sa.Column("call_id", sa.String(36), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("call_id", "key", name="pk_leases"),
    )
    op.create_index("ix_leases_key", "leases", ["key"])
    op.create_index("ix_leases_node_id", "leases", ["node_id"])
    op.create_table(
        "counters",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_counters"),
    )


def downgrade() -> None:
    op.drop_table("counters")
    op.drop_index("ix_leases_node_id", table_name="leases")
    op.drop_index("ix_leases_key", table_name="leases")
    op.drop_table("leases")
    op.drop_table("limiters")
