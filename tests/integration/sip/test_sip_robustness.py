"""The SIP endpoint under loss, garbage and unsolicited requests (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sipp import SippUas

from ringcast.domain import Outcome
from ringcast.sip import CallSpec, MediaOffer, OutboundCall, SipEndpoint

T1 = 0.05  # seconds
Addr = tuple[str, int]


@pytest.fixture
async def endpoint() -> AsyncIterator[SipEndpoint]:
    ep = SipEndpoint(host="127.0.0.1", port=0, t1=T1, t2=0.4)
    await ep.start()
    try:
        yield ep
    finally:
        await ep.close()


class _Side(asyncio.DatagramProtocol):
    def __init__(self, relay: LossyRelay, front: bool) -> None:
        self.relay = relay
        self.front = front

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.relay.forward(data, addr, self.front)


class LossyRelay:
    """A UDP relay between ringcast and SIPp that drops every ``nth`` datagram each way."""

    def __init__(self, target: Addr, nth: int = 5) -> None:
        self.target = target
        self.nth = nth
        self.counts = {"up": 0, "down": 0}
        self.dropped = {"up": 0, "down": 0}
        self.client: Addr | None = None
        self.front: asyncio.DatagramTransport | None = None
        self.back: asyncio.DatagramTransport | None = None
        self.port = 0

    async def start(self) -> LossyRelay:
        loop = asyncio.get_running_loop()
        self.front, _ = await loop.create_datagram_endpoint(
            lambda: _Side(self, True), local_addr=("127.0.0.1", 0)
        )
        self.back, _ = await loop.create_datagram_endpoint(
            lambda: _Side(self, False), local_addr=("127.0.0.1", 0)
        )
        self.port = self.front.get_extra_info("sockname")[1]
        return self

    def forward(self, data: bytes, addr: Addr, from_front: bool) -> None:
        direction = "up" if from_front else "down"
        self.counts[direction] += 1
        if self.counts[direction] % self.nth == 0:
            self.dropped[direction] += 1
            return
        if from_front:
            self.client = addr
            assert self.back is not None
            self.back.sendto(data, self.target)
        elif self.client is not None:
            assert self.front is not None
            self.front.sendto(data, self.client)

    def close(self) -> None:
        for t in (self.front, self.back):
            if t is not None:
                t.close()


@pytest.mark.sipp
async def test_calls_complete_through_lossy_path(
    sipp_bin: str, endpoint: SipEndpoint, tmp_path: Path
) -> None:
    calls = 5
    # The relay is the calls' outbound proxy and Record-Routes (the scenario adds
    # its Record-Route), so the ACKs and BYEs cross the lossy path too: an outbound
    # proxy that does not Record-Route drops out of the dialog's path (§8.1.2).
    uas = SippUas("uas_record_route.xml", tmp_path, max_calls=calls)
    relay = await LossyRelay(("127.0.0.1", uas.port)).start()
    uas.keys["proxy_host"] = "127.0.0.1"
    uas.keys["proxy_port"] = str(relay.port)
    try:
        uas.start()
        specs = [
            CallSpec(
                to=uas.uri(f"user{i}"),
                from_="me",
                media=MediaOffer("127.0.0.1", 40000 + 2 * i),
                proxy=f"sip:127.0.0.1:{relay.port}",
            )
            for i in range(calls)
        ]
        live = [OutboundCall(endpoint, s) for s in specs]
        results = await asyncio.wait_for(asyncio.gather(*(c.setup() for c in live)), 20)
        assert results == [True] * calls
        await asyncio.wait_for(asyncio.gather(*(c.hangup() for c in live)), 20)
        assert all(c.ended_by == "local" and c.outcome is Outcome.ANSWERED for c in live)
        assert relay.dropped["up"] >= 2 and relay.dropped["down"] >= 1
        assert await asyncio.to_thread(uas.wait, 10) == 0, uas.errors()
        assert sum(uas.invites_per_user().values()) >= calls
    finally:
        relay.close()
        uas.stop()


class _Probe(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.queue.put_nowait(data)


async def _probe(port: int) -> tuple[asyncio.DatagramTransport, _Probe]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        _Probe, local_addr=("127.0.0.1", 0), remote_addr=("127.0.0.1", port)
    )
    return transport, proto


def _request(
    method: str, port: int, *, to_tag: str | None = None, via_params: str = ";rport"
) -> bytes:
    """A request to the endpoint on ``port``. Its Via asks for rport (RFC 3581) by
    default, so the answer comes back to the probe's own socket (§18.2.2)."""
    to = "<sip:ringcast@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} sip:ringcast@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port}{via_params};branch=z9hG4bK{os.urandom(4).hex()}\r\n"
        "From: <sip:probe@127.0.0.1>;tag=probe1\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {os.urandom(6).hex()}@probe\r\n"
        f"CSeq: 1 {method}\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("method", "to_tag", "status"),
    [
        ("OPTIONS", None, 200),
        ("INVITE", None, 403),
        ("REGISTER", None, 405),
        ("BYE", "nosuchdialog", 481),
        ("INFO", "nosuchdialog", 481),
    ],
)
async def test_out_of_dialog_requests(
    endpoint: SipEndpoint, method: str, to_tag: str | None, status: int
) -> None:
    transport, probe = await _probe(endpoint.local_port)
    try:
        transport.sendto(_request(method, endpoint.local_port, to_tag=to_tag))
        reply = await asyncio.wait_for(probe.queue.get(), 2)
        assert reply.startswith(f"SIP/2.0 {status} ".encode())
        assert endpoint.live_calls == 0
    finally:
        transport.close()


