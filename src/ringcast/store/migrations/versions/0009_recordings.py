"""Recordings: the `recordings` table (WAV bytes: SQLite BLOB, PostgreSQL bytea)
and the record's `calls.recordings` list.

Revision ID: 0009_recordings
Revises: 0008_transfer
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_recordings"
down_revision = "0008_transfer"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("recordings", sa.Text(), nullable=True))
    op.create_table(
        "recordings",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(36), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("wav", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"],
            ["calls.id"],
            name="fk_recordings_call_id_calls",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_recordings"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # WAV does not compress; out of line and uncompressed, substr() reads one piece
        op.execute("ALTER TABLE recordings ALTER COLUMN wav SET STORAGE EXTERNAL")
    op.create_index("ix_recordings_call_id", "recordings", ["call_id"])
    op.create_index("ix_recordings_created_at", "recordings", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_recordings_created_at", table_name="recordings")
    op.drop_index("ix_recordings_call_id", table_name="recordings")
    op.drop_table("recordings")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("recordings")
