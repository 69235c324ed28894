"""Trunk registrations: each dialer's REGISTER binding state, by node and trunk,
so `ringcast api` shows bindings held by separate `ringcast dialer` processes.

Revision ID: 0010_gaps_registrations
Revises: 0009_recordings
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_gaps_registrations"
down_revision = "0009_recordings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trunk_registrations",
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("trunk", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("registrar", sa.String(512), nullable=False),
        sa.Column("aor", sa.String(512), nullable=False),
        sa.Column("expires", sa.Integer(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("node_id", "trunk", name="pk_trunk_registrations"),
    )


def downgrade() -> None:
    op.drop_table("trunk_registrations")
