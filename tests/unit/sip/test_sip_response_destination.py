"""Where responses to requests we receive go (RFC 3261 §18.2.2, RFC 3581 §4)."""

from __future__ import annotations

import pytest

from ringcast.sip.message import Destination, response_destination

SOURCE = ("127.0.0.1", 40123)


@pytest.mark.parametrize(
    ("via", "expected"),
    [
        ("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa", ("127.0.0.1", 5070)),
        ("SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKa", ("127.0.0.1", 5060)),  # default port
        ("SIP/2.0/UDP localhost:5070;branch=z9hG4bKa", ("127.0.0.1", 5070)),  # received = source
        ("SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bKa", SOURCE),
        ("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa;rport", SOURCE),
        ("SIP/2.0/UDP 127.0.0.1:5070;received=127.0.0.1;rport=40123;branch=z", SOURCE),
        # maddr is not followed: always the source IP (no answers aimed at a third party)
        ("SIP/2.0/UDP localhost:5070;maddr=127.0.0.2;branch=z9hG4bKa", ("127.0.0.1", 5070)),
        ("SIP/2.0/UDP localhost;maddr=127.0.0.2;rport;branch=z9hG4bKa", SOURCE),
        ("SIP/2.0/UDP localhost:5070;maddr=localhost;branch=z", ("127.0.0.1", 5070)),
        (
            "SIP/2.0/UDP 127.0.0.1:5070;branch=z1, SIP/2.0/UDP 127.0.0.1:5080;rport",
            ("127.0.0.1", 5070),
        ),
        ("SIP/2.0/UDP 127.0.0.1:99999;branch=z", ("127.0.0.1", 5060)),
    ],
)
def test_udp_response_destination(via: str, expected: tuple[str, int]) -> None:
    assert response_destination(via, SOURCE, "udp") == Destination(*expected, "udp")


def test_tcp_response_uses_the_connection() -> None:
    via = "SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bKa"
    assert response_destination(via, SOURCE, "tcp") == Destination(*SOURCE, "tcp")
