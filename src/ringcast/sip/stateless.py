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

from aiosipua.message import SipRequest, SipResponse

from ringcast.sip.message import ALLOW, branch_of, build_response

logger = logging.getLogger(__name__)


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
        frm = request.from_addr
        key = "\n".join(
            (
                request.call_id or "",
                (frm.tag if frm is not None else None) or "",
                branch_of(request.headers.get_first("via") or ""),
            )
        )
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()[:12]

    def answer(self, request: SipRequest, *, source: str = "") -> SipResponse | None:
        """The response to send, or None when the request gets no answer (ACK, silent INVITE)."""
        method = request.method.upper()
        if method == "ACK":
            return None  # the ACK of a 403 we sent, or junk: nothing to answer
        to = request.to_addr
        headers: dict[str, str] = {}
        if self.server is not None:
            headers["Server"] = self.server
        if to is not None and to.tag:
            response = build_response(request, 481, headers=headers)  # no such dialog (§12.2.2)
        elif method == "OPTIONS":
            headers = {"Allow": ALLOW, "Accept": "application/sdp", **headers}
            response = build_response(request, 200, to_tag=self.to_tag(request), headers=headers)
        elif method == "INVITE":
            if self.silent_invites:
                logger.info("ignored incoming INVITE from %s (silent_invites)", source)
                return None
            logger.info("refused incoming INVITE from %s (ringcast only calls out)", source)
            response = build_response(request, 403, to_tag=self.to_tag(request), headers=headers)
        elif method in ("BYE", "CANCEL"):
            response = build_response(request, 481, to_tag=self.to_tag(request), headers=headers)
        else:
            headers = {"Allow": ALLOW, **headers}
            response = build_response(request, 405, to_tag=self.to_tag(request), headers=headers)
        self.answered += 1
        return response