GARBAGE: list[bytes] = [
    b"\x00" * 64,
    b"\r\n\r\n",
    b"hello world",
    b"SIP/2.0",
    b"SIP/2.0 abc OK\r\n\r\n",
    b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;bra",
    b"INVITE\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1\r\nCSeq: x INVITE\r\nCall-ID: a\r\n\r\n",
    b"BYE sip:x SIP/2.0\r\nCSeq: 1 BYE\r\nContent-Length: 99999\r\n\r\nabc",
    "OPTIONS sip:\u00e9@127.0.0.1 SIP/2.0\r\nVia: \xff\r\n\r\n".encode("latin-1"),
]


@pytest.mark.sipp
async def test_garbage_is_ignored_and_calls_still_work(
    sipp_bin: str, endpoint: SipEndpoint, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    transport, probe = await _probe(endpoint.local_port)
    try:
        rng = random.Random(3261)
        for size in (1, 7, 100, 1400, 9000):
            transport.sendto(rng.randbytes(size))
        for blob in GARBAGE:
            transport.sendto(blob)
        invite = _request("INVITE", endpoint.local_port)
        for cut in range(10, len(invite), 23):
            transport.sendto(invite[:cut])
        await asyncio.sleep(0.3)
        assert endpoint.garbage_count >= 10
        assert "dropped malformed SIP message" in caplog.text
    finally:
        transport.close()

    uas = SippUas("uas_answer.xml", tmp_path, max_calls=1)
    uas.start()
    try:
        call = OutboundCall(
            endpoint,
            CallSpec(to=uas.uri("after"), from_="me", media=MediaOffer("127.0.0.1", 40000)),
        )
        assert await call.setup() is True
        await call.hangup()
        assert await asyncio.to_thread(uas.wait, 5) == 0, uas.errors()
    finally:
        uas.stop()


async def test_public_ip_in_contact_and_sdp() -> None:
    """A raw-socket callee on 127.0.0.1 checks the INVITE and answers 486 to its source."""
    ep = SipEndpoint(host="127.0.0.1", port=0, t1=T1, public_ip="198.51.100.7")
    await ep.start()
    loop = asyncio.get_running_loop()
    callee, probe = await loop.create_datagram_endpoint(_Probe, local_addr=("127.0.0.1", 0))
    port = callee.get_extra_info("sockname")[1]
    try:
        call = OutboundCall(
            ep,
            CallSpec(
                to=f"sip:bob@127.0.0.1:{port}",
                from_="me",
                media=MediaOffer("0.0.0.0", 41000),
                headers={"X-Campaign": "spring"},
            ),
        )
        setup = asyncio.create_task(call.setup(), name="test-public-ip-setup")
        raw = await asyncio.wait_for(probe.queue.get(), 2)
        text = raw.decode()
        assert "Contact: <sip:me@198.51.100.7:" in text
        assert "c=IN IP4 198.51.100.7" in text
        assert "From: <sip:me@198.51.100.7>;tag=" in text
        assert ";rport;branch=z9hG4bK" in text
        # NOTIFY (our REFER's progress) and REFER are ours too (§20.5)
        assert (
            "\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY, REFER\r\n" in text
        )
        head = text.split("\r\n\r\n", 1)[0].split("\r\n")
        keep = [h for h in head if h.split(":", 1)[0] in ("Via", "From", "To", "Call-ID", "CSeq")]
        busy = "\r\n".join(["SIP/2.0 486 Busy Here"] + keep) + "\r\nContent-Length: 0\r\n\r\n"
        busy = busy.replace(
            f"To: <sip:bob@127.0.0.1:{port}>", f"To: <sip:bob@127.0.0.1:{port}>;tag=b1"
        )
        callee.sendto(busy.encode(), ("127.0.0.1", ep.local_port))
        assert await asyncio.wait_for(setup, 2) is False
        assert call.outcome is Outcome.BUSY
        for _ in range(20):  # INVITE retransmissions may come first
            ack = await asyncio.wait_for(probe.queue.get(), 2)
            if ack.startswith(b"ACK "):
                break
        assert ack.startswith(b"ACK sip:bob@127.0.0.1:")
    finally:
        callee.close()
        await ep.close()


async def test_garbage_straight_into_on_packet(endpoint: SipEndpoint) -> None:
    """No byte sequence raises out of on_packet (the transport's only entry point)."""
    rng = random.Random(17)
    for _ in range(300):
        endpoint.on_packet(rng.randbytes(rng.randrange(0, 600)), ("127.0.0.1", 9), "udp")
    base = _request("OPTIONS", 9)
    for _ in range(300):
        data = bytearray(base)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        endpoint.on_packet(bytes(data[: rng.randrange(1, len(data) + 1)]), ("127.0.0.1", 9), "udp")
    assert endpoint.garbage_count > 0


@pytest.mark.sipp
async def test_hundreds_of_concurrent_calls_share_one_socket(sipp_bin: str, tmp_path: Path) -> None:
    calls = 300
    ep = SipEndpoint(host="127.0.0.1", port=0)  # RFC default T1 under load
    await ep.start()
    # A SIPp starved of CPU for longer than T1 sees legal reorderings (BYE before
    # a lost ACK, a second ACK after BYE); the load scenario accepts them, and
    # the ACKs are checked below from what SIPp received.
    uas = SippUas("uas_answer_load.xml", tmp_path, max_calls=calls)
    uas.start()
    try:
        live = [
            OutboundCall(
                ep,
                CallSpec(
                    to=uas.uri(f"u{i}"),
                    from_="me",
                    media=MediaOffer("127.0.0.1", 20000 + 2 * i),
                ),
            )
            for i in range(calls)
        ]
        results = await asyncio.wait_for(asyncio.gather(*(c.setup() for c in live)), 30)
        assert results == [True] * calls
        assert ep.live_calls == calls
        assert len({c.call_id for c in live}) == calls
        await asyncio.wait_for(asyncio.gather(*(c.hangup() for c in live)), 30)
        assert ep.live_calls == 0
        assert await asyncio.to_thread(uas.wait, 10) == 0, uas.errors()
        call_ids = {c.call_id for c in live}
        acks, byes = uas.requests_per_call("ACK"), uas.requests_per_call("BYE")
        assert set(acks) == call_ids and min(acks.values()) >= 1
        assert set(byes) == call_ids
    finally:
        uas.stop()
        await ep.close()


async def test_garbage_logging_is_rate_limited(
    endpoint: SipEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="ringcast.sip.endpoint"):
        for _ in range(100):
            endpoint.on_packet(b"not sip at all", ("127.0.0.1", 9), "udp")
    lines = [r for r in caplog.records if "dropped malformed SIP message" in r.getMessage()]
    assert endpoint.garbage_count == 100
    assert 1 <= len(lines) <= 10


async def test_close_ends_calls_that_never_get_an_answer() -> None:
    ep = SipEndpoint(host="127.0.0.1", port=0, t1=0.5)
    await ep.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))
        call = OutboundCall(
            ep,
            CallSpec(
                to=f"sip:x@127.0.0.1:{hole.getsockname()[1]}",
                from_="me",
                media=MediaOffer("127.0.0.1", 40000),
            ),
        )
        setup = asyncio.create_task(call.setup(), name="test-close-setup")
        await asyncio.sleep(0.1)
        await ep.close(grace=0.3)
        assert await asyncio.wait_for(setup, 1) is False
        assert call.ended.is_set() and call.outcome is Outcome.FAILED
        assert call.error == "SIP endpoint closed before the call ended"


