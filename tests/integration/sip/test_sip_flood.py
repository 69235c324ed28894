"""Flood control: requests over a per-source rate are dropped unanswered (127.0.0.1 only).

The token bucket itself is tested with a fake clock; the endpoint against a
real UDP socket that blasts OPTIONS while a real call to SIPp completes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from pathlib import Path

import pytest
from sipp import SippUas

from ringcast.sip import CallSpec, MediaOffer, OutboundCall, SipEndpoint
from ringcast.sip.flood import FLOOD_LOG_WINDOW, FloodGate

T1 = 0.05  # seconds
FLOOD_COUNT = 2000  # OPTIONS sent by the flooder
FLOOD_SECONDS = 0.8  # the flood is spread over this long (< 1 s)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _options(port: int, n: int) -> bytes:
    return (
        f"OPTIONS sip:ringcast@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKflood{n}{os.urandom(3).hex()}\r\n"
        "From: <sip:flood@127.0.0.1>;tag=flood\r\n"
        "To: <sip:ringcast@127.0.0.1>\r\n"
        f"Call-ID: flood{n}@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _flood_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "SIP flood from" in r.getMessage()]


def test_bucket_burst_then_rate(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    gate = FloodGate(50.0, 100, clock=clock)
    with caplog.at_level(logging.WARNING, logger="ringcast.sip.flood"):
        assert all(gate.admit("192.0.2.1") for _ in range(100))
        assert not gate.admit("192.0.2.1")
        assert gate.admit("192.0.2.2")  # another source has its own bucket
        clock.now += 0.1  # 5 tokens back
        assert [gate.admit("192.0.2.1") for _ in range(6)] == [True] * 5 + [False]
        for _ in range(50):
            gate.admit("192.0.2.1")
    assert gate.dropped == 52
    warnings = _flood_warnings(caplog)
    assert warnings == [
        "SIP flood from 192.0.2.1: dropped 1 requests unanswered since the last warning"
        " (limit 50.0/s, burst 100)"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ringcast.sip.flood"):
        clock.now += FLOOD_LOG_WINDOW  # refills to the burst: the next 100 pass
        assert all(gate.admit("192.0.2.1") for _ in range(100))
        assert not gate.admit("192.0.2.1")
    assert _flood_warnings(caplog) == [
        "SIP flood from 192.0.2.1: dropped 52 requests unanswered since the last warning"
        " (limit 50.0/s, burst 100)"
    ]


def test_table_is_bounded_lru() -> None:
    clock = FakeClock()
    gate = FloodGate(1.0, 1, size=3, clock=clock)
    for host in ("a", "b", "c"):
        assert gate.admit(host)
    assert not gate.admit("a")  # a is now the most recently seen
    assert gate.admit("d")  # evicts b, the least recently seen
    assert len(gate) == 3
    assert gate.admit("b")  # forgotten, so a fresh bucket (evicts c)
    assert not gate.admit("a")  # a was kept
    assert not gate.admit("d")


def test_bad_limits_fail_early() -> None:
    with pytest.raises(ValueError, match=r"^flood_rate must be > 0, not 0$"):
        SipEndpoint(flood_rate=0)
    with pytest.raises(ValueError, match=r"^flood_burst must be >= 1, not 0$"):
        SipEndpoint(flood_burst=0)
    assert SipEndpoint(flood_rate=None).flood_dropped == 0


def _capture(ep: SipEndpoint) -> list[bytes]:
    sent: list[bytes] = []
    ep.send_raw = lambda data, dest: sent.append(data)  # type: ignore[method-assign]
    return sent


async def test_endpoint_drops_over_the_burst_without_answering(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ep = SipEndpoint(host="127.0.0.1", port=0, t1=T1, flood_rate=10.0, flood_burst=20)
    assert ep.flood is not None and (ep.flood.rate, ep.flood.burst) == (10.0, 20)
    ep.flood = FloodGate(10.0, 20, clock=FakeClock())  # no refill: exact counts
    await ep.start()
    try:
        sent = _capture(ep)
        with caplog.at_level(logging.WARNING, logger="ringcast.sip.flood"):
            for n in range(200):
                ep.on_packet(_options(ep.local_port, n), ("127.0.0.1", 5999), "udp")
            ep.on_packet(_options(ep.local_port, 999), ("127.0.0.2", 5999), "udp")
        assert len(sent) == 21  # the burst, and 127.0.0.2's first request
        assert all(data.startswith(b"SIP/2.0 200 ") for data in sent)
        assert ep.flood_dropped == 180
        assert len(_flood_warnings(caplog)) == 1
        # responses are never limited: a stray one is still parsed and dropped quietly
        ep.on_packet(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n"
            b"Call-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            ("127.0.0.1", 5999),
            "udp",
        )
        assert ep.flood_dropped == 180
    finally:
        await ep.close()


async def test_requests_of_live_calls_pass_an_exhausted_bucket() -> None:
    ep = SipEndpoint(host="127.0.0.1", port=0, t1=T1, flood_rate=10.0, flood_burst=5)
    ep.flood = FloodGate(10.0, 5, clock=FakeClock())
    await ep.start()
    try:
        sent = _capture(ep)
        call = OutboundCall(
            ep,  # in the dialog index; nothing is sent before setup()
            CallSpec(to="sip:bob@127.0.0.1:9", from_="me", media=MediaOffer("127.0.0.1", 1)),
        )
        for n in range(5):
            ep.on_packet(_options(ep.local_port, n), ("127.0.0.1", 5999), "udp")
        garbage = ep.garbage_count
        ep.on_packet(b"junk from a flooder", ("127.0.0.1", 5999), "udp")
        assert ep.garbage_count == garbage  # dropped before parsing
        assert ep.flood_dropped == 1
        for header in ("Call-ID", "i", "call-id "):
            sent.clear()
            bye = _options(ep.local_port, 7).replace(b"OPTIONS", b"BYE")
            bye = bye.replace(b"Call-ID: flood7@127.0.0.1", f"{header}: {call.call_id}".encode())
            bye = bye.replace(b"To: <sip:ringcast@127.0.0.1>", b"To: <sip:me@x>;tag=nosuch")
            ep.on_packet(bye, ("127.0.0.1", 5999), "udp")
            assert [d[:12] for d in sent] == [b"SIP/2.0 481 "], header
        assert ep.flood_dropped == 1
        call.abort("test over")
    finally:
        await ep.close()


@pytest.mark.parametrize(("silent", "answers"), [(False, 1), (True, 0)])
async def test_silent_invites(silent: bool, answers: int) -> None:
    ep = SipEndpoint(host="127.0.0.1", port=0, t1=T1, silent_invites=silent)
    await ep.start()
    try:
        sent = _capture(ep)
        invite = _options(ep.local_port, 1).replace(b"OPTIONS", b"INVITE")
        ep.on_packet(invite, ("127.0.0.1", 5999), "udp")
        assert len(sent) == answers
        if sent:
            assert sent[0].startswith(b"SIP/2.0 403 ")
        ep.on_packet(_options(ep.local_port, 2), ("127.0.0.1", 5999), "udp")
        assert sent[-1].startswith(b"SIP/2.0 200 ")  # OPTIONS is still answered
    finally:
        await ep.close()


def _blast(port: int) -> tuple[int, int]:
    """Send FLOOD_COUNT OPTIONS over ~FLOOD_SECONDS, then count answers; (sent, answered)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        target = ("127.0.0.1", port)
        batches = 40
        per_batch = FLOOD_COUNT // batches
        start = time.monotonic()
        sent = answered = 0
        for b in range(batches):
            for i in range(per_batch):
                try:
                    s.sendto(_options(port, b * per_batch + i), target)
                    sent += 1
                except BlockingIOError:
                    pass
            while answered < FLOOD_COUNT:
                try:
                    s.recv(65535)
                except BlockingIOError:
                    break
                answered += 1
            pause = start + FLOOD_SECONDS * (b + 1) / batches - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        s.settimeout(0.3)
        deadline = time.monotonic() + 2.0
        while answered < FLOOD_COUNT and time.monotonic() < deadline:
            try:
                s.recv(65535)
            except (TimeoutError, BlockingIOError):
                break
            answered += 1
        return sent, answered


