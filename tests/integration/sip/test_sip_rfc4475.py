"""RFC 4475 torture messages at the SIP endpoint's socket (127.0.0.1 only).

Every message of the RFC's archive (tests/data/sip/rfc4475/, named by section)
goes as one UDP datagram to a running `SipEndpoint`, through the same entry
point as every packet (`on_packet`). Then a plain OPTIONS follows from the same
socket: UDP on loopback keeps order and the endpoint answers in `on_packet`, so
every answer that arrives before the OPTIONS' 200 is the answer to the torture
message, and the 200 shows the endpoint survived it. No waiting on silence.

What ringcast must answer follows the RFC, read for a user agent that places
calls and takes none (README, "as little as possible" to strangers): a valid
request gets a well-formed answer to *it* (its Via branch, Call-ID and CSeq):
OPTIONS 200, INVITE 403, REGISTER and other known methods 405, unknown ones 501,
505 to another SIP version, 416 to a scheme that is not sip/sips/tel, 420 to an
unsupported Require (RFC 3261 §8.2; 481 inside an unknown
dialog); a valid response is parsed and, matching no transaction, dropped. An
invalid message is refused or dropped; where the RFC lets an element be
liberal, the answer may also be the one to the valid form. Never a 2xx to a
request the RFC says to refuse, never a call, never a logged error or traceback.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiosipua.message import SipMessage, SipRequest, SipResponse

from ringcast.sip import SipEndpoint

DATA = Path(__file__).parents[2] / "data" / "sip" / "rfc4475"
NOTHING = None  # dropped, unanswered


@dataclass(frozen=True)
class Case:
    name: str  # the archive's file name
    section: str
    valid: bool  # must parse (RFC 4475 §3.1.1, and the syntactically valid §3.2-3.4)
    answers: frozenset[int | None]  # what ringcast may answer (None: nothing)
    bug: str | None = None  # a known deviation from the RFC: strict xfail, with the RFC's words


def case(
    name: str, section: str, valid: bool, *answers: int | None, bug: str | None = None
) -> Case:
    return Case(name, section, valid, frozenset(answers), bug)


CASES = [
    # 3.1.1 Valid messages: parsed and answered as their method asks.
    case("wsinv", "3.1.1.1", True, 481),  # INVITE with a To tag: no such dialog
    case("intmeth", "3.1.1.2", True, 405, 501),  # unknown method (ringcast says 405)
    case("esc01", "3.1.1.3", True, 403),
    case("escnull", "3.1.1.4", True, 405),
    case("esc02", "3.1.1.5", True, 405, 501),  # RE%47IST%45R is not REGISTER
    case("lwsdisp", "3.1.1.6", True, 200),
    case("longreq", "3.1.1.7", True, 403),
    case("dblreq", "3.1.1.8", True, 405),  # the INVITE after the body is ignored
    case("semiuri", "3.1.1.9", True, 200),
    case("transports", "3.1.1.10", True, 200),
    case("mpart01", "3.1.1.11", True, 405),
    case("unreason", "3.1.1.12", True, NOTHING),  # a response: no transaction, dropped
    case("noreason", "3.1.1.13", True, NOTHING),
    # 3.1.2 Invalid messages: refused (400, or the method's own refusal) or dropped.
    case("badinv01", "3.1.2.1", False, 400, 403, NOTHING),
    case("clerr", "3.1.2.2", False, 400, 403, NOTHING),
    case("ncl", "3.1.2.3", False, 400, 403, NOTHING),
    case("scalar02", "3.1.2.4", False, 400, 405, NOTHING),
    case("scalarlg", "3.1.2.5", False, NOTHING),  # "simply discard it"
    case("quotbal", "3.1.2.6", False, 400, 403, NOTHING),
    case("ltgtruri", "3.1.2.7", False, 400, 403, NOTHING),
    case("lwsruri", "3.1.2.8", False, 400, 403, 481, NOTHING),
    case("lwsstart", "3.1.2.9", False, 400, 403, NOTHING),
    case("trws", "3.1.2.10", False, 200, 400, NOTHING),  # may be liberal
    case("escruri", "3.1.2.11", False, 400, 403, NOTHING),
    case("baddate", "3.1.2.12", False, 400, 403, NOTHING),
    case("regbadct", "3.1.2.13", False, 400, 405, NOTHING),
    case("badaspec", "3.1.2.14", False, 200, 400, NOTHING),  # may be liberal
    case("baddn", "3.1.2.15", False, 200, 400, NOTHING),  # may be liberal
    case(
        "badvers",
        "3.1.2.16",
        False,
        505,
        NOTHING,
    ),
    case(
        "mismatch01",
        "3.1.2.17",
        False,
        400,
        NOTHING,
    ),
    case("mismatch02", "3.1.2.18", False, 400, 405, 501, NOTHING),
    case("bigcode", "3.1.2.19", False, NOTHING),
    # 3.2 Transaction layer semantics
    case("badbranch", "3.2.1", True, 200),
    # 3.3 Application layer semantics
    case("insuf", "3.3.1", False, 400, NOTHING),
    case(
        "unkscm",
        "3.3.2",
        True,
        416,
    ),
    case(
        "novelsc",
        "3.3.3",
        True,
        416,
        404,
    ),
    case("unksm2", "3.3.4", True, 400, 405),
    case(
        "bext01",
        "3.3.5",
        True,
        420,
    ),
    case("invut", "3.3.6", True, 403, 415),
    case("regaut01", "3.3.7", True, 401, 405),
    case("multi01", "3.3.8", False, 400, 403),
    case(
        "mcl01",
        "3.3.9",
        False,
        400,
    ),
    case("bcast", "3.3.10", True, NOTHING),  # a response: dropped, nothing sent anywhere
    case("zeromf", "3.3.11", True, 200),  # Max-Forwards 0 concerns proxies (483)
    case("cparam01", "3.3.12", True, 405),
    case("cparam02", "3.3.13", True, 405),
    case("regescrt", "3.3.14", True, 405),
    case("sdp01", "3.3.15", True, 403, 406),
    # 3.4 Backward compatibility
    case("inv2543", "3.4.1", True, 403),
    # The archive's extra file: a request line without SIP version.
    case("test", "A", False, 400, NOTHING),
]

# The sent-by of the first Via (long or compact form, any LWS and version).
_TOP_VIA = re.compile(
    rb"^(?:via|v)[ \t]*:\s*SIP\s*/\s*[0-9.]+\s*/\s*[A-Za-z0-9-]+\s+([^;\s,]+)", re.I | re.M
)


def load(c: Case) -> bytes:
    return (DATA / f"{c.section}-{c.name}.dat").read_bytes()


def aim_at(raw: bytes, port: int) -> bytes:
    """The message with its top Via's sent-by replaced by 127.0.0.1:`port`."""
    m = _TOP_VIA.search(raw)
    if m is None:
        return raw
    return raw[: m.start(1)] + f"127.0.0.1:{port}".encode() + raw[m.end(1) :]


