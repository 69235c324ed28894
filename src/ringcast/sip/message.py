"""Message-level helpers shared by the endpoint, the transactions and the call.

Destinations (where a request or response goes), Via branches and tags
(RFC 3261 §8.1.1.7, §19.3), where a response goes per the request's Via
(§18.2.2, RFC 3581), and building a response to a request (§8.2.6).
"""

from __future__ import annotations

import functools
import ipaddress
import os
from dataclasses import dataclass

from aiosipua.headers import CaseInsensitiveDict, parse_uri, parse_via
from aiosipua.message import SipRequest, SipResponse

from ringcast.inet import hostport
from ringcast.sip.causes import reason_phrase
from ringcast.sip.transport import Addr

# The methods we accept (§20.5). NOTIFY carries the progress of our REFER (RFC 3515
# §2.4.4) and REFER is one we send; a callee's REFER is declined (603), never
# refused with a 405 whose Allow would name it.
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY, REFER"


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a request goes: a resolved address and a transport name."""

    host: str
    port: int
    transport: str = "udp"

    @property
    def addr(self) -> Addr:
        return (self.host, self.port)

    def __str__(self) -> str:
        return hostport(self.host, self.port)


def new_branch() -> str:
    """A Via branch with the RFC 3261 magic cookie (§8.1.1.7)."""
    return "z9hG4bK" + os.urandom(8).hex()


def new_tag() -> str:
    """A From/To tag (§19.3): 32 random bits at least."""
    return os.urandom(6).hex()


@functools.lru_cache(maxsize=4096)
def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=4096)
def uri_transport(uri: str) -> str | None:
    """A SIP URI's ``;transport=`` parameter, lower case, or None."""
    value = parse_uri(uri).params.get("transport")
    return value.lower() if value else None


def branch_of(via: str) -> str:
    """The ``branch`` parameter of a Via value; the whole Via for an RFC 2543 peer."""
    idx = via.find("branch=")
    if idx == -1:
        return via  # RFC 2543 peer: match on the whole Via
    end = idx + 7
    stop = len(via)
    for sep in (";", ",", " "):
        pos = via.find(sep, end)
        if pos != -1 and pos < stop:
            stop = pos
    return via[end:stop]


def sent_by(via: str) -> str:
    """The protocol and sent-by of a Via value (``SIP/2.0/UDP host:port``), §17.2.3."""
    return via.split(";", 1)[0].split(",", 1)[0].strip().lower()


def response_destination(via: str, addr: Addr, transport: str) -> Destination:
    """Where the response to a request with top Via ``via`` from ``addr`` goes.

    RFC 3261 §18.2.2 with RFC 3581 §4. Over TCP the response goes back on the
    connection the request came in on (the connection is keyed by ``addr``).
    Over UDP, with ``rport`` it goes to the source IP and port (the peer's NAT
    binding); else to the source IP (the ``received`` address we would add)
    and the sent-by port, 5060 by default. A peer that sends from one socket
    and listens on another names the listening one in its Via, and only gets
    our answers there. Always to the source IP: a Via ``maddr`` (§18.2.2, meant
    for multicast, which ringcast does not do) is not followed, or any stranger
    could aim our answers at a third party's address.
    """
    if transport != "udp":
        return Destination(addr[0], addr[1], transport)
    try:
        top = parse_via(via.split(",", 1)[0])
    except (ValueError, IndexError):
        return Destination(addr[0], addr[1], transport)
    port = top.port if top.port is not None and 0 < top.port < 65536 else 5060
    if "rport" in top.params:
        return Destination(addr[0], addr[1], transport)
    return Destination(addr[0], port, transport)


def build_response(
    request: SipRequest,
    status: int,
    *,
    reason: str | None = None,
    to_tag: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    content_type: str | None = None,
) -> SipResponse:
    """A response to ``request`` (§8.2.6): Via, From, To (+tag), Call-ID, CSeq copied."""
    h = CaseInsensitiveDict()
    for via in request.headers.get("via"):
        h.append("Via", via)
    h.append("From", request.headers.get_first("from") or "")
    to = request.headers.get_first("to") or ""
    if to_tag and ";tag=" not in to.lower():
        to = f"{to};tag={to_tag}"
    h.append("To", to)
    h.append("Call-ID", request.headers.get_first("call-id") or "")
    h.append("CSeq", request.headers.get_first("cseq") or "")
    for name, value in (headers or {}).items():
        h.append(name, value)
    if body and content_type:
        h.append("Content-Type", content_type)
    return SipResponse(
        headers=h, body=body, status_code=status, reason_phrase=reason or reason_phrase(status)
    )
