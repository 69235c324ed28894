"""RFC 3665 call flows, with the RFC's own message texts, over TCP on 127.0.0.1.

ringcast is Alice. Bob is a TCP socket this test owns that answers with the
texts of RFC 3665 (tests/data/sip/rfc3665/, named by section and message, with
the hosts Alice and Bob contact rewritten to 127.0.0.1 and Content-Length
recounted). Bob does what any UAS does to them (RFC 3261 §8.2.6.2): Via, From,
Call-ID and CSeq come from ringcast's request, the To is ringcast's with the
RFC's tag; the Contact gets Bob's port. Everything else, folding included, is
sent as the RFC prints it. ringcast's ACK and its answer to Bob's BYE are
compared with the RFC's F4 and F6.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiosipua.message import SipMessage, SipRequest, SipResponse

from ringcast.sip import CallSpec, MediaOffer, OutboundCall, SipEndpoint

DATA = Path(__file__).parents[2] / "data" / "sip" / "rfc3665"
_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)", re.I | re.M)


def flow(name: str) -> bytes:
    return (DATA / name).read_bytes()


def headers_of(message: bytes) -> list[tuple[str, str]]:
    """The header fields of a message as (name, raw text with its folding), in order."""
    head = message.split(b"\r\n\r\n", 1)[0].decode()
    fields: list[tuple[str, str]] = []
    for line in head.split("\r\n")[1:]:
        if line[:1] in (" ", "\t"):
            name, text = fields[-1]
            fields[-1] = (name, f"{text}\r\n{line}")
        else:
            fields.append((line.split(":", 1)[0].strip().lower(), line))
    return fields


def field(message: bytes, name: str) -> str:
    """The value of the first `name` header field (unfolded)."""
    for key, text in headers_of(message):
        if key == name:
            return re.sub(r"\r\n[ \t]+", " ", text.split(":", 1)[1]).strip()
    raise AssertionError(f"no {name} in {message!r}")


def uas_copy(template: bytes, request: bytes, *, contact_port: int) -> bytes:
    """RFC 3665's response `template` made the answer to `request` (§8.2.6.2)."""
    start, rest = template.split(b"\r\n", 1)
    head, body = rest.split(b"\r\n\r\n", 1)
    ours = {"via", "from", "call-id", "cseq"}
    out: list[str] = []
    for name, text in headers_of(template):
        if name == "via":
            received = ";received=127.0.0.1" if "received=" in text else ""
            out.append(f"Via: {field(request, 'via')}{received}")
        elif name in ours:
            out.append(f"{text.split(':', 1)[0]}: {field(request, name)}")
        elif name == "to":
            tag = re.search(r";tag=(\S+)", text)
            assert tag is not None
            out.append(f"To: {field(request, 'to')};tag={tag.group(1)}")
        elif name == "contact":
            out.append(text.replace("@127.0.0.1;", f"@127.0.0.1:{contact_port};"))
        else:
            out.append(text)
    return start + b"\r\n" + "\r\n".join(out).encode() + b"\r\n\r\n" + body


def bye_from_bob(template: bytes, invite: bytes, answer: bytes) -> bytes:
    """RFC 3665 F5 inside ringcast's dialog: to its Contact, tags swapped."""
    contact = re.search(r"<([^>]+)>", field(invite, "contact"))
    assert contact is not None
    out = [f"BYE {contact.group(1)} SIP/2.0"]
    for name, text in headers_of(template):
        if name == "from":
            out.append(f"From: {field(answer, 'to')}")
        elif name == "to":
            out.append(f"To: {field(invite, 'from')}")
        elif name == "call-id":
            out.append(f"Call-ID: {field(invite, 'call-id')}")
        else:
            out.append(text)
    return "\r\n".join(out).encode() + b"\r\n\r\n"


