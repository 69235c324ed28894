"""JSON log lines (``ringcast --log-json``, env ``RINGCAST_JSON_LOGS=1``).

One JSON object per record: ``ts`` (UTC, ISO 8601), ``level``, ``logger``,
``message``, plus the ``extra=`` fields a caller passed. A SIP call's state
change (``ringcast.sip.call``'s ``call %s: %s -> %s to=%s status=%s`` line) also
carries ``event="call_state"``, ``call_id``, ``from_state``, ``to_state``, ``to``
and ``status``, so one line per call state change can be filtered without
parsing the message.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)
CALL_STATE_FORMAT = "call %s: %s -> %s to=%s status=%s"


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
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)