def _reply(
    request: bytes, status: str, *, tag: str | None = None, sdp: bool = False, port: int = 9
) -> bytes:
    """A response to a captured request, built by hand (a raw-socket callee)."""
    head = request.decode().split("\r\n\r\n", 1)[0].split("\r\n")
    keep = [h for h in head[1:] if h.split(":", 1)[0] in ("Via", "From", "To", "Call-ID", "CSeq")]
    if tag is not None:
        keep = [h + f";tag={tag}" if h.startswith("To:") else h for h in keep]
    body = ""
    if sdp:
        body = (
            "v=0\r\no=fork 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio 7000 RTP/AVP 0\r\n"
        )
        keep += [f"Contact: <sip:fork@127.0.0.1:{port}>", "Content-Type: application/sdp"]
    lines = [f"SIP/2.0 {status}", *keep, f"Content-Length: {len(body)}", "", body]
    return "\r\n".join(lines).encode()


@dataclass
class _CalleeProbe:
    """An endpoint and a bare UDP callee (its datagrams queued by a _Probe)."""

    ep: SipEndpoint
    callee: asyncio.DatagramTransport
    probe: _Probe
    port: int
    ours: tuple[str, int]  # where the callee sends to reach the endpoint

    def call(self) -> OutboundCall:
        """A new call to the callee (not kept here: tests watch calls being freed)."""
        media = MediaOffer("127.0.0.1", 1)
        spec = CallSpec(to=f"sip:bob@127.0.0.1:{self.port}", from_="me", media=media)
        return OutboundCall(self.ep, spec)