@pytest.mark.sipp
async def test_flood_is_dropped_while_a_call_completes(
    sipp_bin: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ep = SipEndpoint(host="127.0.0.1", port=0, t1=T1, t2=0.4)  # default flood limits
    await ep.start()
    uas = SippUas("uas_answer.xml", tmp_path, max_calls=1)
    uas.start()
    try:
        with caplog.at_level(logging.WARNING, logger="ringcast.sip.flood"):
            call = OutboundCall(
                ep, CallSpec(to=uas.uri("flood"), from_="me", media=MediaOffer("127.0.0.1", 40000))
            )
            started = time.monotonic()
            flood = asyncio.create_task(asyncio.to_thread(_blast, ep.local_port), name="flood")
            await asyncio.sleep(0.05)  # the flood is on before the INVITE goes out
            assert await asyncio.wait_for(call.setup(), 5) is True
            sent, answered = await asyncio.wait_for(flood, 10)
            elapsed = time.monotonic() - started
            await asyncio.wait_for(call.hangup(), 5)
        assert sent >= FLOOD_COUNT * 0.9
        assert elapsed < 5
        # at most the burst plus 50/s for the flood's duration (plus slack) were answered
        assert answered <= 100 + 50 * elapsed + 20, (answered, elapsed)
        assert answered < sent / 4
        assert ep.flood_dropped > 0
        assert len(_flood_warnings(caplog)) == 1
        assert call.answered and call.ended_by == "local"
        assert await asyncio.to_thread(uas.wait, 5) == 0, uas.errors()
    finally:
        uas.stop()
        await ep.close()
