"""Two media sessions relayed both ways (ringcast.rtp.relay.Bridge) on the shared clock:
real sockets on 127.0.0.1 play the callee and the agent; no SIP."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import sys
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from ringcast.media.codecs import get_codec
from ringcast.rtp import MediaSession, PortAllocator, RtpClock, relay
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


# -- the clock's poller (one epoll for every lent socket): registrations come and go --------


def _registered(clock: RtpClock) -> set[int] | None:
    """The file descriptors the clock's relay epoll watches, as the kernel lists them
    (/proc/self/fdinfo of the epoll: one ``tfd:`` line per entry); None: no epoll."""
    poller = relay._pollers.get(clock)
    if poller is None:
        return None
    with open(f"/proc/self/fdinfo/{poller.ep.fileno()}") as f:
        return {int(line.split()[1]) for line in f if line.startswith("tfd:")}


def _at(session: MediaSession) -> tuple[str, int]:
    return ("127.0.0.1", session.local_port)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _latched_pair(
    clock: RtpClock, allocator: PortAllocator, callee: socket.socket, agent: socket.socket
) -> tuple[MediaSession, MediaSession]:
    a = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
    b = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
    a.start(*callee.getsockname(), 0, "PCMU", 101, 101)
    b.start(*agent.getsockname(), 0, "PCMU", 101, 101)
    for peer, s in ((callee, a), (agent, b)):
        peer.sendto(build_rtp(b"\xff" * 160, payload_type=0, seq=1, timestamp=0, ssrc=9), _at(s))
    for _ in range(100):
        await asyncio.sleep(0.005)
        if a._connected and b._connected:
            return a, b
    raise AssertionError("the sessions did not latch")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="epoll and /proc: Linux")
async def test_bridges_share_one_poller_and_leave_no_registration(
    clock: RtpClock, allocator: PortAllocator
) -> None:
    peers = [_peer() for _ in range(4)]
    sessions: list[MediaSession] = []
    try:
        a, b = await _latched_pair(clock, allocator, peers[0], peers[1])
        c, d = await _latched_pair(clock, allocator, peers[2], peers[3])
        sessions += [a, b, c, d]
        fds = _open_fds()
        first, second = Bridge(clock, a, b), Bridge(clock, c, d)
        first.start()
        assert _registered(clock) == {a._sock.fileno(), b._sock.fileno()}
        second.start()
        assert _registered(clock) == {s._sock.fileno() for s in sessions}  # one epoll for both
        assert _open_fds() == fds + 1
        peers[2].sendto(
            build_rtp(b"\x33" * 160, payload_type=0, seq=2, timestamp=160, ssrc=9), _at(c)
        )
        await asyncio.sleep(0.1)
        first.stop()
        assert _registered(clock) == {c._sock.fileno(), d._sock.fileno()}
        assert [p[12:] for p in drain(peers[3]) if p[1] & 0x7F == 0][-1:] == [b"\x33" * 160]
        peers[2].sendto(
            build_rtp(b"\x44" * 160, payload_type=0, seq=3, timestamp=320, ssrc=9), _at(c)
        )
        await asyncio.sleep(0.1)
        assert [p[12:] for p in drain(peers[3]) if p[1] & 0x7F == 0] == [b"\x44" * 160]
        second.stop()
        assert clock not in relay._pollers and _open_fds() == fds  # the epoll closed
        for s in sessions:  # the sessions read their own sockets again
            assert not s._lent
        second.start()  # a bridge may start again: a new epoll
        assert _registered(clock) == {c._sock.fileno(), d._sock.fileno()}
        second.stop()
        assert clock not in relay._pollers and _open_fds() == fds
    finally:
        for s in sessions:
            await s.close()
        for p in peers:
            p.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="epoll and /proc: Linux")
async def test_a_leg_that_latches_while_bridged_registers_then_leaves(
    clock: RtpClock, allocator: PortAllocator, peers: tuple[socket.socket, socket.socket]
) -> None:
    """A source that had not latched when the bridge started is tapped, not polled; its
    first tick after the latch borrows the socket and registers it with the poller."""
    callee, agent = peers
    a = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
    b = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
    try:
        a.start(*callee.getsockname(), 0, "PCMU", 101, 101)
        b.start(*agent.getsockname(), 0, "PCMU", 101, 101)
        bridge = Bridge(clock, a, b)
        bridge.start()
        assert bridge.a_to_b.tapped and bridge.b_to_a.tapped
        assert _registered(clock) is None  # nothing lent, no epoll
        for n in range(3):
            callee.sendto(
                build_rtp(bytes([n]) * 160, payload_type=0, seq=n, timestamp=160 * n, ssrc=5),
                _at(a),
            )
            await asyncio.sleep(0.03)
        assert bridge.a_to_b.sock is not None and not bridge.a_to_b.tapped
        assert _registered(clock) == {a._sock.fileno()}
        assert bridge.b_to_a.tapped  # the agent has sent nothing: not latched
        relayed = [p[12] for p in drain(agent) if p[1] & 0x7F == 0]
        assert relayed and relayed[-1] == 2
        bridge.stop()
        assert _registered(clock) is None and not a._lent
    finally:
        await a.close()
        await b.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="epoll and /proc: Linux")
async def test_a_socket_closed_under_the_relay_is_dropped_by_the_kernel_and_the_stop_is_clean(
    clock: RtpClock, allocator: PortAllocator, peers: tuple[socket.socket, socket.socket]
) -> None:
    callee, agent = peers
    a, b = await _latched_pair(clock, allocator, callee, agent)
    try:
        fds = _open_fds()
        bridge = Bridge(clock, a, b)
        bridge.start()
        await a.close()  # the callee's session ends first (its socket closes while lent)
        assert _registered(clock) == {b._sock.fileno()}  # the kernel removed the entry
        agent.sendto(build_rtp(b"\x11" * 160, payload_type=0, seq=2, timestamp=160, ssrc=9), _at(b))
        await asyncio.sleep(0.06)  # ticks go on; the closed leg reads nothing, raises nothing
        assert clock.stream_count == 2
        bridge.stop()
        assert clock not in relay._pollers and _open_fds() == fds - 2  # a's RTP + RTCP
    finally:
        await a.close()
        await b.close()


async def test_a_failing_listener_takes_only_its_own_leg_off_the_clock(
    clock: RtpClock, allocator: PortAllocator, peers: tuple[socket.socket, socket.socket]
) -> None:
    """An error while a leg's packet is read (here: its recording listener) ends that leg,
    as when the leg read its own socket; the other direction goes on relaying."""
    callee, agent = peers
    a, b = await _latched_pair(clock, allocator, callee, agent)
    try:
        bridge = Bridge(clock, a, b)

        def broken(payload: bytes, ts: int) -> None:
            raise RuntimeError("listener broke")

        bridge.a_to_b.listener = broken
        bridge.start()
        callee.sendto(
            build_rtp(b"\x22" * 160, payload_type=0, seq=2, timestamp=160, ssrc=9), _at(a)
        )
        await asyncio.sleep(0.08)
        assert clock.stream_count == 1  # a_to_b is off the clock
        if sys.platform.startswith("linux"):
            assert _registered(clock) == {b._sock.fileno()}
        drain(callee)
        agent.sendto(build_rtp(b"\x55" * 160, payload_type=0, seq=2, timestamp=160, ssrc=9), _at(b))
        await asyncio.sleep(0.06)
        assert [p[12:] for p in drain(callee) if p[1] & 0x7F == 0] == [b"\x55" * 160]
        bridge.stop()
        assert clock not in relay._pollers
    finally:
        await a.close()
        await b.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="epoll: Linux")
async def test_one_poll_reads_every_leg_and_a_late_datagram_still_goes_out_at_its_turn(
    allocator: PortAllocator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first leg to tick polls for every leg of the clock; a datagram that comes
    after that poll but before its own leg's turn is read then (FIONREAD), not a tick
    later. The clock is driven by hand: each leg's `_next()` is its turn."""
    monkeypatch.setattr(relay, "POLL_INTERVAL", 3600.0)  # no poll within a tick but the first
    clock = RtpClock()
    monkeypatch.setattr(clock, "start", lambda: None)
    peers = [_peer() for _ in range(4)]
    sessions: list[MediaSession] = []
    try:
        a, b = await _latched_pair(clock, allocator, peers[0], peers[1])
        c, d = await _latched_pair(clock, allocator, peers[2], peers[3])
        sessions += [a, b, c, d]
        first, second = Bridge(clock, a, b), Bridge(clock, c, d)
        first.start()
        second.start()

        def talk(peer: socket.socket, to: MediaSession, fill: int, seq: int) -> None:
            payload = bytes([fill]) * 160
            peer.sendto(
                build_rtp(payload, payload_type=0, seq=seq, timestamp=160 * seq, ssrc=9), _at(to)
            )

        await asyncio.sleep(0)  # nothing left of the latch in the sockets
        for leg in (first.a_to_b, first.b_to_a, second.a_to_b, second.b_to_a):
            leg.queue.clear()
        talk(peers[0], a, 0x61, 2)
        talk(peers[2], c, 0x63, 2)
        await asyncio.sleep(0.01)  # in the sockets
        clock.ticks += 1
        pkt = first.a_to_b._next()  # the tick's first leg: one poll for all
        assert pkt is not None and bytes(pkt[12:]) == b"\x61" * 160
        assert [p for _, p, _ in second.a_to_b.queue] == [b"\x63" * 160]  # read by that poll
        talk(peers[3], d, 0x64, 2)  # after the poll, before d's leg's turn
        await asyncio.sleep(0.01)
        assert not second.b_to_a.queue
        assert first.b_to_a._next() is None  # nothing came for it
        pkt = second.a_to_b._next()
        assert pkt is not None and bytes(pkt[12:]) == b"\x63" * 160
        pkt = second.b_to_a._next()  # its own socket, at its turn
        assert pkt is not None and bytes(pkt[12:]) == b"\x64" * 160
        first.stop()
        second.stop()
        assert clock not in relay._pollers
    finally:
        for s in sessions:
            await s.close()
        for p in peers:
            p.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="epoll: Linux")
