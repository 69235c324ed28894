"""SQLAlchemy tables. The Alembic migrations in `migrations/versions` must match these.

Times are stored as UTC. On SQLite (no time zone support) they round-trip as
naive UTC and come back aware through :class:`UTCDateTime`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ringcast.domain import Result, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A `TIMESTAMP WITH TIME ZONE` that always hands back aware UTC datetimes."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: sa.JSON()}


class RequestRow(Base):
    """One POST /voice/call/play: the normalized body and its report id."""

    __tablename__ = "requests"
    __table_args__ = (sa.UniqueConstraint("tenant", "idempotency_key"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(
        sa.String(64), index=True, default="default", server_default="default"
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The normalized request: playlist, ring_timeout, max_duration, retry, sip (with
    # the password: the dialer needs it; never echo or log it), callback_url,
    # schedule, max_concurrent, cps, from. Recipients live in `calls`.
    body: Mapped[dict[str, Any]]
    total: Mapped[int] = mapped_column(sa.Integer)
    report_id: Mapped[str] = mapped_column(sa.String(36), unique=True)
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(255))
    body_hash: Mapped[str] = mapped_column(sa.String(64))
    canceled_at: Mapped[datetime | None]
    prompt_error: Mapped[str | None] = mapped_column(sa.Text)
    # The API key that submitted it (webhooks are signed with that key's secret).
    api_key_id: Mapped[str | None] = mapped_column(sa.String(36))
    # Fair claims (store/fair.py): the request's weight 1..10, whether it may still
    # have queued calls (False once drained; any path that queues a call sets it
    # back), its stride-scheduling pass, and when it was paused through the API.
    priority: Mapped[int] = mapped_column(sa.Integer, default=5, server_default="5")
    active: Mapped[bool] = mapped_column(
        sa.Boolean, default=True, server_default=sa.true(), index=True
    )
    vtime: Mapped[float] = mapped_column(sa.Float, default=0.0, server_default="0")
    paused_at: Mapped[datetime | None]


class CallRow(Base):
    """One recipient of a request: its current attempt is the call record."""

    __tablename__ = "calls"
    __table_args__ = (
        sa.UniqueConstraint("request_id", "seq"),
        # claims, per request (store/claims.py); live calls per request (store/fair.py)
        sa.Index("ix_calls_claim_order", "result", "request_id", "not_before", "seq"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    # indexed through uq_calls_request_id_seq, whose first column it is
    request_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("requests.id", ondelete="CASCADE")
    )
    seq: Mapped[int] = mapped_column(sa.Integer)  # recipient order, from 0
    to_uri: Mapped[str] = mapped_column(sa.String(512))
    from_uri: Mapped[str] = mapped_column(sa.String(512))  # the record's "from"
    variables: Mapped[dict[str, Any] | None]
    timezone: Mapped[str | None] = mapped_column(sa.String(64))
    result: Mapped[str] = mapped_column(
        sa.String(16), default=Result.QUEUED.value, server_default=Result.QUEUED.value
    )
    outcome: Mapped[str | None] = mapped_column(sa.String(16))
    attempt: Mapped[int] = mapped_column(sa.Integer, default=1, server_default="1")
    request_time: Mapped[datetime]
    setup_time: Mapped[datetime | None]
    connect_time: Mapped[datetime | None]
    disconnect_time: Mapped[datetime | None]
    disconnect_cause_code: Mapped[str | None] = mapped_column(sa.String(8))
    disconnect_cause_text: Mapped[str | None] = mapped_column(sa.String(255))
    duration: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    answered: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    codec: Mapped[str | None] = mapped_column(sa.String(16))
    error: Mapped[str | None] = mapped_column(sa.Text)
    dtmf: Mapped[str | None] = mapped_column(sa.String(64))
    answered_by: Mapped[str | None] = mapped_column(sa.String(16))  # machine detection
    machine_detection_ms: Mapped[int | None] = mapped_column(sa.Integer)
    voicemail: Mapped[str | None] = mapped_column(sa.String(16))  # left | cut
    srtp: Mapped[str | None] = mapped_column(sa.String(32))  # SRTP crypto-suite, never a key
    transfer: Mapped[str | None] = mapped_column(sa.Text)  # the record's `transfer`, JSON text
    not_before: Mapped[datetime]  # earliest time it may be dialed
    node_id: Mapped[str | None] = mapped_column(sa.String(64))
    claim_epoch: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # The earlier attempts' summaries (records.ATTEMPT_FIELDS) as JSON objects
    # joined by ",": text, so the report's SQL appends the current attempt to it.
    attempts_log: Mapped[str | None] = mapped_column(sa.Text)
    # The record's `recordings`: a JSON array of {"url", "duration"} (text, so the
    # report's SQL copies it as is); the audio is in `recordings`.
    recordings: Mapped[str | None] = mapped_column(sa.Text)


class CallAttemptRow(Base):
    """The record of one finished attempt of a call (kept when the call is retried)."""

    __tablename__ = "call_attempts"
    __table_args__ = (sa.UniqueConstraint("call_id", "attempt"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("calls.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(sa.Integer)
    record: Mapped[dict[str, Any]]


class RecordingRow(Base):
    """What a callee said (a playlist's `record` item), as an 8 kHz mono WAV file.
    In the database so every API node serves it; swept after the retention days."""

    __tablename__ = "recordings"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(sa.String(64))
    call_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("calls.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(sa.Integer)
    seq: Mapped[int] = mapped_column(sa.Integer)  # the call's recordings in order, from 0
    created_at: Mapped[datetime] = mapped_column(index=True)  # the retention sweep's key
    duration: Mapped[float] = mapped_column(sa.Float)  # seconds of audio
    size: Mapped[int] = mapped_column(sa.Integer)  # bytes of `wav`
    reason: Mapped[str] = mapped_column(sa.String(16))  # max | silence | digit | hangup
    wav: Mapped[bytes] = mapped_column(sa.LargeBinary)


class DncRow(Base):
    """The do-not-call lists: per tenant, and install-wide (tenant "", see store/dnc.py).
    An entry is a normalized number or user, never a URI."""

    __tablename__ = "dnc"
    __table_args__ = (sa.UniqueConstraint("tenant", "entry"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(sa.String(64), default="default", server_default="default")
    entry: Mapped[str] = mapped_column(sa.String(512))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class NodeRow(Base):
    """A dialer process, alive while its heartbeat is fresh."""

    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    epoch: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")


class TrunkRegistrationRow(Base):
    """One dialer's REGISTER binding with one trunk's registrar (RFC 3261 §10),
    written by that dialer on every state change so any API node can show it.
    Never holds the password."""

    __tablename__ = "trunk_registrations"

    node_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    trunk: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    state: Mapped[str] = mapped_column(sa.String(16))
    registrar: Mapped[str] = mapped_column(sa.String(512))
    aor: Mapped[str] = mapped_column(sa.String(512))
    expires: Mapped[int | None] = mapped_column(sa.Integer)  # seconds granted
    expires_at: Mapped[datetime | None] = mapped_column()
    failures: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(sa.Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKeyRow(Base):
    """An API key: only its SHA-256 hash is kept. Its webhook signing secret
    must be kept in the clear (HMAC needs it) and is never returned by the API."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128))
    tenant: Mapped[str] = mapped_column(sa.String(64), index=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(sa.String(16))  # shown by `keys list`
    webhook_secret: Mapped[str] = mapped_column(sa.String(128))  # "whsec_" + base64
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    rate_limit: Mapped[float | None] = mapped_column(sa.Float)  # POSTs per minute
    allow: Mapped[dict[str, Any] | None]  # destination allowlist: hosts, domains, prefixes
    # may edit the install-wide do-not-call list (`ringcast keys create --operator`)
    operator: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())


class WebhookOutboxRow(Base):
    """A webhook delivery waiting, retried, delivered or given up (durable outbox)."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (sa.Index("ix_webhook_outbox_due", "delivered_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(sa.String(64), unique=True)  # same on every retry
    api_key_id: Mapped[str | None] = mapped_column(sa.String(36))
    url: Mapped[str] = mapped_column(sa.Text)
    event_type: Mapped[str] = mapped_column(sa.String(64))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    delivered_at: Mapped[datetime | None]
    gave_up_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(sa.Text)


class LimiterRow(Base):
    """A fleet-wide limit: at most `capacity` calls at once and `rate` new calls
    per second for one scope ("request:<id>", "trunk:<name>"), shared by every
    dialer through the database. `tokens`/`refilled_at` are its token bucket."""

    __tablename__ = "limiters"

    key: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    capacity: Mapped[int | None] = mapped_column(sa.Integer)
    rate: Mapped[float | None] = mapped_column(sa.Float)  # new calls per second
    tokens: Mapped[float] = mapped_column(sa.Float, default=1.0, server_default="1")
    refilled_at: Mapped[datetime] = mapped_column(default=utcnow)


class CounterRow(Base):
    """A named counter that only grows (node epochs: never reused, so a node
    that rejoins can never be mistaken for its earlier life)."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")


class LeaseRow(Base):
    """One call holding one unit of a limiter's capacity, owned by a node.
    Leases of dead nodes are deleted by the rescue, so capacity never leaks."""

    __tablename__ = "leases"
    __table_args__ = (sa.Index("ix_leases_key", "key"), sa.Index("ix_leases_node_id", "node_id"))

    call_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    node_id: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


requests_table = cast(sa.Table, RequestRow.__table__)
calls_table = cast(sa.Table, CallRow.__table__)
call_attempts_table = cast(sa.Table, CallAttemptRow.__table__)
dnc_table = cast(sa.Table, DncRow.__table__)
nodes_table = cast(sa.Table, NodeRow.__table__)
api_keys_table = cast(sa.Table, ApiKeyRow.__table__)
webhook_outbox_table = cast(sa.Table, WebhookOutboxRow.__table__)
limiters_table = cast(sa.Table, LimiterRow.__table__)
leases_table = cast(sa.Table, LeaseRow.__table__)
counters_table = cast(sa.Table, CounterRow.__table__)
recordings_table = cast(sa.Table, RecordingRow.__table__)
trunk_registrations_table = cast(sa.Table, TrunkRegistrationRow.__table__)