@contextlib.asynccontextmanager
async def _callee_probe() -> AsyncIterator[_CalleeProbe]:
    ep = SipEndpoint(host="127.0.0.1", port=0, t1=0.5)
    await ep.start()
    loop = asyncio.get_running_loop()
    callee, probe = await loop.create_datagram_endpoint(_Probe, local_addr=("127.0.0.1", 0))
    try:
        port = callee.get_extra_info("sockname")[1]
        yield _CalleeProbe(ep, callee, probe, port, ("127.0.0.1", ep.local_port))
    finally:
        callee.close()
        await ep.close()


async def test_second_fork_2xx_is_acked_and_byed() -> None:
    """§13.2.2.4: a 2xx from another fork is ACKed and ended with BYE; the call keeps the first."""
    async with _callee_probe() as peer:
        callee, probe, port, ours = peer.callee, peer.probe, peer.port, peer.ours
        call = peer.call()
        setup = asyncio.create_task(call.setup(), name="test-fork-setup")
        invite = await asyncio.wait_for(probe.queue.get(), 2)
        callee.sendto(_reply(invite, "200 OK", tag="forkA", sdp=True, port=port), ours)
        callee.sendto(_reply(invite, "200 OK", tag="forkB", sdp=True, port=port), ours)
        assert await asyncio.wait_for(setup, 2) is True
        seen: list[bytes] = []
        while len(seen) < 3:
            seen.append(await asyncio.wait_for(probe.queue.get(), 2))
        firsts = sorted(m.split(b"\r\n", 1)[0].split(b" ", 1)[0] for m in seen)
        assert firsts == [b"ACK", b"ACK", b"BYE"]
        bye = next(m for m in seen if m.startswith(b"BYE"))
        assert b"tag=forkB" in bye
        callee.sendto(_reply(bye, "200 OK"), ours)
        # A retransmitted 2xx of fork B gets the same ACK again, not a second BYE.
        callee.sendto(_reply(invite, "200 OK", tag="forkB", sdp=True, port=port), ours)
        again = await asyncio.wait_for(probe.queue.get(), 2)
        assert again.startswith(b"ACK ") and b"tag=forkB" in again
        assert call.dialog is not None and call.dialog.remote_tag == "forkA"
        assert not call.ended.is_set()
        hangup = asyncio.create_task(call.hangup(), name="test-fork-hangup")
        final_bye = await asyncio.wait_for(probe.queue.get(), 2)
        assert final_bye.startswith(b"BYE") and b"tag=forkA" in final_bye
        callee.sendto(_reply(final_bye, "200 OK"), ours)
        await asyncio.wait_for(hangup, 2)
        assert call.ended_by == "local"


