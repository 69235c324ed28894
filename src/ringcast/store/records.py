"""The call record (CDR) in the article's shape, built from a `calls` row."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from ringcast.domain import format_time

# Column order of a report in CSV; a record dict keeps this order too.
RECORD_FIELDS: tuple[str, ...] = (
    "type",
    "id",
    "result",
    "request_time",
    "to",
    "from",
    "setup_time",
    "connect_time",
    "disconnect_time",
    "disconnect_cause_code",
    "disconnect_cause_text",
    "duration",
    "answered",
    "outcome",
    "attempt",
    "codec",
    "error",
    "dtmf",
)


class CallLike(Protocol):
    """What :func:`record_dict` reads: a `CallRow`, or a Core row of `calls`."""

    @property
    def id(self) -> str: ...
    @property
    def result(self) -> str: ...
    @property
    def request_time(self) -> datetime: ...
    @property
    def to_uri(self) -> str: ...
    @property
    def from_uri(self) -> str: ...
    @property
    def setup_time(self) -> datetime | None: ...
    @property
    def connect_time(self) -> datetime | None: ...
    @property
    def disconnect_time(self) -> datetime | None: ...
    @property
    def disconnect_cause_code(self) -> str | None: ...
    @property
    def disconnect_cause_text(self) -> str | None: ...
    @property
    def duration(self) -> int: ...
    @property
    def answered(self) -> bool: ...
    @property
    def outcome(self) -> str | None: ...
    @property
    def attempt(self) -> int: ...
    @property
    def codec(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def dtmf(self) -> str | None: ...


def record_dict(call: CallLike) -> dict[str, Any]:
    """The article's record for `call`, fields in the article's order.

    `setup_time`, `connect_time`, `disconnect_time` and the disconnect cause are
    left out while unset (the article omits `connect_time` for unanswered calls);
    the added fields `outcome`, `attempt`, `codec`, `error`, `dtmf` are left out
    when null.
    """
    record: dict[str, Any] = {
        "type": "voice",
        "id": call.id,
        "result": call.result,
        "request_time": format_time(call.request_time),
        "to": call.to_uri,
        "from": call.from_uri,
    }
    for name in ("setup_time", "connect_time", "disconnect_time"):
        value = getattr(call, name)
        if value is not None:
            record[name] = format_time(value)
    for name in ("disconnect_cause_code", "disconnect_cause_text"):
        value = getattr(call, name)
        if value is not None:
            record[name] = value
    record["duration"] = int(call.duration or 0)
    record["answered"] = bool(call.answered)
    for name in ("outcome", "attempt", "codec", "error", "dtmf"):
        value = getattr(call, name)
        if value is not None:
            record[name] = value
    return record


# --- the same record, built by the database --------------------------------------------
#
# Streaming a report of a million calls through record_dict costs ~10 us a record
# in Python (Row objects, datetime parsing and formatting, a dict, json.dumps). The
# database builds the identical JSON object instead (same fields, same order, nulls
# left out, times as `YYYY-MM-DD HH:MM:SS` UTC), so the API only moves text.
# tests/integration/test_store_fast.py holds it equal to record_dict.

# (record field, calls column, kind): kind "text" | "time" | "int" | "bool" | "const"
_RECORD_SOURCES: tuple[tuple[str, str, str], ...] = (
    ("type", "voice", "const"),
    ("id", "id", "text"),
    ("result", "result", "text"),
    ("request_time", "request_time", "time"),
    ("to", "to_uri", "text"),
    ("from", "from_uri", "text"),
    ("setup_time", "setup_time", "time"),
    ("connect_time", "connect_time", "time"),
    ("disconnect_time", "disconnect_time", "time"),
    ("disconnect_cause_code", "disconnect_cause_code", "text"),
    ("disconnect_cause_text", "disconnect_cause_text", "text"),
    ("duration", "duration", "int"),
    ("answered", "answered", "bool"),
    ("outcome", "outcome", "text"),
    ("attempt", "attempt", "int"),
    ("codec", "codec", "text"),
    ("error", "error", "text"),
    ("dtmf", "dtmf", "text"),
)


def _sql_value(column: str, kind: str, dialect: str) -> str:
    if kind == "const":
        return f"'{column}'" if dialect == "sqlite" else f"'{column}'::text"
    if kind == "time":
        if dialect == "sqlite":
            return f"strftime('%Y-%m-%d %H:%M:%S', {column})"
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
    if kind == "bool" and dialect == "sqlite":
        return f"json(CASE WHEN {column} THEN 'true' ELSE 'false' END)"
    if kind == "int" and dialect == "sqlite":
        return f"CAST({column} AS INTEGER)"
    return column


def record_json_sql(dialect: str) -> str:
    """An SQL expression over the columns of `calls` whose value is
    ``record_dict(row)`` as compact JSON text (`dialect`: "sqlite" or "postgresql").

    Null fields are dropped by the database (`json_patch` onto `{}` on SQLite, a
    JSON merge patch; `json_strip_nulls` on PostgreSQL), which is exactly what
    record_dict does: the fields it always writes come from NOT NULL columns.
    """
    if dialect not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported dialect {dialect!r}")
    args = ", ".join(
        f"'{field}', {_sql_value(column, kind, dialect)}" for field, column, kind in _RECORD_SOURCES
    )
    if dialect == "sqlite":
        return f"json_patch('{{}}', json_object({args}))"
    return f"json_strip_nulls(json_build_object({args}))::text"
