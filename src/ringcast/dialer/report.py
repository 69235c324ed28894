"""One call attempt's data: what the dialer hands :func:`ringcast.dialer.call.place_call`
(`CallJob`) and what the call record says once it has ended (`CallReport`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ringcast.domain import Outcome, Result, utcnow
from ringcast.errors import public_text
from ringcast.media.recorder import BridgeRecording, Recorder
from ringcast.rtp import MediaSession, PlayResult
from ringcast.sip.call import OutboundCall

log = logging.getLogger(__name__)

DEFAULT_CODECS = ("PCMU", "PCMA")


@dataclass(frozen=True)
class CallJob:
    """Everything needed to place one attempt of one call."""

    call_id: str
    request_id: str
    to: str
    from_: str
    attempt: int
    ring_timeout: float
    max_duration: float
    sip: Mapping[str, Any] = field(default_factory=dict)
    machine_detection: Mapping[str, Any] | None = None  # {"mode", "timeout"}

    @property
    def codecs(self) -> tuple[str, ...]:
        return tuple(self.sip.get("codecs") or DEFAULT_CODECS)


@dataclass
class CallReport:
    """What the call record says once the attempt has ended."""

    result: Result
    outcome: Outcome
    setup_time: datetime | None = None
    connect_time: datetime | None = None
    disconnect_time: datetime | None = None
    disconnect_cause_code: str | None = None
    disconnect_cause_text: str | None = None
    duration: int = 0
    answered: bool = False
    codec: str | None = None
    error: str | None = None
    dtmf: str | None = None
    optout: bool = False
    answered_by: str | None = None
    machine_detection_ms: int | None = None
    voicemail: str | None = None  # drop mode on a machine: "left" or "cut"
    srtp: str | None = None  # the SRTP crypto-suite (RFC 4568), None for plain RTP
    transfer: dict[str, Any] | None = None  # gather.actions' transfer (dialer.transfer)
    # the playlist's `record` items; a bridged transfer with "record": true appends
    # its BridgeRecording (both legs mixed)
    recordings: list[Recorder | BridgeRecording] = field(default_factory=list)

    def fields(self) -> dict[str, Any]:
        """Column values for the store (everything but `optout`). `recordings` is
        None here: the owner writes this attempt's list once they are stored, so an
        attempt without any never shows an earlier attempt's (a recording belongs
        to the attempt that made it; `attempts` keeps each one's)."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("optout", "recordings")}
        out["recordings"] = None
        if self.transfer is not None:
            out["transfer"] = json.dumps(self.transfer, separators=(",", ":"))
        out["result"] = str(self.result)
        out["outcome"] = str(self.outcome)
        if self.error:
            out["error"] = public_text(self.error)  # what a user reads: no Python reprs
        return out


ProgressFn = Callable[[Result, dict[str, Any]], Awaitable[None] | None]
# A progress field that is not a record field: which gather of the attempt (1, 2,
# ...) reported its digits, so each gather's `call.digits` is its own webhook.
GATHER_FIELD = "gather"
# What plays on an answered call instead of one prompt: a playlist with gather
# actions (ringcast.dialer.flow); it may transfer the call.
Script = Callable[["OutboundCall", MediaSession, "CallReport"], Coroutine[Any, Any, PlayResult]]


async def notify(fn: ProgressFn | None, result: Result, fields: dict[str, Any]) -> None:
    if fn is None:
        return
    res = fn(result, fields)
    if res is not None:
        await res


def failed_report(error: str, *, code: str | None = None, text: str | None = None) -> CallReport:
    """A call ringcast could not place (no INVITE answered, prompt error, ...)."""
    now = utcnow()
    return CallReport(
        result=Result.FAILED,
        outcome=Outcome.FAILED,
        disconnect_time=now,
        disconnect_cause_code=code,
        disconnect_cause_text=text,
        error=error,
    )
