"""Starting the SIP endpoint with TCP needs one port free for both UDP and TCP."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from ringcast.sip import SipEndpoint
from ringcast.sip.transport import UdpTransport


@pytest.fixture
def tcp_taken() -> Iterator[int]:
    """A TCP listener on 127.0.0.1 holding a port (its UDP twin stays free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_a_port_asked_for_that_tcp_cannot_have_fails_and_frees_udp(tcp_taken: int) -> None:
    ep = SipEndpoint(host="127.0.0.1", port=tcp_taken, transport="tcp")
    with pytest.raises(OSError):
        await ep.start()
    assert udp_free(tcp_taken)  # the UDP socket of the failed start was closed


async def test_a_picked_port_that_tcp_cannot_have_is_replaced(
    tcp_taken: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first free UDP port the endpoint gets is one whose TCP twin is taken
    (forced here; by chance otherwise): it tries another, for both transports."""
    real_start = UdpTransport.start
    ports: list[int] = []

    async def first_the_taken_port(self: UdpTransport, host: str, port: int) -> None:
        await real_start(self, host, tcp_taken if not ports else port)
        ports.append(self.local_addr[1])

    monkeypatch.setattr(UdpTransport, "start", first_the_taken_port)
    ep = SipEndpoint(host="127.0.0.1", port=0, transport="tcp")
    await ep.start()
    try:
        # the next pick may be taken by chance too (another test process): then a third
        assert ports[0] == tcp_taken and len(ports) >= 2
        assert ep.local_port == ports[-1] != tcp_taken
        assert udp_free(tcp_taken)
        with socket.create_connection(("127.0.0.1", ep.local_port), timeout=2):
            pass  # TCP listens on the port the endpoint reports
    finally:
        await ep.close(grace=0)
