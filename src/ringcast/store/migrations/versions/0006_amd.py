"""Machine detection's record fields: answered_by, machine_detection_ms, voicemail.

Revision ID: 0004_amd
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_amd"
down_revision = "0004_fair"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("answered_by", sa.String(16), nullable=True))
        batch.add_column(sa.Column("machine_detection_ms", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("voicemail", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("voicemail")
        batch.drop_column("machine_detection_ms")
        batch.drop_column("answered_by")
