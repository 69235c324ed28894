"""A blind transfer: REFER (RFC 3515) and the NOTIFY `message/sipfrag` it brings back.

`ReferClient` is a pure machine (STYLE habit 13): the response to our REFER
and each NOTIFY go in, the next state and what to answer come out; the call
(:meth:`ringcast.sip.call.OutboundCall.refer`) sends and applies. RFC 3515 §2.4.4
/ §2.4.5: after a 2xx to the REFER, the referee reports the progress of its
INVITE to the target as NOTIFY bodies holding a SIP status line (RFC 3420
sipfrag); a final status (≥ 200) or `Subscription-State: terminated` ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiosipua import SipRequest, SipResponse

    from ringcast.sip.call import OutboundCall

log = logging.getLogger(__name__)

NOTIFY_WAIT = 32.0  # seconds we wait for the final NOTIFY after the REFER's 2xx (64*T1)
_STATUS_LINE = re.compile(rb"^\s*SIP/2\.0\s+([1-6][0-9][0-9])(?:\s+([^\r\n]*))?", re.I)


class ReferState(enum.Enum):
    SENT = "sent"  # REFER sent, no final response yet
    ACCEPTED = "accepted"  # 2xx to the REFER: the referee tries the target
    SUCCEEDED = "succeeded"  # a sipfrag 2xx: the target answered the referee
    FAILED = "failed"  # a sipfrag >= 300, the subscription ended without a final status, timeout
    REFUSED = "refused"  # a final >= 300 to the REFER itself

    @property
    def final(self) -> bool:
        return self in (ReferState.SUCCEEDED, ReferState.FAILED, ReferState.REFUSED)


def parse_sipfrag(body: bytes) -> tuple[int, str] | None:
    """The status code and reason of a `message/sipfrag` body's status line (RFC 3420),
    None when the body does not start with one."""
    match = _STATUS_LINE.match(body)
    if match is None:
        return None
    return int(match.group(1)), (match.group(2) or b"").decode("utf-8", "replace").strip()


def subscription_terminated(value: str | None) -> bool:
    """`Subscription-State: terminated;reason=...` (RFC 6665 §8.2.3)."""
    return bool(value) and str(value).split(";", 1)[0].strip().lower() == "terminated"


@dataclass(frozen=True)
class NotifyReply:
    """What to answer a NOTIFY with, and whether the referral is over."""

    status: int
    done: bool


class ReferClient:
    """One REFER's life. `status`/`reason` hold the last status heard: the REFER's
    final response while refused, else the last sipfrag status line."""

    def __init__(self) -> None:
        self.state = ReferState.SENT
        self.status = 0
        self.reason = ""

    def _set_state(self, new: ReferState) -> None:
        if new is not self.state:
            log.info("refer: %s -> %s", self.state.value, new.value)
            self.state = new

    def on_response(self, status: int, reason: str = "") -> None:
        """The REFER's response (a synthetic 408 for Timer F)."""
        if self.state is not ReferState.SENT or status < 200:
            return
        if status < 300:
            self._set_state(ReferState.ACCEPTED)
            return
        self.status, self.reason = status, reason
        self._set_state(ReferState.REFUSED)

    def on_notify(
        self, event: str | None, subscription_state: str | None, content_type: str, body: bytes
    ) -> NotifyReply:
        """A NOTIFY for our REFER's implicit subscription (RFC 3515 §2.4.4)."""
        if (event or "").split(";", 1)[0].strip().lower() != "refer":
            return NotifyReply(489, False)  # Bad Event (RFC 6665 §8.2.1)
        if self.state.final:
            return NotifyReply(200, True)  # a retransmitted or late NOTIFY
        if self.state is ReferState.SENT:
            self._set_state(ReferState.ACCEPTED)  # the NOTIFY raced the 202
        frag = None
        if content_type.split(";", 1)[0].strip().lower() == "message/sipfrag":
            frag = parse_sipfrag(body)
        ended = subscription_terminated(subscription_state)
        if frag is None:
            if ended:
                self.reason = self.reason or "subscription ended without a final status"
                self._set_state(ReferState.FAILED)
                return NotifyReply(200, True)
            return NotifyReply(400 if body else 200, False)
        self.status, self.reason = frag
        if self.status >= 300:
            self._set_state(ReferState.FAILED)
        elif self.status >= 200:
            self._set_state(ReferState.SUCCEEDED)
        elif ended:
            self._set_state(ReferState.FAILED)
        return NotifyReply(200, self.state.final)

    def on_timeout(self) -> None:
        """No final NOTIFY within NOTIFY_WAIT (or no REFER response at all)."""
        if not self.state.final:
            self.reason = self.reason or "no final NOTIFY"
            self._set_state(ReferState.FAILED)


def transfer_result(state: ReferState, status: int) -> str:
    """The record's `transfer.result` for a referral: answered, busy, no-answer, failed."""
    if state is ReferState.SUCCEEDED:
        return "answered"
    if state is ReferState.FAILED and status in (486, 600):
        return "busy"
    if state is ReferState.FAILED and status in (408, 480, 487):
        return "no-answer"
    return "failed"


async def refer(
    call: OutboundCall, refer_to: str, referred_by: str, *, wait: float = NOTIFY_WAIT
) -> ReferClient:
    """Send REFER on the answered `call` and follow its NOTIFYs to a final state
    (or `wait` seconds). Never raises for what the referee does."""
    machine = ReferClient()
    done = asyncio.Event()

    def on_final(response: SipResponse) -> None:
        machine.on_response(response.status_code, response.reason_phrase or "")
        if machine.state.final:
            done.set()

    def on_notify(request: SipRequest) -> int:
        reply = machine.on_notify(
            request.headers.get_first("event") or request.headers.get_first("o"),
            request.headers.get_first("subscription-state"),
            request.content_type or "",
            request.body or b"",
        )
        if reply.done:
            done.set()
        return reply.status

    call.on_notify = on_notify
    by = referred_by if "<" in referred_by else f"<{referred_by}>"
    extra = {"Refer-To": f"<{refer_to}>", "Referred-By": by}  # RFC 3892
    try:
        if not await call.send_request("REFER", extra, on_final):
            machine.on_response(481, "no dialog to send REFER in")
            return machine
        ended = asyncio.create_task(call.ended.wait(), name=f"refer-ended-{call.call_id}")
        waiting = asyncio.create_task(done.wait(), name=f"refer-wait-{call.call_id}")
        try:
            await asyncio.wait({ended, waiting}, timeout=wait, return_when="FIRST_COMPLETED")
        finally:
            for task in (ended, waiting):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        machine.on_timeout()
        return machine
    finally:
        call.on_notify = None
