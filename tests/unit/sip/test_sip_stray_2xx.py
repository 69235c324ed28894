"""What answers a 2xx after its INVITE transaction ended (RFC 3261 §13.2.2.4):
the decision both a live call and an ended call's remains apply."""

from __future__ import annotations

import pytest
from aiosipua.message import SipMessage, SipResponse

from ringcast.sip.message import Destination
from ringcast.sip.stray_2xx import FORK, resend_for

WHERE = Destination("127.0.0.1", 5070)
ACK_1 = (b"ACK initial", WHERE)
ACK_3 = (b"ACK refresh 3", WHERE)
FORK_ACK = (b"ACK fork b", WHERE)


def ok(tag: str | None, seq: int) -> SipResponse:
    to = "<sip:bob@127.0.0.1>" + (f";tag={tag}" if tag else "")
    raw = (
        "SIP/2.0 200 OK\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
        "From: <sip:rc@127.0.0.1>;tag=ours\r\n"
        f"To: {to}\r\n"
        "Call-ID: c1@127.0.0.1\r\n"
        f"CSeq: {seq} INVITE\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    response = SipMessage.parse(raw.encode())
    assert isinstance(response, SipResponse)
    return response


@pytest.mark.parametrize(
    ("response", "remote_tag", "ack", "expected"),
    [
        (ok("a", 1), "a", ACK_1, ACK_1),  # our 2xx again: the same ACK
        (ok("a", 1), "a", None, None),  # no ACK sent yet: nothing to resend
        (ok("a", 3), "a", ACK_1, ACK_3),  # a late 2xx to re-INVITE 3: its own ACK
        (ok("a", 7), "a", ACK_1, None),  # an INVITE we never sent: no other ACK instead
        (ok("b", 1), "a", ACK_1, FORK_ACK),  # a fork already ACKed: only its ACK again
        (ok("c", 1), "a", ACK_1, FORK),  # a new fork: ACK and BYE it
        (ok("a", 1), None, None, FORK),  # no dialog confirmed: any 2xx is a fork
        (ok(None, 1), "a", ACK_1, FORK),  # no To tag is not our dialog
    ],
)
def test_what_a_stray_2xx_gets(
    response: SipResponse,
    remote_tag: str | None,
    ack: tuple[bytes, Destination] | None,
    expected: object,
) -> None:
    got = resend_for(
        response,
        remote_tag=remote_tag,
        initial_seq=1,
        ack=ack,
        reinvite_acks={3: ACK_3},
        forks={"b": FORK_ACK},
    )
    assert got == expected