class Bob:
    """A TCP listener on 127.0.0.1 that hands over every SIP message it reads."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Bob:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).lstrip(b"\r\n")
                length = _LENGTH.search(head)
                body = await reader.readexactly(int(length.group(1))) if length else b""
                await self.inbox.put(head + body)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def send(self, data: bytes) -> None:
        self.writers[-1].write(data)  # the connection ringcast's last message came on

    async def next(self, start: str) -> bytes:
        message = await asyncio.wait_for(self.inbox.get(), 5)
        assert message.startswith(start.encode()), message
        return message

    async def close(self) -> None:
        for w in self.writers:
            w.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def endpoint() -> AsyncIterator[SipEndpoint]:
    ep = SipEndpoint(host="127.0.0.1", port=0, t1=0.05, t2=0.4)
    await ep.start()
    try:
        yield ep
    finally:
        await ep.close()


@pytest.fixture
async def bob() -> AsyncIterator[Bob]:
    peer = await Bob().start()
    try:
        yield peer
    finally:
        await peer.close()


def _spec(bob: Bob, **kwargs: str) -> CallSpec:
    return CallSpec(
        to=f"sip:bob@127.0.0.1:{bob.port};transport=tcp",
        from_="alice",
        media=MediaOffer("127.0.0.1", 40000),
        transport="tcp",
        **kwargs,  # type: ignore[arg-type]
    )


async def _answer_and_hang_up(endpoint: SipEndpoint, bob: Bob, invite: bytes) -> None:
    """§3.1 F2-F6 after `invite` (ringcast's INVITE, F1's counterpart)."""
    bob.send(uas_copy(flow("3.1-F2-180-ringing.sip"), invite, contact_port=bob.port))
    answer = uas_copy(flow("3.1-F3-200-ok.sip"), invite, contact_port=bob.port)
    bob.send(answer)
    ack = await bob.next("ACK ")

    # F4: to Bob's Contact, the INVITE's CSeq number, Bob's tag, a new branch.
    rfc_ack = flow("3.1-F4-ack.sip")
    assert (
        ack.split(b"\r\n", 1)[0]
        == f"ACK sip:bob@127.0.0.1:{bob.port};transport=tcp SIP/2.0".encode()
    )
    assert field(ack, "cseq") == field(invite, "cseq").split()[0] + " ACK"
    assert field(ack, "to").endswith(";tag=8321234356") and field(rfc_ack, "to").endswith(
        ";tag=8321234356"
    )
    assert field(ack, "from") == field(invite, "from")
    assert field(ack, "call-id") == field(invite, "call-id")
    assert field(ack, "max-forwards") == field(rfc_ack, "max-forwards") == "70"
    assert field(ack, "via").upper().startswith("SIP/2.0/TCP ")

    # F5 from Bob; ringcast's answer is F6.
    bye = bye_from_bob(flow("3.1-F5-bye.sip"), invite, answer)
    bob.send(bye)
    ok = SipMessage.parse(await bob.next("SIP/2.0 "))
    rfc_ok = SipMessage.parse(flow("3.1-F6-200-ok.sip"))
    assert isinstance(ok, SipResponse) and isinstance(rfc_ok, SipResponse)
    assert (ok.status_code, ok.reason_phrase) == (rfc_ok.status_code, rfc_ok.reason_phrase)
    assert ok.cseq == rfc_ok.cseq  # 1 BYE
    assert "branch=z9hG4bKnashds7" in (ok.headers.get_first("via") or "")
    assert ok.headers.get_first("from") == field(bye, "from")
    assert ok.headers.get_first("to") == field(bye, "to")


async def test_3_1_successful_session_establishment(endpoint: SipEndpoint, bob: Bob) -> None:
    """RFC 3665 §3.1: INVITE, 180, 200 with SDP, ACK, BYE from Bob, 200."""
    call = OutboundCall(endpoint, _spec(bob))
    setup = asyncio.create_task(call.setup(), name="test-rfc3665-setup")
    invite = await bob.next("INVITE ")
    await _answer_and_hang_up(endpoint, bob, invite)
    assert await asyncio.wait_for(setup, 5) is True
    assert call.answer is not None
    assert (call.answer.codec, call.answer.host, call.answer.port) == ("PCMU", "127.0.0.1", 3456)
    await asyncio.wait_for(call.ended.wait(), 5)
    assert (call.ended_by, call.status_code) == ("remote", 200)


async def test_3_2_proxy_challenge_then_session(endpoint: SipEndpoint, bob: Bob) -> None:
    """RFC 3665 §3.2 F2-F4: the 407 as the RFC prints it (folded Via and
    Proxy-Authenticate, qop "auth", an empty opaque); ringcast ACKs it and asks
    again with credentials for that realm and nonce, which this test checks
    with the digest of RFC 2617 §3.2.2. Then §3.1's answer and Bob's BYE."""
    call = OutboundCall(endpoint, _spec(bob, username="alice", password="rfc3665-secret"))
    setup = asyncio.create_task(call.setup(), name="test-rfc3665-auth-setup")
    first = await bob.next("INVITE ")
    bob.send(uas_copy(flow("3.2-F2-407-proxy-authorization-required.sip"), first, contact_port=0))
    ack = await bob.next("ACK ")  # §17.1.1.3: same branch and CSeq number, the 407's To tag
    assert field(ack, "via") == field(first, "via")
    assert field(ack, "cseq") == field(first, "cseq").split()[0] + " ACK"
    assert field(ack, "to").endswith(";tag=3flal12sf")

    again = await bob.next("INVITE ")
    assert int(field(again, "cseq").split()[0]) == int(field(first, "cseq").split()[0]) + 1
    assert field(again, "call-id") == field(first, "call-id")
    credentials = field(again, "proxy-authorization")
    assert credentials.startswith("Digest ")
    params = {
        k.lower(): v[1:-1] if v.startswith('"') else v
        for k, v in re.findall(r'(\w+)\s*=\s*("[^"]*"|[^\s,]+)', credentials)
    }
    assert params["username"] == "alice"
    assert params["realm"] == "atlanta.example.com"
    assert params["nonce"] == "f84f1cec41e6cbe5aea9c8e88d359"
    assert params["qop"] == "auth" and re.fullmatch(r"[0-9a-f]{8}", params["nc"])
    assert params.get("algorithm", "MD5").upper() == "MD5"
    assert "opaque" in params and params["opaque"] == ""  # RFC 2617: returned unchanged

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5("alice:atlanta.example.com:rfc3665-secret")
    ha2 = md5(f"INVITE:{params['uri']}")
    want = md5(f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:auth:{ha2}")
    assert params["response"] == want
    assert params["uri"] == again.split(b" ", 2)[1].decode()

    await _answer_and_hang_up(endpoint, bob, again)
    assert await asyncio.wait_for(setup, 5) is True
    await asyncio.wait_for(call.ended.wait(), 5)
    assert call.ended_by == "remote"


@pytest.mark.parametrize(
    "name",
    [
        "3.1-F1-invite.sip",
        "3.1-F2-180-ringing.sip",
        "3.1-F3-200-ok.sip",
        "3.1-F4-ack.sip",
        "3.1-F5-bye.sip",
        "3.1-F6-200-ok.sip",
        "3.2-F2-407-proxy-authorization-required.sip",
    ],
)
def test_the_flow_texts_parse(name: str) -> None:
    raw = flow(name)
    message = SipMessage.parse(raw)
    assert message.call_id == "3848276298220188511@atlanta.example.com"
    length = _LENGTH.search(raw)
    assert length is not None and int(length.group(1)) == len(raw.split(b"\r\n\r\n", 1)[1])
    assert b"example.com:" not in raw and b"192.0.2." not in raw  # only 127.0.0.1 is contacted
    if isinstance(message, SipRequest):
        assert message.cseq is not None and message.cseq.method == message.method
