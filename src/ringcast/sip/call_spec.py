"""What one outbound call dials, and the small message helpers of the UAC.

:class:`CallSpec` is the request's ``to``, ``from`` and ``sip`` block as the
SIP layer sees it; the rest are pure parsers and builders of header values
(From, INFO DTMF bodies, Retry-After, the glare back-off of §14.1).
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass, field

from aiosipua.headers import parse_address, stringify_address
from aiosipua.message import SipResponse

from ringcast.inet import bracket
from ringcast.sip.sdp import MediaOffer
from ringcast.sip.tls import TlsOptions

GLARE_RETRY_MIN_CS = 210  # RFC 3261 §14.1: the Call-ID owner retries a 491'd re-INVITE
GLARE_RETRY_MAX_CS = 400  # after 2.1 to 4 s, chosen at random in units of 10 ms
RESERVED_HEADERS = frozenset(
    {
        "via",
        "from",
        "to",
        "call-id",
        "cseq",
        "contact",
        "content-length",
        "content-type",
        "max-forwards",
        "route",
        "record-route",
        "authorization",
        "proxy-authorization",
    }
)


def _empty_headers() -> dict[str, str]:
    return {}


@dataclass
class CallSpec:
    """What to dial (DESIGN "Calls"; the request's ``to``, ``from`` and ``sip`` block).

    ``from_`` is a user part (``"me"``), a SIP URI, or a name-addr with a
    display name (``'"Shop" <sip:shop@example.com>'``). ``proxy`` is an
    outbound proxy URI: the pre-existing route set of requests *outside* the
    dialog (the INVITE, its CANCEL and non-2xx ACK), sent there with a
    pre-loaded Route (§8.1.1.1, §8.1.2). Requests inside the dialog (the 2xx
    ACK, BYE, re-INVITE, UPDATE) follow the dialog's route set only
    (§12.2.1.1): a proxy that wants to stay on the path Record-Routes (§16.6
    step 4) and then appears there once; one that does not drops out of the
    path, as §8.1.2 intends ("instead of adopting the policy of sending all
    messages to the outbound proxy"). ACK and BYE thus always take the same
    path. ``username``/``password`` answer 401/407 digest challenges.
    ``max_duration`` (seconds after answer) sends BYE when it runs out.
    ``tls`` says how a TLS server is checked (``sips:``, ``transport="tls"``).
    """

    to: str
    from_: str
    media: MediaOffer
    proxy: str | None = None
    transport: str | None = None  # None: the URI's ;transport=, else the DNS (RFC 3263)
    tls: TlsOptions | None = None  # CA, client certificate, verify (None: system CAs, verified)
    username: str | None = None
    password: str | None = None
    headers: dict[str, str] = field(default_factory=_empty_headers)
    ring_timeout: float = 30.0
    max_duration: float | None = None

    def __repr__(self) -> str:  # never show the password
        return (
            f"CallSpec(to={self.to!r}, from_={self.from_!r}, proxy={self.proxy!r}, "
            f"transport={self.transport!r}, username={self.username!r}, "
            f"password={'***' if self.password else None}, ring_timeout={self.ring_timeout})"
        )


def parse_dtmf_info(content_type: str, body: bytes) -> str | None:
    """The digit in an INFO body (``application/dtmf-relay`` "Signal=5", ``application/dtmf``)."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    text = body.decode("utf-8", errors="replace").strip()
    if ctype == "application/dtmf-relay":
        for line in text.splitlines():
            name, _, value = line.partition("=")
            if name.strip().lower() == "signal" and value.strip():
                return _digit(value.strip())
        return None
    if ctype == "application/dtmf" and text:
        return _digit(text.split()[0])
    return None


def retry_after(response: SipResponse) -> int | None:
    """The seconds of a response's Retry-After (RFC 3261 §20.33), or None."""
    raw = response.headers.get_first("retry-after") or ""
    found = re.match(r"\s*(\d{1,9})", raw)
    return int(found.group(1)) if found else None


def _digit(value: str) -> str | None:
    events = "0123456789*#ABCD"
    if value.isdigit() and int(value) < 16 and len(value) <= 2:
        return events[int(value)] if len(value) == 2 else value
    if len(value) == 1 and value.upper() in events:
        return value.upper()
    return None


def glare_retry_delay() -> float:
    """Seconds before re-sending a re-INVITE that got 491 (RFC 3261 §14.1).

    We made the Call-ID (we sent the INVITE), so ours is the 2.1-4 s range, in
    10 ms steps; the callee, not the owner, waits 0-2 s, so its retry goes first.
    """
    return random.randint(GLARE_RETRY_MIN_CS, GLARE_RETRY_MAX_CS) / 100


@functools.lru_cache(maxsize=1024)
def from_header(from_: str, local_host: str) -> tuple[str, str | None]:
    """The From header value for `from_` (a user, or a URI with an optional
    display name), without a tag, and its user part. A broadcast sends the same
    `from` thousands of times: parsed once."""
    raw = from_.strip()
    if "<" in raw or raw.lower().startswith(("sip:", "sips:")):
        addr = parse_address(raw)
    else:
        addr = parse_address(f"sip:{raw}@{bracket(local_host)}")
    addr.params.pop("tag", None)
    return stringify_address(addr), addr.uri.user


def validate_headers(headers: dict[str, str]) -> None:
    """Extra headers of a spec: never one ringcast manages, never a line break (ValueError)."""
    for name, value in headers.items():
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is managed by ringcast")
        if not name or any(c in name for c in " :\r\n\t") or "\r" in value or "\n" in value:
            raise ValueError(f"invalid header {name!r}")
