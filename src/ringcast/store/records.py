"""The call record (CDR) in the article's shape, built from a `calls` row."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal, Protocol

from ringcast.domain import format_time
from ringcast.store.models import calls_table

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
    "answered_by",
    "machine_detection_ms",
    "voicemail",
    "srtp",
    "transfer",  # gather actions' transfer: {to, mode, result, connect_time, duration, cause}
    "recordings",  # [{"url": "/recordings/<id>", "duration": s}]; CSV: the JSON text
    "attempts",  # the record: every attempt's summary; CSV: how many attempts
)

# What the record keeps of each attempt, in `attempts` (the last one is the
# record's own top-level fields).
ATTEMPT_FIELDS: tuple[str, ...] = (
    "attempt",
    "setup_time",
    "connect_time",
    "disconnect_time",
    "disconnect_cause_code",
    "disconnect_cause_text",
    "outcome",
    "recordings",  # a recording belongs to the attempt that made it
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
    @property
    def answered_by(self) -> str | None: ...
    @property
    def machine_detection_ms(self) -> int | None: ...
    @property
    def voicemail(self) -> str | None: ...
    @property
    def srtp(self) -> str | None: ...


def record_dict(call: CallLike) -> dict[str, Any]:
    """The article's record for `call`, fields in the article's order.

    `setup_time`, `connect_time`, `disconnect_time` and the disconnect cause are
    left out while unset (the article omits `connect_time` for unanswered calls);
    the added fields `outcome`, `attempt`, `codec`, `error`, `dtmf` and machine
    detection's `answered_by`, `machine_detection_ms`, `voicemail` and the SRTP
    crypto-suite `srtp` are left out when null.
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
    for name in (
        "outcome",
        "attempt",
        "codec",
        "error",
        "dtmf",
        "answered_by",
        "machine_detection_ms",
        "voicemail",
        "srtp",
    ):
        value = getattr(call, name, None)  # rows from before machine detection lack the last 4
        if value is not None:
            record[name] = value
    transfer = getattr(call, "transfer", None)
    if transfer is not None:
        record["transfer"] = json.loads(transfer)
    recordings = getattr(call, "recordings", None)
    if recordings:
        record["recordings"] = json.loads(recordings)
    earlier = getattr(call, "attempts_log", None)
    attempts = json.loads(f"[{earlier}]") if earlier else []
    if call.result != "queued":
        attempts.append(attempt_summary(record))
    record["attempts"] = attempts
    return record


def attempt_summary(record: dict[str, Any]) -> dict[str, Any]:
    """One attempt's entry of `attempts`, from the record it ended with."""
    return {k: record[k] for k in ATTEMPT_FIELDS if k in record}


def attempt_log_entry(record: dict[str, Any]) -> str:
    """The finished attempt's summary as `calls.attempts_log` keeps it (compact JSON)."""
    return json.dumps(attempt_summary(record), separators=(",", ":"))


# --- the same record, built by the database --------------------------------------------
#
# Streaming a report of a million calls through record_dict costs ~10 us a record
# in Python (Row objects, datetime parsing and formatting, a dict, json.dumps). The
# database writes each record's line instead, by string concatenation (3x cheaper
# than building and stripping a JSON object there): the same fields in the same
# order, nulls left out, times as `YYYY-MM-DD HH:MM:SS` UTC. The API only moves
# text. tests/integration/test_store_fast.py holds both forms equal to record_dict.

Dialect = Literal["sqlite", "postgresql"]

# (record field, calls column, kind): kind "text" | "time" | "int" | "bool".
# `type` is the constant "voice". id, result, request_time, to, from, duration,
# answered, attempt come from NOT NULL columns; every other field is left out when null.
_RECORD_SOURCES: tuple[tuple[str, str, str], ...] = (
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
    ("answered_by", "answered_by", "text"),
    ("machine_detection_ms", "machine_detection_ms", "int"),
    ("voicemail", "voicemail", "text"),
    ("srtp", "srtp", "text"),
    ("transfer", "transfer", "json"),  # JSON text written by the dialer: copied as it is
    ("recordings", "recordings", "json"),  # JSON text, copied as is
)


def _time_sql(column: str, dialect: Dialect) -> str:
    """The column as `YYYY-MM-DD HH:MM:SS` UTC text (NULL stays NULL)."""
    if dialect == "postgresql":
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
    # SQLAlchemy stores naive UTC as `YYYY-MM-DD HH:MM:SS.ffffff`: cut it; anything
    # else goes through strftime (which also applies a stored UTC offset).
    return (
        f"CASE WHEN length({column}) = 26 AND substr({column}, 11, 1) = ' '"
        f" THEN substr({column}, 1, 19) ELSE strftime('%Y-%m-%d %H:%M:%S', {column}) END"
    )


def _json_value_sql(column: str, kind: str, dialect: Dialect) -> str:
    if kind == "time":
        return f"'\"' || {_time_sql(column, dialect)} || '\"'"
    if kind == "bool":
        return f"CASE WHEN {column} THEN 'true' ELSE 'false' END"
    if kind == "int":
        return f"CAST({column} AS INTEGER)" if dialect == "sqlite" else f"{column}::text"
    if kind == "json":
        return column
    return f"json_quote({column})" if dialect == "sqlite" else f"to_json({column})::text"


