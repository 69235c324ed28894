"""Gather actions' transfer (issue 17): the record's `transfer` object, as JSON text.

Revision ID: 0008_transfer
Revises: 0007_srtp
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_transfer"
down_revision = "0007_srtp"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("transfer", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("transfer")
