"""SIP transports on 127.0.0.1: TCP framing, idle connection reaping."""

from __future__ import annotations

import asyncio
import socket

from ringcast.sip.transport import Addr, TcpTransport, read_framed_message


class _User:
    def __init__(self) -> None:
        self.packets: list[bytes] = []
        self.errors: list[tuple[Addr, str]] = []
        self.busy = False

    def on_packet(self, data: bytes, addr: Addr, transport: str) -> None:
        self.packets.append(data)

    def on_transport_error(self, addr: Addr, exc: BaseException, transport: str) -> None:
        self.errors.append((addr, str(exc)))

    def connection_in_use(self, addr: Addr) -> bool:
        return self.busy


async def test_framing_splits_a_stream_by_content_length() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(
        b"\r\n\r\nOPTIONS sip:a SIP/2.0\r\nl: 3\r\n\r\nabcBYE sip:b SIP/2.0\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    reader.feed_eof()
    assert await read_framed_message(reader) == b"OPTIONS sip:a SIP/2.0\r\nl: 3\r\n\r\nabc"
    assert await read_framed_message(reader) == b"BYE sip:b SIP/2.0\r\nContent-Length: 0\r\n\r\n"
    assert await read_framed_message(reader) is None


async def test_idle_tcp_connection_is_closed_only_when_unused() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read()  # keep it open until the client closes

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    user = _User()
    user.busy = True
    tcp = TcpTransport(user, idle_timeout=0.2)
    try:
        tcp.send(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n", ("127.0.0.1", port))
        await asyncio.sleep(0.5)
        assert tcp.connections == 1  # idle, but a call still uses it
        user.busy = False
        for _ in range(50):
            if tcp.connections == 0:
                break
            await asyncio.sleep(0.05)
        assert tcp.connections == 0
        assert user.errors == []
    finally:
        await tcp.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_tcp_connect_refused_is_reported() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    user = _User()
    tcp = TcpTransport(user)
    try:
        tcp.send(b"x", ("127.0.0.1", port))
        for _ in range(50):
            if user.errors:
                break
            await asyncio.sleep(0.02)
        assert user.errors and user.errors[0][0] == ("127.0.0.1", port)
    finally:
        await tcp.close()


async def test_tls_to_a_server_that_does_not_speak_tls_is_a_transport_error() -> None:
    """A plain SIP-over-TCP server on the TLS port: the handshake fails, the error
    says why, and it counts as a handshake failure (RFC 3263 §4.3 fail-over)."""
    from ringcast.sip.tls import TlsTransport

    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(b"SIP/2.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(plain, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    user = _User()
    tls = TlsTransport(user)
    try:
        tls.send(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n", ("127.0.0.1", port))
        for _ in range(100):
            if user.errors:
                break
            await asyncio.sleep(0.02)
        assert user.errors and user.errors[0][0] == ("127.0.0.1", port)
        assert user.errors[0][1].startswith("TLS handshake failed: "), user.errors
        assert tls.handshake_failures == 1 and user.packets == []
    finally:
        await tls.close()
        server.close()
        await server.wait_closed()


async def test_an_icmp_error_is_blamed_on_its_own_destination() -> None:
    """With IP_RECVERR, Linux reports an earlier datagram's ICMP error on the next send,
    whatever its destination, and that send goes nowhere. A stranger's closed port (a
    flood's answers to Via port 9) must neither fail nor swallow the datagram to a
    live peer (seen: a call's INVITE failed with 503 during a flood)."""
    from ringcast.sip.transport import UdpTransport

    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    dead = closed.getsockname()
    closed.close()  # nobody listens there: the kernel answers with port unreachable
    live = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    live.bind(("127.0.0.1", 0))
    live.settimeout(2)
    user = _User()
    udp = UdpTransport(user)
    await udp.start("127.0.0.1", 0)
    try:
        peer = (live.getsockname()[0], live.getsockname()[1])
        for i in range(3):
            udp.send(b"to the closed port", (dead[0], dead[1]))
            udp.send(b"to the live peer %d" % i, peer)
        got = sorted(live.recv(100) for _ in range(3))
        await asyncio.sleep(0.1)  # the last ICMP error is read from the error queue
    finally:
        await udp.close()
        live.close()
    assert got == [b"to the live peer 0", b"to the live peer 1", b"to the live peer 2"]
    assert {addr for addr, _ in user.errors} == {(dead[0], dead[1])}, user.errors
    assert all("refused" in why for _, why in user.errors), user.errors
