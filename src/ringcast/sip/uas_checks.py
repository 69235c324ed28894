"""What a UAS refuses before it looks at a request's meaning (RFC 3261 §8.2). Pure.

Checked in the RFC's order, for every request but ACK, from strangers and
from callees alike:

- the version (§8.2 first paragraph; RFC 4475 §3.1.2.16): not ``SIP/2.0`` -> 505;
- syntax a parser let through (§8.2, RFC 4475 §3.1.2.7, §3.1.2.17, §3.3.9): a
  Request-URI that does not start with a scheme (one in <>), a CSeq method that
  is not the request's, or several different Content-Length values -> 400;
- method inspection (§8.2.1): a method nobody defined -> 501 (one that exists
  but ringcast does not take is the caller's 405);
- the Request-URI's scheme (§8.2.2.1): neither sip, sips nor tel -> 416;
- Require (§8.2.2.3): an option tag we do not support -> 420 with ``Unsupported``
  (not for CANCEL, which carries none, §9.1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiosipua.message import SipRequest

# Option tags ringcast implements (Supported: timer on our INVITEs, RFC 4028).
SUPPORTED = frozenset({"timer"})
# Methods defined by RFC 3261 and its extensions: anything else is unknown (501).
KNOWN_METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "CANCEL",
        "BYE",
        "OPTIONS",
        "REGISTER",
        "INFO",
        "UPDATE",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "REFER",
        "MESSAGE",
        "PUBLISH",
    }
)
URI_SCHEMES = frozenset({"sip", "sips", "tel"})
_URI_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S")  # RFC 3986 scheme ":" (§25.1)


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    headers: tuple[tuple[str, str], ...] = ()


def request_version(data: bytes) -> str:
    """The SIP-Version at the end of a request line (``SIP/2.0``), as sent."""
    end = data.find(b"\n")
    line = data[: end if end >= 0 else len(data)].strip()
    return line.rsplit(None, 1)[-1].decode("ascii", "replace").upper() if line else ""


def refusal(request: SipRequest, *, version: str = "SIP/2.0") -> Refusal | None:
    """The response §8.2 asks for before any processing, or None to go on."""
    method = request.method.upper()
    if method == "ACK":
        return None  # never answered
    if version.replace(" ", "") != "SIP/2.0":
        return Refusal(505)
    cseq = request.cseq
    if cseq is None or cseq.method.upper() != method:
        return Refusal(400)
    lengths = {v.strip() for v in request.headers.get("content-length")}
    if len(lengths) > 1 or not _URI_START.match(request.uri):
        return Refusal(400)  # e.g. a Request-URI in <> (RFC 4475 §3.1.2.7)
    if method not in KNOWN_METHODS:
        return Refusal(501)
    scheme = request.uri.split(":", 1)[0].lower() if ":" in request.uri else ""
    if scheme not in URI_SCHEMES:
        return Refusal(416)
    if method != "CANCEL":
        unsupported = [tag for tag in _option_tags(request) if tag.lower() not in SUPPORTED]
        if unsupported:
            return Refusal(420, (("Unsupported", ", ".join(unsupported)),))
    return None


def _option_tags(request: SipRequest) -> list[str]:
    tags: list[str] = []
    for value in request.headers.get("require"):
        tags += [t.strip() for t in value.split(",") if t.strip()]
    return tags
