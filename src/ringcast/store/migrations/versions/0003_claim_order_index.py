"""The claim's order in its index: (result, not_before, seq).

Claims take the due queued calls in (not_before, seq) order, LIMIT n. With
seq outside the index, the database gathered and sorted every queued call of
a request (they share one not_before) on every claim: 31 ms per claim with
57,600 queued on SQLite, growing with the request. With seq in the index the
claim reads just the n rows it takes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_calls_claim_order", "calls", ["result", "not_before", "seq"])
    op.drop_index("ix_calls_result_not_before", table_name="calls")


def downgrade() -> None:
    op.create_index("ix_calls_result_not_before", "calls", ["result", "not_before"])
    op.drop_index("ix_calls_claim_order", table_name="calls")
