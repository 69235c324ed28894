"""Stateless answers to requests outside our calls (RFC 3261 §8.2.7).

ringcast only calls out, so a request that matches no live dialog comes from
a stranger (a scanner, a misrouted peer, a carrier's keep-alive): INVITE ->
403 (nothing with ``silent_invites``), REGISTER and other methods -> 405,
OPTIONS -> 200, BYE/CANCEL and requests naming a dialog -> 481. Nothing is
kept per request: no cache, no timer. A retransmission is simply answered
again, with the same To tag, which is a keyed hash of the request (§8.2.7:
a stateless UAS generates the same tag for the same request). No
``Server``/``User-Agent`` header unless ``server`` is given (fingerprinting).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re

from aiosipua.message import SipRequest

from ringcast.sip.causes import reason_phrase
from ringcast.sip.message import ALLOW, branch_of
from ringcast.sip.uas_checks import Refusal

logger = logging.getLogger(__name__)

_TAG = re.compile(r";\s*tag\s*=\s*([^;,\s]+)", re.I)


def header_tag(value: str) -> str | None:
    """The ``tag`` parameter of a From/To value (§20.20, §20.39), outside any <URI>.

    A plain search instead of a full address parse: this runs for every admitted
    request of a flood.
    """
    found = _TAG.search(value, value.rfind(">") + 1)
    return found.group(1) if found else None


class StatelessResponder:
    """Decides the answer to a stranger's request; the endpoint sends it."""

    __slots__ = ("silent_invites", "server", "answered", "_secret")

    def __init__(
        self, *, silent_invites: bool = False, server: str | None = None, secret: bytes = b""
    ) -> None:
        self.silent_invites = silent_invites
        self.server = server or None
        self.answered = 0  # requests answered (metrics)
        self._secret = secret or os.urandom(16)

    def to_tag(self, request: SipRequest) -> str:
        """The same tag for every copy of one request (Call-ID, From tag, branch)."""
        headers = request.headers
        key = "\n".join(
            (
                headers.get_first("call-id") or "",
                header_tag(headers.get_first("from") or "") or "",
                branch_of(headers.get_first("via") or ""),
            )
        )
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()[:12]

    def answer(
        self, request: SipRequest, *, source: str = "", refused: Refusal | None = None
    ) -> bytes | None:
        """The response's bytes, or None when the request gets no answer (ACK, silent INVITE).

        ``refused``: what :func:`ringcast.sip.uas_checks.refusal` found wrong with
        the request; it is answered with that instead of the method's answer.

        Written straight to bytes (the headers of §8.2.6, as :func:`build_response`
        would), since this path runs for every admitted request of a flood.
        """
        method = request.method.upper()
        if method == "ACK":
            return None  # the ACK of a 403 we sent, or junk: nothing to answer
        headers = request.headers
        to_value = headers.get_first("to") or ""
        extra: list[str] = []
        to_tag: str | None = None
        if refused is not None:
            status, to_tag = refused.status, self.to_tag(request)
            extra = [f"{name}: {value}" for name, value in refused.headers]
            if status == 501:
                extra.append(f"Allow: {ALLOW}")
        elif header_tag(to_value):
            status = 481  # no such dialog (§12.2.2)
        elif method == "OPTIONS":
            status, to_tag = 200, self.to_tag(request)
            extra = [f"Allow: {ALLOW}", "Accept: application/sdp"]
        elif method == "INVITE":
            if self.silent_invites:
                logger.info("ignored incoming INVITE from %s (silent_invites)", source)
                return None
            logger.info("refused incoming INVITE from %s (ringcast only calls out)", source)
            status, to_tag = 403, self.to_tag(request)
        elif method in ("BYE", "CANCEL"):
            status, to_tag = 481, self.to_tag(request)
        elif method == "REFER":  # listed in Allow (we send REFERs): declined, not 405
            status, to_tag = 603, self.to_tag(request)
        else:
            status, to_tag = 405, self.to_tag(request)
            extra = [f"Allow: {ALLOW}"]
        if self.server is not None:
            extra.append(f"Server: {self.server}")
        lines = [f"SIP/2.0 {status} {reason_phrase(status)}"]
        lines += [f"Via: {via}" for via in headers.get("via")]
        lines.append(f"From: {headers.get_first('from') or ''}")
        if to_tag is not None:
            to_value = f"{to_value};tag={to_tag}"
        lines.append(f"To: {to_value}")
        lines.append(f"Call-ID: {headers.get_first('call-id') or ''}")
        lines.append(f"CSeq: {headers.get_first('cseq') or ''}")
        lines += extra
        lines.append("Content-Length: 0\r\n\r\n")
        self.answered += 1
        return "\r\n".join(lines).encode("utf-8", "surrogateescape")