async def test_ended_call_is_freed_and_late_2xx_still_acked() -> None:
    """Once a call has ended, the endpoint keeps only what answers its late 2xx
    (§13.2.2.4) for 64*T1, not the call: the call object is freed at once, yet a
    retransmitted 2xx gets the same ACK again and a new fork's 2xx an ACK and a BYE."""
    async with _callee_probe() as peer:
        callee, probe, port, ours = peer.callee, peer.probe, peer.port, peer.ours
        call = peer.call()
        call_id = call.call_id
        setup = asyncio.create_task(call.setup(), name="test-ended-setup")
        invite = await asyncio.wait_for(probe.queue.get(), 2)
        callee.sendto(_reply(invite, "200 OK", tag="forkA", sdp=True, port=port), ours)
        assert await asyncio.wait_for(setup, 2) is True
        ack = await asyncio.wait_for(probe.queue.get(), 2)
        assert ack.startswith(b"ACK ")
        hangup = asyncio.create_task(call.hangup(), name="test-ended-hangup")
        bye = await asyncio.wait_for(probe.queue.get(), 2)
        assert bye.startswith(b"BYE ")
        callee.sendto(_reply(bye, "200 OK"), ours)
        await asyncio.wait_for(hangup, 2)
        assert call.ended.is_set()
        gone = weakref.ref(call)
        del call, setup, hangup
        await asyncio.sleep(0)
        assert gone() is None, "an ended call is kept by the endpoint or its transactions"
        assert peer.ep.live_calls == 0
        # The INVITE transaction (Timer M) and the index still answer for the call.
        callee.sendto(_reply(invite, "200 OK", tag="forkA", sdp=True, port=port), ours)
        again = await asyncio.wait_for(probe.queue.get(), 2)
        assert again == ack
        callee.sendto(_reply(invite, "200 OK", tag="forkB", sdp=True, port=port), ours)
        seen = [await asyncio.wait_for(probe.queue.get(), 2) for _ in range(2)]
        assert sorted(m.split(b" ", 1)[0] for m in seen) == [b"ACK", b"BYE"]
        assert all(b"tag=forkB" in m and call_id.encode() in m for m in seen)


@pytest.mark.sipp
@pytest.mark.parametrize("proxy_host", ["127.0.0.1", "localhost"])
async def test_in_dialog_requests_follow_record_route(
    sipp_bin: str, endpoint: SipEndpoint, tmp_path: Path, proxy_host: str
) -> None:
    """§12.1.2 / §12.2.1.1: ACK and BYE go to the Record-Route proxy, with a Route header;
    a proxy named by host name is looked up first (RFC 3263), not replaced by the INVITE's
    destination."""
    uas = SippUas("uas_record_route.xml", tmp_path, max_calls=1)
    proxy = LossyRelay(("127.0.0.1", uas.port), nth=10**9)  # a lossless forwarder
    await proxy.start()
    uas.keys["proxy_port"] = str(proxy.port)
    uas.keys["proxy_host"] = proxy_host
    try:
        uas.start()
        call = OutboundCall(
            endpoint, CallSpec(to=uas.uri("rr"), from_="me", media=MediaOffer("127.0.0.1", 40000))
        )
        assert await call.setup() is True
        assert call.dialog is not None
        assert call.dialog.route_set == [f"<sip:{proxy_host}:{proxy.port};lr>"]
        await call.hangup()
        assert await asyncio.to_thread(uas.wait, 5) == 0, uas.errors()
        assert proxy.counts["up"] == 2  # the ACK and the BYE, not the INVITE
        bye = next(m for m in uas.received() if m.startswith("BYE"))
        assert f"Route: <sip:{proxy_host}:{proxy.port};lr>" in bye
        assert call.error is None
    finally:
        proxy.close()
        uas.stop()


def _routes(message: str) -> list[str]:
    return [line for line in message.splitlines() if line.lower().startswith("route:")]


@pytest.mark.sipp
@pytest.mark.parametrize("record_routes", [True, False])
async def test_outbound_proxy_is_not_preloaded_in_dialog(
    sipp_bin: str, endpoint: SipEndpoint, tmp_path: Path, record_routes: bool
) -> None:
    """RFC 3261 §8.1.1.1 / §8.1.2: the outbound proxy (``CallSpec.proxy``) is a
    pre-existing route set for requests *outside* a dialog; §12.2.1.1: in the dialog,
    the ACK of the 2xx and the BYE use the dialog's route set only. A proxy that
    Record-Routes is named once in each (never a duplicated Route), and the ACK and
    the BYE take the same path; one that does not drops out of the path (§8.1.2)."""
    scenario = "uas_record_route.xml" if record_routes else "uas_answer.xml"
    uas = SippUas(scenario, tmp_path, max_calls=1)
    proxy = LossyRelay(("127.0.0.1", uas.port), nth=10**9)  # a lossless forwarder
    await proxy.start()
    uas.keys["proxy_port"] = str(proxy.port)
    uas.keys["proxy_host"] = "127.0.0.1"
    proxy_uri = f"sip:127.0.0.1:{proxy.port}"
    try:
        uas.start()
        call = OutboundCall(
            endpoint,
            CallSpec(
                to=uas.uri("obp"), from_="me", media=MediaOffer("127.0.0.1", 40000), proxy=proxy_uri
            ),
        )
        assert await call.setup() is True
        await call.hangup()
        assert await asyncio.to_thread(uas.wait, 5) == 0, uas.errors()
        received = uas.received()
        invite = next(m for m in received if m.startswith("INVITE"))
        ack = next(m for m in received if m.startswith("ACK"))
        bye = next(m for m in received if m.startswith("BYE"))
        assert _routes(invite) == [f"Route: <{proxy_uri};lr>"]  # out of dialog: pre-loaded
        if record_routes:
            assert _routes(ack) == _routes(bye) == [f"Route: <{proxy_uri};lr>"]
            assert proxy.counts["up"] == 3  # INVITE, ACK and BYE all through the proxy
        else:
            assert _routes(ack) == _routes(bye) == []
            assert proxy.counts["up"] == 1  # only the INVITE: ACK and BYE to the Contact
        assert call.error is None and call.ended_by == "local"
    finally:
        proxy.close()
        uas.stop()


