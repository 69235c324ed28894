"""RFC 4028 session timers, pure: what a Session-Expires says and when to act on it.

The owner (:class:`~ringcast.sip.call.OutboundCall`) reads the header of the
2xx to its INVITE or refresh (or of the callee's refresh request) and starts
the one timer :func:`next_timer` names.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiosipua.headers import parse_params

from ringcast.sip.uac_logic import CallTimer

MIN_SESSION_REFRESH = 1.0  # seconds: never refresh a session more often than this
DEFAULT_INTERVAL = 1800  # seconds, when a Session-Expires value is not a number (§4)
MAX_EXPIRY_MARGIN = 32.0  # seconds before expiry the refreshee gives up (§10)


@dataclass(frozen=True)
class SessionTimer:
    """A negotiated session interval and who refreshes it, from *our* point of view:
    ``we_refresh`` is True when ringcast (the UAC of the dialog's INVITE) refreshes."""

    interval: int  # seconds
    we_refresh: bool

    @property
    def header(self) -> str:
        """Our Session-Expires value when we refresh (§7.4: refresher=uac)."""
        return f"{self.interval};refresher=uac"


def parse_session_expires(raw: str) -> tuple[int, str | None]:
    """``"90;refresher=uac"`` -> (90, "uac") (RFC 4028 §4; compact form ``x``)."""
    value, _, params = raw.partition(";")
    try:
        interval = int(value.strip())
    except ValueError:
        interval = DEFAULT_INTERVAL
    refresher = parse_params(params).get("refresher")
    return max(interval, 1), (refresher.lower() if refresher else None)


def from_response(raw: str | None) -> SessionTimer | None:
    """The session timer a 2xx to our INVITE or refresh sets (§7.2): the refresher
    named there, ``uac`` (us) when it names none."""
    if not raw:
        return None
    interval, refresher = parse_session_expires(raw)
    return SessionTimer(interval, we_refresh=(refresher or "uac") == "uac")


def from_callee_request(raw: str | None) -> SessionTimer | None:
    """The session timer a callee's re-INVITE/UPDATE asks for (§9): its ``uac`` is
    the callee itself (the request's sender), the default refresher."""
    if not raw:
        return None
    interval, refresher = parse_session_expires(raw)
    return SessionTimer(interval, we_refresh=(refresher or "uac") == "uas")


def answer_header(timer: SessionTimer) -> str:
    """Session-Expires of our 2xx to the callee's refresh request (§9), named from the
    request sender's side: ``uac`` means the callee refreshes."""
    return f"{timer.interval};refresher={'uas' if timer.we_refresh else 'uac'}"


def next_timer(timer: SessionTimer) -> tuple[CallTimer, float]:
    """RFC 4028 §10: the refresher refreshes at half the interval; the other side
    ends the session if no refresh came by the interval minus min(32 s, interval/3)."""
    if timer.we_refresh:
        return CallTimer.REFRESH, max(MIN_SESSION_REFRESH, timer.interval / 2)
    delay = timer.interval - min(MAX_EXPIRY_MARGIN, timer.interval / 3)
    return CallTimer.SESSION_EXPIRY, max(MIN_SESSION_REFRESH, delay)
