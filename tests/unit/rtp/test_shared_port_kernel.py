"""What the kernel does with many RTP sockets on ONE local port (Linux SO_REUSEPORT).

The shared-socket design (bench/RESULTS.md, "One shared RTP socket") gives every
call the same local port: one unconnected socket (the demultiplexer, which also
sends with sendmmsg) and, once a call has latched, a per-call socket bound to
the same port and connect()ed to the callee. These tests pin the kernel
behaviour that design relies on, on loopback:

* a connected socket gets exactly its peer's packets, the demultiplexer every
  stranger's, none misdelivered;
* between a new socket's bind() and its connect() the kernel may hand it
  strangers' packets, and a drop-all socket filter attached before bind()
  closes that window (the packets are dropped, not misdelivered).
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from collections.abc import Iterator

import pytest

from ringcast.rtp.udp import attach_filter

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux SO_REUSEPORT")

CALLS = 200
SO_DETACH_FILTER = 27  # Linux <asm-generic/socket.h>
DROP_ALL = [(0x06, 0, 0, 0)]  # classic BPF: ret #0
END = b"end"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture(
    params=[
        "127.0.0.1",
        pytest.param(
            "::1",
            marks=pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback"),
        ),
    ]
)
def host(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _udp(host: str, port: int = 0, *, reuseport: bool = False) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    s.settimeout(2.0)
    return s


def _until_end(sock: socket.socket) -> list[tuple[bytes, tuple[str, int]]]:
    """What `sock` received before the END marker (sent last to it)."""
    got = []
    while True:
        data, addr = sock.recvfrom(2048)
        if data == END:
            return got
        got.append((data, addr))


@contextlib.contextmanager
def _port_with_calls(
    host: str, n: int
) -> Iterator[tuple[socket.socket, list[socket.socket], list[socket.socket]]]:
    """(demultiplexer, peers, call sockets): n call sockets on the demultiplexer's
    port, each connected to its own peer."""
    demux = _udp(host, reuseport=True)
    port = demux.getsockname()[1]
    peers: list[socket.socket] = []
    calls: list[socket.socket] = []
    try:
        for _ in range(n):
            peer = _udp(host)
            peers.append(peer)
            call = _udp(host, port, reuseport=True)
            calls.append(call)
            call.connect(peer.getsockname())
        yield demux, peers, calls
    finally:
        for s in (demux, *peers, *calls):
            s.close()


def test_connected_sockets_get_their_peer_and_the_demultiplexer_strangers(host: str) -> None:
    with _port_with_calls(host, CALLS) as (demux, peers, calls):
        here = demux.getsockname()
        strangers = [_udp(host) for _ in range(16)]
        try:
            for i, peer in enumerate(peers):
                for k in range(3):
                    peer.sendto(b"call %d packet %d" % (i, k), here)
            for j, stranger in enumerate(strangers):
                stranger.sendto(b"stranger %d" % j, here)
            for peer in peers:
                peer.sendto(END, here)
            strangers[0].sendto(END, here)
            for i, call in enumerate(calls):
                assert _until_end(call) == [
                    (b"call %d packet %d" % (i, k), peers[i].getsockname()) for k in range(3)
                ]
            assert sorted(data for data, _ in _until_end(demux)) == sorted(
                b"stranger %d" % j for j in range(16)
            )
        finally:
            for s in strangers:
                s.close()


def _window(host: str, guarded: bool) -> tuple[int, list[bytes], list[bytes]]:
    """Strangers' packets read by a new call socket between its bind() and connect()
    (of 64), then what it and the demultiplexer read after connect()."""
    with _port_with_calls(host, 8) as (demux, _, _):
        here = demux.getsockname()
        strangers = [_udp(host) for _ in range(64)]
        peer = _udp(host)
        new = socket.socket(demux.family, socket.SOCK_DGRAM)
        try:
            new.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if guarded:
                attach_filter(new, DROP_ALL)
            new.bind(here)
            for j, stranger in enumerate(strangers):
                stranger.sendto(b"stranger %d" % j, here)
            # loopback delivery may wait for ksoftirqd on a busy machine: until all 64 are
            # read (a guarded socket drops its share: then until the deadline)
            in_window = at_demux_early = 0
            deadline = time.monotonic() + 0.5
            while in_window + at_demux_early < 64 and time.monotonic() < deadline:
                time.sleep(0.01)
                in_window += len(_pending(new))
                at_demux_early += len(_pending(demux))
            demux.settimeout(2.0)
            new.connect(peer.getsockname())
            if guarded:
                new.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
            new.settimeout(2.0)
            peer.sendto(b"mine", here)
            strangers[1].sendto(b"stranger late", here)
            peer.sendto(END, here)
            strangers[1].sendto(END, here)
            after = [data for data, _ in _until_end(new)]
            at_demux = [data for data, _ in _until_end(demux)]
            return in_window, after, at_demux
        finally:
            for s in (*strangers, peer, new):
                s.close()


def _pending(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    got = []
    with contextlib.suppress(BlockingIOError):
        while True:
            got.append(sock.recv(2048))
    return got


def test_unguarded_bind_to_connect_window_takes_strangers_packets(host: str) -> None:
    in_window, after, at_demux = _window(host, guarded=False)
    assert in_window > 0  # the hazard the guard below is for
    assert after == [b"mine"]
    assert at_demux[-1] == b"stranger late"  # before it: window strangers hashed to it


def test_drop_all_filter_before_bind_closes_the_window(host: str) -> None:
    in_window, after, at_demux = _window(host, guarded=True)
    assert in_window == 0
    assert after == [b"mine"]
    assert at_demux[-1] == b"stranger late"
    assert all(data.startswith(b"stranger ") for data in at_demux)