async def test_every_retransmitted_2xx_gets_the_same_ack() -> None:
    """§13.2.2.4: the 2xx ACK is its own request, re-sent for each 2xx retransmission."""
    async with _callee_probe() as peer:
        callee, probe, port, ours = peer.callee, peer.probe, peer.port, peer.ours
        call = peer.call()
        setup = asyncio.create_task(call.setup(), name="test-reack-setup")
        invite = await asyncio.wait_for(probe.queue.get(), 2)
        ok = _reply(invite, "200 OK", tag="t1", sdp=True, port=port)
        acks = []
        for _ in range(3):
            callee.sendto(ok, ours)
            acks.append(await asyncio.wait_for(probe.queue.get(), 2))
        assert await asyncio.wait_for(setup, 2) is True
        assert all(a.startswith(b"ACK sip:fork@127.0.0.1:") for a in acks)
        assert acks[0] == acks[1] == acks[2]  # the same ACK, same branch
        assert probe.queue.empty()  # and nothing else (no BYE)
        hangup = asyncio.create_task(call.hangup(), name="test-reack-hangup")
        bye = await asyncio.wait_for(probe.queue.get(), 2)
        callee.sendto(_reply(bye, "200 OK"), ours)
        await asyncio.wait_for(hangup, 2)


async def _drain(probe: _Probe, wait: float = 0.3) -> list[str]:
    """The first lines of everything ``probe`` receives within ``wait`` seconds."""
    await asyncio.sleep(wait)
    lines: list[str] = []
    while not probe.queue.empty() and len(lines) < 50:
        lines.append(probe.queue.get_nowait().split(b"\r\n", 1)[0].decode())
    return lines


@pytest.mark.parametrize(
    ("via_params", "at_listener", "at_sender"),
    [
        ("", ["SIP/2.0 200 OK"], []),  # no rport: the Via sent-by port (§18.2.2)
        (";rport", [], ["SIP/2.0 200 OK"]),  # rport: the source port (RFC 3581 §4)
        (";rport;maddr=127.0.0.1", [], ["SIP/2.0 200 OK"]),  # maddr is not followed
    ],
)
async def test_response_goes_where_the_via_says(
    endpoint: SipEndpoint, via_params: str, at_listener: list[str], at_sender: list[str]
) -> None:
    """A peer sending from one socket and listening on another (its Via's port)."""
    loop = asyncio.get_running_loop()
    listener, heard = await loop.create_datagram_endpoint(_Probe, local_addr=("127.0.0.1", 0))
    sender, echoed = await loop.create_datagram_endpoint(_Probe, local_addr=("127.0.0.1", 0))
    listen_port = listener.get_extra_info("sockname")[1]
    try:
        options = _request("OPTIONS", listen_port, via_params=via_params)
        sender.sendto(options, ("127.0.0.1", endpoint.local_port))
        assert await _drain(heard) == at_listener
        assert await _drain(echoed, 0.0) == at_sender
        sender.sendto(options, ("127.0.0.1", endpoint.local_port))  # retransmission: same place
        assert await _drain(heard) == at_listener
        assert await _drain(echoed, 0.0) == at_sender
    finally:
        listener.close()
        sender.close()


