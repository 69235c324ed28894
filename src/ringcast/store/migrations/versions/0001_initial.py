"""Initial schema: requests, calls, call_attempts, dnc, nodes.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant", sa.String(64), server_default="default", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.String(36), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("prompt_error", sa.Text(), nullable=True),
        sa.Column("api_key_id", sa.String(36), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_requests"),
        sa.UniqueConstraint("report_id", name="uq_requests_report_id"),
        sa.UniqueConstraint("tenant", "idempotency_key", name="uq_requests_tenant_idempotency_key"),
    )
    op.create_index("ix_requests_tenant", "requests", ["tenant"])

    op.create_table(
        "calls",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("to_uri", sa.String(512), nullable=False),
        sa.Column("from_uri", sa.String(512), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=True),
        sa.Column("result", sa.String(16), server_default="queued", nullable=False),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("attempt", sa.Integer(), server_default="1", nullable=False),
        sa.Column("request_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("setup_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("connect_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disconnect_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disconnect_cause_code", sa.String(8), nullable=True),
        sa.Column("disconnect_cause_text", sa.String(255), nullable=True),
        sa.Column("duration", sa.Integer(), server_default="0", nullable=False),
        sa.Column("answered", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("codec", sa.String(16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("dtmf", sa.String(64), nullable=True),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("node_id", sa.String(64), nullable=True),
        sa.Column("claim_epoch", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["requests.id"],
            name="fk_calls_request_id_requests",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_calls"),
        sa.UniqueConstraint("request_id", "seq", name="uq_calls_request_id_seq"),
    )
    op.create_index("ix_calls_result_not_before", "calls", ["result", "not_before"])

    op.create_table(
        "call_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("call_id", sa.String(36), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name="fk_call_attempts_call_id_calls", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_call_attempts"),
        sa.UniqueConstraint("call_id", "attempt", name="uq_call_attempts_call_id_attempt"),
    )
    op.create_index("ix_call_attempts_call_id", "call_attempts", ["call_id"])

    op.create_table(
        "dnc",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(64), server_default="default", nullable=False),
        sa.Column("entry", sa.String(512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dnc"),
        sa.UniqueConstraint("tenant", "entry", name="uq_dnc_tenant_entry"),
    )

    op.create_table(
        "nodes",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("epoch", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_nodes"),
    )

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("key_prefix", sa.String(16), nullable=False),
        sa.Column("webhook_secret", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rate_limit", sa.Float(), nullable=True),
        sa.Column("allow", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"])

    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("webhook_id", sa.String(64), nullable=False),
        sa.Column("api_key_id", sa.String(36), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("gave_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_outbox"),
        sa.UniqueConstraint("webhook_id", name="uq_webhook_outbox_webhook_id"),
    )
    op.create_index("ix_webhook_outbox_due", "webhook_outbox", ["delivered_at", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_outbox_due", table_name="webhook_outbox")
    op.drop_table("webhook_outbox")
    op.drop_index("ix_api_keys_tenant", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("nodes")
    op.drop_table("dnc")
    op.drop_index("ix_call_attempts_call_id", table_name="call_attempts")
    op.drop_table("call_attempts")
    op.drop_index("ix_calls_result_not_before", table_name="calls")
    op.drop_table("calls")
    op.drop_index("ix_requests_tenant", table_name="requests")
    op.drop_table("requests")