async def test_a_packet_that_comes_after_a_tick_goes_out_at_the_half_tick_in_the_next_slot(
    allocator: PortAllocator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half a tick after each tick the relay reads its sockets again and sends what
    came at once, not at the next tick (its added delay stays under half a tick,
    whatever the far end's phase): that packet takes the next tick's sequence number
    and timestamp, and the next tick sends nothing for that leg. Clock driven by hand."""
    clock = RtpClock()
    monkeypatch.setattr(clock, "start", lambda: None)
    callee, agent = _peer(), _peer()
    a, b = await _latched_pair(clock, allocator, callee, agent)
    try:
        bridge = Bridge(clock, a, b)
        bridge.start()
        leg = bridge.a_to_b
        await asyncio.sleep(0)
        leg.queue.clear()
        drain(agent)

        def talk(fill: int, seq: int) -> None:
            payload = bytes([fill]) * 160
            callee.sendto(
                build_rtp(payload, payload_type=0, seq=seq, timestamp=160 * seq, ssrc=9), _at(a)
            )

        def heard() -> list[tuple[int, int, bytes]]:
            return [
                (*struct.unpack_from("!HI", p, 2), p[12:]) for p in drain(agent) if p[1] & 0x7F == 0
            ]

        talk(0x61, 2)
        await asyncio.sleep(0.01)
        clock.ticks += 1
        first = leg._next()  # a tick: what came before it goes out at it
        assert first is not None and bytes(first[12:]) == b"\x61" * 160
        seq, ts = struct.unpack_from("!HI", first, 2)
        sent = clock.packets_sent
        talk(0x62, 3)  # after the tick
        await asyncio.sleep(0.01)
        clock._half_tick()
        assert heard() == [
            ((seq + 1) & 0xFFFF, (ts + 160) & 0xFFFFFFFF, b"\x62" * 160)
        ]  # not a tick later
        assert clock.packets_sent == sent + 1
        clock.ticks += 1
        assert leg._next() is None  # its slot went out at the half-tick
        assert bridge.b_to_a._next() is None  # nothing came the other way
        clock._half_tick()  # nothing came: nothing sent
        assert heard() == []
        talk(0x63, 4)
        await asyncio.sleep(0.01)
        clock.ticks += 1
        third = leg._next()  # before the half-tick: at the tick, in the slot after
        assert third is not None and bytes(third[12:]) == b"\x63" * 160
        assert struct.unpack_from("!HI", third, 2) == ((seq + 2) & 0xFFFF, (ts + 320) & 0xFFFFFFFF)
        bridge.stop()
        assert not clock._half_ticks  # the poller's hook left with its last leg
    finally:
        await a.close()
        await b.close()
        callee.close()
        agent.close()


async def test_a_leg_keeps_its_attributes_inline(
    clock: RtpClock, allocator: PortAllocator, peers: tuple[socket.socket, socket.socket]
) -> None:
    """Each packet reads some twenty of a leg's attributes. CPython 3.11 keeps at most
    29 attributes in an instance's inline values; a 30th turns every one of those
    reads into a dict lookup. `hear_digits` (a bridged transfer's callee leg) adds one."""
    from ringcast.dialer.bridge_digits import hear_digits

    callee, agent = peers
    a, b = await _latched_pair(clock, allocator, callee, agent)
    try:
        bridge = Bridge(clock, a, b)
        hear_digits(bridge.a_to_b, lambda digit: None)
        bridge.start()
        await asyncio.sleep(0.03)
        assert len(vars(bridge.a_to_b)) <= 29, sorted(vars(bridge.a_to_b))
        assert len(vars(bridge.b_to_a)) <= 29, sorted(vars(bridge.b_to_a))
        bridge.stop()
    finally:
        await a.close()
        await b.close()
