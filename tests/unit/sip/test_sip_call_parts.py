"""Pure helpers of the call's parts, without sockets."""

from __future__ import annotations

import pytest
from aiosipua.message import SipMessage, SipResponse

from ringcast.sip.call_refresh import session_expires_header


def response(*headers: str) -> SipResponse:
    raw = (
        "SIP/2.0 200 OK\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKp1\r\n"
        "From: <sip:me@127.0.0.1>;tag=a\r\n"
        "To: <sip:bob@127.0.0.1>;tag=b\r\n"
        "Call-ID: c1@ringcast\r\n"
        "CSeq: 1 INVITE\r\n" + "".join(f"{h}\r\n" for h in headers) + "Content-Length: 0\r\n\r\n"
    )
    msg = SipMessage.parse(raw.encode())
    assert isinstance(msg, SipResponse)
    return msg


@pytest.mark.parametrize(
    ("headers", "value"),
    [
        (("Session-Expires: 1800;refresher=uac",), "1800;refresher=uac"),
        (("x: 90;refresher=uas",), "90;refresher=uas"),  # the compact form (RFC 4028 §4)
        (("session-expires: 120",), "120"),
        ((), None),
        (("Min-SE: 90",), None),
    ],
)
def test_session_expires_header(headers: tuple[str, ...], value: str | None) -> None:
    assert session_expires_header(response(*headers)) == value