async def test_in_dialog_bye_answered_at_the_via_port() -> None:
    """§18.2.2: the callee's BYE comes from another socket, without rport; our 200 goes
    to the port in its Via (the callee's listening socket), retransmissions too."""
    ep = SipEndpoint(host="127.0.0.1", port=0, t1=0.5)
    await ep.start()
    loop = asyncio.get_running_loop()
    callee, probe = await loop.create_datagram_endpoint(_Probe, local_addr=("127.0.0.1", 0))
    other, other_probe = await loop.create_datagram_endpoint(_Probe, local_addr=("127.0.0.1", 0))
    port = callee.get_extra_info("sockname")[1]
    ours = ("127.0.0.1", ep.local_port)
    try:
        call = OutboundCall(
            ep,
            CallSpec(to=f"sip:bob@127.0.0.1:{port}", from_="me", media=MediaOffer("127.0.0.1", 1)),
        )
        setup = asyncio.create_task(call.setup(), name="test-via-bye-setup")
        invite = await asyncio.wait_for(probe.queue.get(), 2)
        callee.sendto(_reply(invite, "200 OK", tag="v1", sdp=True, port=port), ours)
        assert await asyncio.wait_for(setup, 2) is True
        ack = await asyncio.wait_for(probe.queue.get(), 2)
        assert ack.startswith(b"ACK ")
        head = {
            line.split(":", 1)[0]: line.split(":", 1)[1].strip()
            for line in invite.decode().split("\r\n\r\n", 1)[0].split("\r\n")[1:]
        }
        bye = (
            f"BYE sip:me@127.0.0.1:{ep.local_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKbyevia1\r\n"
            f"From: <sip:bob@127.0.0.1:{port}>;tag=v1\r\n"
            f"To: {head['From']}\r\n"
            f"Call-ID: {head['Call-ID']}\r\n"
            "CSeq: 7 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        other.sendto(bye, ours)
        await asyncio.wait_for(call.ended.wait(), 2)
        assert call.ended_by == "remote"
        assert await _drain(probe) == ["SIP/2.0 200 OK"]
        other.sendto(bye, ours)  # a retransmitted BYE gets the same 200, at the same port
        assert await _drain(probe) == ["SIP/2.0 200 OK"]
        assert await _drain(other_probe, 0.0) == []
    finally:
        callee.close()
        other.close()
        await ep.close()


@pytest.mark.sipp
@pytest.mark.parametrize(
    "contact",
    [
        "sip:alice@localhost:{port}",
        "sip:alice@LocalHost:{port};transport=udp",
        "sip:alice@localhost:{port};maddr=127.0.0.1",
    ],
)
async def test_remote_target_host_name_is_resolved(
    sipp_bin: str, endpoint: SipEndpoint, tmp_path: Path, contact: str
) -> None:
    """§12.2.1.1 / RFC 3263: the 2xx's Contact names a host; ACK and BYE go to what it
    resolves to (a forwarder in front of SIPp), not to where the INVITE went."""
    uas = SippUas("uas_contact_uri.xml", tmp_path, max_calls=1)
    hop = LossyRelay(("127.0.0.1", uas.port), nth=10**9)  # a lossless forwarder
    await hop.start()
    uas.keys["contact_uri"] = contact.format(port=hop.port)
    try:
        uas.start()
        call = OutboundCall(
            endpoint,
            CallSpec(to=uas.uri("alice"), from_="me", media=MediaOffer("127.0.0.1", 40000)),
        )
        assert await call.setup() is True
        await call.hangup()
        assert await asyncio.to_thread(uas.wait, 5) == 0, uas.errors()
        assert hop.counts["up"] == 2  # the ACK and the BYE, not the INVITE
        assert [m.split(" ", 1)[0] for m in uas.received()] == ["INVITE", "ACK", "BYE"]
        assert call.error is None and call.ended_by == "local"
    finally:
        hop.close()
        uas.stop()


@pytest.mark.sipp
@pytest.mark.parametrize(
    ("contact", "why"),
    [
        ("sip:alice@localhost:{port};transport=sctp", "unsupported transport 'sctp'"),
        ("sip:alice@localhost:{port}", "Name or service not known (test)"),
    ],
)
async def test_unresolvable_remote_target_fails_the_call(
    sipp_bin: str,
    endpoint: SipEndpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    contact: str,
    why: str,
) -> None:
    """No ACK can reach a Contact that does not resolve: the call fails with that reason,
    and nothing goes to the INVITE's destination instead."""
    real_resolve = endpoint.resolve

    async def resolve(uri: str, transport: str | None = None, **options: Any) -> object:
        if "localhost" in uri and "sctp" not in uri:
            raise socket.gaierror(-2, "Name or service not known (test)")
        return await real_resolve(uri, transport, **options)

    monkeypatch.setattr(endpoint, "resolve", resolve)
    uas = SippUas("uas_contact_uri.xml", tmp_path, max_calls=1)
    hop = LossyRelay(("127.0.0.1", uas.port), nth=10**9)
    await hop.start()
    uas.keys["contact_uri"] = contact.format(port=hop.port)
    try:
        uas.start()
        call = OutboundCall(
            endpoint,
            CallSpec(to=uas.uri("alice"), from_="me", media=MediaOffer("127.0.0.1", 40000)),
        )
        assert await asyncio.wait_for(call.setup(), 5) is False
        assert call.ended.is_set() and call.outcome is Outcome.FAILED
        assert call.status_code == 200 and call.answered_at is None
        assert call.error is not None
        assert call.error.startswith("cannot resolve the dialog's next hop sip:alice@localhost:")
        assert why in call.error
        await asyncio.sleep(0.5)  # SIPp retransmits its 200; none of them gets an ACK
        assert [m.split(" ", 1)[0] for m in uas.received()] == ["INVITE"]
        assert hop.counts["up"] == 0
    finally:
        hop.close()
        uas.stop()


@pytest.mark.sipp
async def test_target_refresh_to_host_name_is_resolved_for_bye(
    sipp_bin: str, endpoint: SipEndpoint, tmp_path: Path
) -> None:
    """An UPDATE moves the remote target to ``localhost:<port>`` (§12.2.2): our BYE looks
    the new target up and goes there (the forwarder), not to the old target."""
    uas = SippUas("uas_update_target.xml", tmp_path, max_calls=1)
    hop = LossyRelay(("127.0.0.1", uas.port), nth=10**9)  # a lossless forwarder
    await hop.start()
    uas.keys["contact_uri"] = f"sip:alice@localhost:{hop.port}"
    try:
        uas.start()
        call = OutboundCall(
            endpoint,
            CallSpec(to=uas.uri("alice"), from_="me", media=MediaOffer("127.0.0.1", 40000)),
        )
        assert await call.setup() is True
        deadline = time.monotonic() + 5
        while len(uas.received()) < 2:  # the ACK, then our 200 to the UPDATE
            assert time.monotonic() < deadline, uas.errors()
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert call.dialog is not None
        assert call.dialog.remote_target == f"sip:alice@localhost:{hop.port}"
        await asyncio.wait_for(call.hangup(), 5)
        assert await asyncio.to_thread(uas.wait, 5) == 0, uas.errors()
        assert hop.counts["up"] == 1  # the BYE only
        assert call.error is None and call.ended_by == "local"
    finally:
        hop.close()
        uas.stop()


@pytest.mark.sipp
@pytest.mark.parametrize("identify", [False, True])
async def test_strangers_get_stateless_answers_without_a_product_name(
    sipp_bin: str, tmp_path: Path, identify: bool
) -> None:
    """SIPp probes as a scanner would: every answer is stateless (nothing kept, no
    server transaction), a retransmitted OPTIONS gets the same answer (To tag too),
    and no User-Agent or Server names ringcast unless ``identify_to_strangers``."""
    ep = SipEndpoint(host="127.0.0.1", port=0, t1=T1, identify_to_strangers=identify)
    await ep.start()
    uas = SippUas("uac_stranger.xml", tmp_path, max_calls=1, extra=[f"127.0.0.1:{ep.local_port}"])
    try:
        uas.start()
        assert await asyncio.to_thread(uas.wait, 10) == 0, uas.errors()
        answers = [m for m in uas.received() if m.startswith("SIP/2.0")]
        assert [m.split("\n", 1)[0].split(" ", 2)[1] for m in answers] == [
            "200",
            "405",
            "200",
            "403",
        ]
        names = [
            line.split(":", 1)[0].strip().lower() for m in answers for line in m.splitlines()[1:]
        ]
        assert "user-agent" not in names
        if identify:
            assert all("\nServer: ringcast/0.1" in m for m in answers)
        else:
            assert "server" not in names
        to_lines = [line for line in answers[0].splitlines() if line.lower().startswith("to:")]
        assert ";tag=" in to_lines[0]
        assert answers[0] == answers[2]  # the retransmission: the same bytes, To tag too
        assert "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY, REFER" in answers[1]
        assert ep.stateless_answers == 4
        assert ep.transactions.server_count == 0 and ep.transactions.client_count == 0
        assert ep.live_calls == 0
    finally:
        uas.stop()
        await ep.close()