class _Probe(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(data)


@pytest.fixture
async def endpoint() -> AsyncIterator[SipEndpoint]:
    ep = SipEndpoint(host="127.0.0.1", port=0, t1=0.05, t2=0.4)
    await ep.start()
    try:
        yield ep
    finally:
        await ep.close()


def test_the_archive_is_complete() -> None:
    files = sorted(p.name for p in DATA.glob("*.dat"))
    assert files == sorted(f"{c.section}-{c.name}.dat" for c in CASES)
    assert len(files) == 50


def _params() -> list[object]:
    out: list[object] = []
    for c in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=c.bug)] if c.bug else []
        out.append(pytest.param(c, id=f"{c.section}-{c.name}", marks=marks))
    return out


@pytest.mark.parametrize("c", _params())
async def test_torture_message(
    c: Case, endpoint: SipEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    loop = asyncio.get_running_loop()
    transport, probe = await loop.create_datagram_endpoint(_Probe, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    raw = aim_at(load(c), port)
    sentinel = f"{uuid.uuid4().hex}@rfc4475.test"
    try:
        transport.sendto(raw, ("127.0.0.1", endpoint.local_port))
        transport.sendto(_options(port, sentinel), ("127.0.0.1", endpoint.local_port))
        answers: list[SipResponse] = []
        while True:
            data = await asyncio.wait_for(probe.queue.get(), 5)
            reply = SipMessage.parse(data)
            assert isinstance(reply, SipResponse), data
            if reply.call_id == sentinel:
                assert reply.status_code == 200  # the endpoint is still there
                break
            answers.append(reply)
    finally:
        transport.close()

    got = [r.status_code for r in answers] or [None]
    assert len(got) == 1 and got[0] in c.answers, (
        f"RFC 4475 {c.section} ({c.name}): answered {got}, expected one of {set(c.answers)}"
    )
    if c.valid:
        message = SipMessage.parse(load(c))
        if isinstance(message, SipRequest) and answers:
            _assert_answers(message, answers[0])
    assert endpoint.live_calls == 0
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


def _assert_answers(request: SipRequest, response: SipResponse) -> None:
    """`response` belongs to `request` (RFC 3261 §8.2.6.2): its top Via branch,
    Call-ID, CSeq and From are the request's, and a final one tags the To."""
    assert response.call_id == request.call_id
    assert response.cseq == request.cseq
    assert _branch(response.headers.get_first("via")) == _branch(request.headers.get_first("via"))
    assert (response.headers.get_first("from") or "") == (request.headers.get_first("from") or "")
    to = response.headers.get_first("to") or ""
    assert response.status_code < 200 or re.search(r";\s*tag\s*=", to, re.I), to


def _branch(via: str | None) -> str:
    m = re.search(r";\s*branch\s*=\s*([^;,\s]+)", via or "", re.I)
    return m.group(1) if m else ""


def _options(port: int, call_id: str) -> bytes:
    return (
        "OPTIONS sip:ringcast@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:probe@127.0.0.1>;tag=rfc4475\r\n"
        "To: <sip:ringcast@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("name", "section", "status", "reason"),
    [("unreason", "3.1.1.12", 200, None), ("noreason", "3.1.1.13", 100, "")],
)
def test_valid_responses_parse(name: str, section: str, status: int, reason: str | None) -> None:
    message = SipMessage.parse((DATA / f"{section}-{name}.dat").read_bytes())
    assert isinstance(message, SipResponse)
    assert message.status_code == status
    if reason is not None:
        assert message.reason_phrase == reason
    else:  # UTF-8 in the reason phrase, kept as sent
        assert "простое" in message.reason_phrase