def record_json_sql(dialect: Dialect) -> str:
    """An SQL expression over the columns of `calls` whose value is
    ``record_dict(row)`` as compact JSON text (`json.loads` gives an equal dict,
    keys in the same order)."""
    if dialect not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported dialect {dialect!r}")
    if dialect == "sqlite":
        return _record_json_sqlite()
    parts = [
        f"',\"{field}\":' || {_json_value_sql(column, kind, dialect)}"
        for field, column, kind in _RECORD_SOURCES
    ]
    # concat() skips the NULL parts: a null column's field is left out
    attempts = _attempts_json_sql(dialect)
    return f"concat('{{\"type\":\"voice\"', {', '.join(parts)}, {attempts}, '}}')"


def _attempts_json_sql(dialect: Dialect) -> str:
    """`,"attempts":[...]`: the earlier attempts (`attempts_log`), then the current
    one's summary unless the call is queued (not yet attempted again)."""
    if dialect == "postgresql":
        parts = [
            f"',\"{field}\":' || {_json_value_sql(column, kind, dialect)}"
            for field, column, kind in _RECORD_SOURCES
            if field in ATTEMPT_FIELDS and field != "attempt"
        ]
        current = f"concat('{{\"attempt\":', attempt::text, {', '.join(parts)}, '}}')"
        return (
            "concat(',\"attempts\":[', attempts_log, CASE WHEN result = 'queued' THEN NULL"
            f" ELSE concat(CASE WHEN attempts_log IS NOT NULL THEN ',' END, {current}) END, ']')"
        )
    pieces = []
    for field, column, kind in _RECORD_SOURCES:
        if field not in ATTEMPT_FIELDS or field == "attempt":
            continue
        value = _json_value_sql(column, kind, "sqlite")
        pieces.append(f"iif({column} IS NULL, '', ',\"{field}\":' || {value})")
    current = "'{\"attempt\":' || CAST(attempt AS INTEGER) || " + " || ".join(pieces) + " || '}'"
    return (
        "',\"attempts\":[' || coalesce(attempts_log, '') || iif(result = 'queued', '',"
        f" iif(attempts_log IS NULL, '', ',') || {current}) || ']'"
    )


def _record_json_sqlite() -> str:
    """One printf (cheaper than a chain of ||) with as few string operations per
    row as possible: on SQLite this expression is most of a report's cost. A
    NOT NULL column's key is part of the format, its value an argument; a
    nullable column's whole field is one argument, '' when null."""
    template = ['{"type":"voice"']
    args = []
    for field, column, kind in _RECORD_SOURCES:
        if kind == "time":  # the quotes around a time go into the literals
            key, value, end = f',"{field}":"', _time_sql(column, "sqlite"), '"'
        else:
            key, value, end = f',"{field}":', _json_value_sql(column, kind, "sqlite"), ""
        if calls_table.c[column].nullable:
            template.append("%s")
            closing = f" || '{end}'" if end else ""
            args.append(f"iif({column} IS NULL, '', '{key}' || {value}{closing})")
        else:
            template.append(f"{key}%s{end}")
            args.append(value)
    template.append("%s}")
    args.append(_attempts_json_sql("sqlite"))
    return f"printf('{''.join(template)}', {', '.join(args)})"


def _csv_text_sql(value: str, dialect: Dialect) -> str:
    """`value` (text) as csv.writer writes a field: quoted, with quotes doubled, when
    it holds a comma, a quote, CR or LF; NULL as the empty field."""
    if dialect == "sqlite":
        special = " OR ".join(
            f"instr({value}, {ch}) > 0" for ch in ("','", "'\"'", "char(13)", "char(10)")
        )
    else:
        special = " OR ".join(
            f"strpos({value}, {ch}) > 0" for ch in ("','", "'\"'", "chr(13)", "chr(10)")
        )
    return (
        f"CASE WHEN {value} IS NULL THEN '' WHEN {special}"
        f" THEN '\"' || replace({value}, '\"', '\"\"') || '\"' ELSE {value} END"
    )


def record_csv_sql(dialect: Dialect) -> str:
    """An SQL expression over the columns of `calls` whose value is the CSV line
    (without its CRLF) of ``record_dict(row)`` in RECORD_FIELDS order, as
    `csv.writer` writes it: missing fields empty, booleans `true`/`false`."""
    if dialect not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported dialect {dialect!r}")
    fields = ["'voice'"]
    for _field, column, kind in _RECORD_SOURCES:
        if kind == "time":
            fields.append(f"coalesce({_time_sql(column, dialect)}, '')")
        elif kind == "bool":
            fields.append(f"CASE WHEN {column} THEN 'true' ELSE 'false' END")
        elif kind == "int":
            fields.append(
                f"coalesce(CAST({column} AS INTEGER), '')"
                if dialect == "sqlite"
                else f"coalesce({column}::text, '')"
            )
        else:
            fields.append(_csv_text_sql(column, dialect))
    # attempts: how many (the earlier ones, and the current one unless queued)
    if dialect == "sqlite":
        fields.append("CAST(attempt - iif(result = 'queued', 1, 0) AS TEXT)")
    else:
        fields.append("(attempt - CASE WHEN result = 'queued' THEN 1 ELSE 0 END)::text")
    if dialect == "sqlite":  # one printf instead of 34 || (every field is text or '')
        return f"printf('{','.join(['%s'] * len(fields))}', {', '.join(fields)})"
    return " || ',' || ".join(fields)
