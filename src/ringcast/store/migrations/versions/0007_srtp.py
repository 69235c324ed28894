"""SRTP's record field: srtp, the crypto-suite a call was encrypted with (never a key).

Revision ID: 0007_srtp
Revises: 0004_amd
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_srtp"
down_revision = "0004_amd"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("srtp", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("srtp")
