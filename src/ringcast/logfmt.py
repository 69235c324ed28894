"""JSON log lines (``ringcast --log-json``, env ``RINGCAST_JSON_LOGS=1``).

One JSON object per record: ``ts`` (UTC, ISO 8601), ``level``, ``logger``,
``message``, plus the ``extra=`` fields a caller passed. A SIP call's state
change (``ringcast.sip.call``'s ``call %s: %s -> %s to=%s status=%s`` line) also
carries ``event="call_state"``, ``call_id``, ``from_state``, ``to_state``, ``to``
and ``status``, so one line per call state change can be filtered without
parsing the message.

:func:`install_key_redaction` masks SDES-SRTP keys (RFC 4568 ``a=crypto ...
inline:<key>``) in every log record of the process, whoever logs it (ours,
aiosipua's, uvicorn's): SDP can reach a log line through an error message or
a traceback, and a key must never be written anywhere.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)
CALL_STATE_FORMAT = "call %s: %s -> %s to=%s status=%s"
_INLINE_KEY = re.compile(r"inline:[^\s|'\"]+", re.IGNORECASE)
KEY_REDACTED = "inline:[redacted]"


def redact_keys(text: str) -> str:
    """``text`` with every ``inline:<key>`` (RFC 4568 key parameter) masked."""
    return _INLINE_KEY.sub(KEY_REDACTED, text)


def _redacted(record: logging.LogRecord) -> logging.LogRecord:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string is the handler's to report
        return record
    if "nline:" in message or "NLINE:" in message:
        record.msg, record.args = redact_keys(message), None
    if record.exc_info and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        record.exc_text = redact_keys(text)
    return record


def install_key_redaction() -> None:
    """Mask SRTP keys in every log record created from now on (idempotent)."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "_ringcast_redacts", False):
        return

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return _redacted(factory(*args, **kwargs))

    make._ringcast_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.msg == CALL_STATE_FORMAT and isinstance(record.args, tuple):
            if len(record.args) == 5:
                call_id, old, new, to, status = record.args
                out.update(
                    event="call_state",
                    call_id=str(call_id),
                    from_state=str(old),
                    to_state=str(new),
                    to=str(to),
                    status=str(status),
                )
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = value if isinstance(value, str | int | float | bool) else repr(value)
        if record.exc_info:
            out["exc"] = record.exc_text or self.formatException(record.exc_info)
        return redact_keys(json.dumps(out, ensure_ascii=False))  # extra= fields too
