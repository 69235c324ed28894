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
