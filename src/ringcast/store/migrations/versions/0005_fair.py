"""Fair claims: request priority, pause, drained flag and stride pass; the
claim index per request; every attempt's summary on its call.

Claims go round-robin across requests (store/fair.py), each request's calls
taken in (not_before, seq) order: the claim index leads with (result,
request_id) so a claim reads, per request, only the rows it takes, and the
live calls of a request are counted from the same index.

Revision ID: 0004_fair
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_fair"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), server_default="5", nullable=False))
        batch.add_column(
            sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch.add_column(sa.Column("vtime", sa.Float(), server_default="0", nullable=False))
        batch.add_column(sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_requests_active", "requests", ["active"])
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("attempts_log", sa.Text(), nullable=True))
    op.drop_index("ix_calls_claim_order", table_name="calls")
    op.create_index("ix_calls_claim_order", "calls", ["result", "request_id", "not_before", "seq"])


def downgrade() -> None:
    op.drop_index("ix_calls_claim_order", table_name="calls")
    op.create_index("ix_calls_claim_order", "calls", ["result", "not_before", "seq"])
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("attempts_log")
    op.drop_index("ix_requests_active", table_name="requests")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("paused_at")
        batch.drop_column("vtime")
        batch.drop_column("active")
        batch.drop_column("priority")
