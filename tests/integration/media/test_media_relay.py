"""Two media sessions relayed both ways (ringcast.rtp.relay.Bridge) on the shared clock:
real sockets on 127.0.0.1 play the callee and the agent; no SIP."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from ringcast.media.codecs import get_codec
from ringcast.rtp import MediaSession, PortAllocator, RtpClock
from ringcast.rtp.packet import build_event, build_rtp
from ringcast.rtp.relay import QUEUE_MAX, Bridge, transcode_table


@pytest.fixture
async def clock() -> AsyncIterator[RtpClock]:
    c = RtpClock()
    yield c
    await c.stop()


@pytest.fixture
def allocator() -> PortAllocator:
    base = random.randrange(40000, 59000, 2)
    return PortAllocator(base, base + 20)


def _peer() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


@pytest.fixture
def peers() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = _peer(), _peer()
    yield a, b
    a.close()
    b.close()


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(2048))
        except BlockingIOError:
            return out


def test_transcode_table_is_g711_both_ways() -> None:
    assert transcode_table("PCMU", "PCMU") is None
    u2a = transcode_table("PCMU", "PCMA")
    a2u = transcode_table("PCMA", "PCMU")
    assert u2a is not None and a2u is not None and len(u2a) == len(a2u) == 256
    pcm = (np.sin(np.arange(800) / 5) * 8000).astype(np.int16)
    ulaw = get_codec("PCMU").encode(pcm)
    alaw = ulaw.translate(u2a)
    back = get_codec("PCMA").decode(alaw).astype(np.int32)
    assert np.max(np.abs(back - pcm)) < 600  # within G.711's quantisation at this level
    assert alaw == get_codec("PCMA").encode(get_codec("PCMU").decode(ulaw))


async def test_audio_and_digits_are_relayed_and_transcoded(
    clock: RtpClock, allocator: PortAllocator, peers: tuple[socket.socket, socket.socket]
) -> None:
    callee, agent = peers
    a = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
    b = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
    try:
        a.start(*callee.getsockname(), 0, "PCMU", 101, 101)
        b.start(*agent.getsockname(), 8, "PCMA", 96, 96)
        bridge = Bridge(clock, a, b)
        bridge.start()
        payloads = [bytes([n]) * 160 for n in range(10, 20)]
        for n, p in enumerate(payloads):  # the callee talks PCMU, 20 ms apart
            callee.sendto(
                build_rtp(p, payload_type=0, seq=n, timestamp=160 * n, ssrc=5),
                ("127.0.0.1", a.local_port),
            )
            await asyncio.sleep(0.02)
        digit = build_event(1, end=True, duration=800)
        callee.sendto(
            build_rtp(digit, payload_type=101, seq=20, timestamp=4000, ssrc=5),
            ("127.0.0.1", a.local_port),
        )
        agent.sendto(
            build_rtp(b"\xd5" * 160, payload_type=8, seq=1, timestamp=0, ssrc=6),
            ("127.0.0.1", b.local_port),
        )
        await asyncio.sleep(0.15)
        assert bridge.a_to_b.sock is not None  # latched: the relay reads the socket itself
        bridge.stop()
        got = drain(agent)
        audio = [p for p in got if p[1] & 0x7F == 8]
        events = [p for p in got if p[1] & 0x7F == 96]
        table = transcode_table("PCMU", "PCMA")
        assert table is not None
        # in order, transcoded; a frame may be dropped when two came within one tick
        sent = [p.translate(table) for p in payloads]
        relayed = [p[12:] for p in audio]
        assert relayed[-1] == sent[-1] and len(relayed) >= len(sent) - 3
        assert relayed == [p for p in sent if p in relayed]
        assert [p[12:] for p in events] == [digit]  # telephone-event with the agent's type
        assert audio[0][1] & 0x80  # the first packet starts a talkspurt
        seqs = [struct.unpack_from("!H", p, 2)[0] for p in audio + events]
        assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]
        back = [p for p in drain(callee) if p[1] & 0x7F == 0]
        u = transcode_table("PCMA", "PCMU")
        assert u is not None and [p[12:] for p in back] == [b"\xd5".translate(u) * 160]
        stats = bridge.a_to_b.stats()
        assert stats.packets + stats.dropped == len(payloads) + 1
        assert stats.events == 1
    finally:
        await a.close()
        await b.close()


async def test_a_source_running_ahead_loses_its_oldest_audio(
    clock: RtpClock, allocator: PortAllocator, peers: tuple[socket.socket, socket.socket]
) -> None:
    callee, agent = peers
    a = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
    b = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
    try:
        a.start(*callee.getsockname(), 0, "PCMU", 101, 101)
        b.start(*agent.getsockname(), 0, "PCMU", 101, 101)
        bridge = Bridge(clock, a, b)
        burst = QUEUE_MAX + 5
        for n in range(burst):  # all at once: more than the queue holds
            callee.sendto(
                build_rtp(bytes([n]) * 160, payload_type=0, seq=n, timestamp=160 * n, ssrc=5),
                ("127.0.0.1", a.local_port),
            )
        bridge.start()
        await asyncio.sleep(0.05)  # the burst is read before the first ticks
        await asyncio.sleep(0.02 * (QUEUE_MAX + 3))
        bridge.stop()
        got = [p[12] for p in drain(agent) if p[1] & 0x7F == 0]
        assert bridge.a_to_b.dropped >= 5 - 1
        assert got and got[-1] == burst - 1 and len(got) <= QUEUE_MAX + 1
    finally:
        await a.close()
        await b.close()


async def test_an_srtp_callee_is_relayed_decrypted_to_a_plain_agent_and_back_encrypted(
    clock: RtpClock, allocator: PortAllocator, peers: tuple[socket.socket, socket.socket]
) -> None:
    """The callee's leg is SRTP (RFC 3711), the agent's plain RTP: what the relay reads
    from the callee's socket is authenticated and decrypted before it is relayed, a
    forged packet is dropped, and what goes back to the callee is encrypted."""
    import secrets

    import pylibsrtp

    from ringcast.rtp.srtp import PROFILES

    suite = "AES_CM_128_HMAC_SHA1_80"
    ours, theirs = secrets.token_bytes(30), secrets.token_bytes(30)

    def peer(key: bytes, inbound: bool) -> pylibsrtp.Session:
        kind = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
        return pylibsrtp.Session(
            pylibsrtp.Policy(key=key, ssrc_type=kind, srtp_profile=PROFILES[suite])
        )

    callee_out, callee_in = peer(theirs, False), peer(ours, True)
    callee, agent = peers
    a = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
    b = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
    try:
        a.secure(suite, ours, theirs)
        a.start(*callee.getsockname(), 0, "PCMU", 101, 101)
        b.start(*agent.getsockname(), 0, "PCMU", 101, 101)
        bridge = Bridge(clock, a, b)
        bridge.start()
        payloads = [bytes([n]) * 160 for n in range(30, 38)]
        for n, p in enumerate(payloads):
            packet = build_rtp(p, payload_type=0, seq=n, timestamp=160 * n, ssrc=7)
            callee.sendto(callee_out.protect(packet), ("127.0.0.1", a.local_port))
            await asyncio.sleep(0.02)
        forged = build_rtp(b"\x01" * 170, payload_type=0, seq=99, timestamp=99 * 160, ssrc=7)
        callee.sendto(forged, ("127.0.0.1", a.local_port))
        agent.sendto(
            build_rtp(b"\x55" * 160, payload_type=0, seq=1, timestamp=0, ssrc=8),
            ("127.0.0.1", b.local_port),
        )
        await asyncio.sleep(0.15)
        assert bridge.a_to_b.sock is not None  # the relay reads the callee's socket itself
        bridge.stop()
        relayed = [p[12:] for p in drain(agent) if p[1] & 0x7F == 0]
        assert relayed and relayed[-1] == payloads[-1]
        assert relayed == [p for p in payloads if p in relayed]  # plain, in order
        assert not any(
            p.startswith(b"\x01" * 160) for p in relayed
        )  # the forged packet never reached the agent
        wire = drain(callee)
        back = [callee_in.unprotect(p) for p in wire]  # raises unless authentic
        assert [p[12:] for p in back if p[1] & 0x7F == 0] == [b"\x55" * 160]
    finally:
        await a.close()
        await b.close()
