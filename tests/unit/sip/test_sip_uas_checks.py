"""RFC 3261 §8.2 refusals, as a table: no sockets."""

from __future__ import annotations

import pytest
from aiosipua.message import SipMessage, SipRequest

from ringcast.sip.uas_checks import Refusal, refusal, request_version


def request(first: str, *headers: str, cseq: str | None = None) -> SipRequest:
    method = first.split()[0]
    lines = [
        first,
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1",
        "From: <sip:a@127.0.0.1>;tag=1",
        "To: <sip:b@127.0.0.1>",
        "Call-ID: c@127.0.0.1",
        f"CSeq: {cseq or '1 ' + method}",
        *headers,
        "Content-Length: 0",
    ]
    msg = SipMessage.parse(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, SipRequest)
    return msg


@pytest.mark.parametrize(
    ("first", "headers", "cseq", "version", "expected"),
    [
        ("OPTIONS sip:b@127.0.0.1 SIP/2.0", (), None, "SIP/2.0", None),
        ("OPTIONS sip:b@127.0.0.1 SIP/2.0", (), None, "SIP/7.0", Refusal(505)),
        ("OPTIONS sip:b@127.0.0.1 SIP/2.0", (), "8 INVITE", "SIP/2.0", Refusal(400)),
        ("OPTIONS sip:b@127.0.0.1 SIP/2.0", ("Content-Length: 4",), None, "SIP/2.0", Refusal(400)),
        ("INVITE <sip:b@127.0.0.1> SIP/2.0", (), None, "SIP/2.0", Refusal(400)),
        ("FOO sip:b@127.0.0.1 SIP/2.0", (), None, "SIP/2.0", Refusal(501)),
        ("REGISTER sip:127.0.0.1 SIP/2.0", (), None, "SIP/2.0", None),  # the caller's 405
        ("OPTIONS nobodyKnowsThisScheme:x SIP/2.0", (), None, "SIP/2.0", Refusal(416)),
        ("OPTIONS tel:+15550100001 SIP/2.0", (), None, "SIP/2.0", None),
        ("OPTIONS sips:b@127.0.0.1 SIP/2.0", (), None, "SIP/2.0", None),
        (
            "OPTIONS sip:b@127.0.0.1 SIP/2.0",
            ("Require: timer, nothingSupported",),
            None,
            "SIP/2.0",
            Refusal(420, (("Unsupported", "nothingSupported"),)),
        ),
        ("OPTIONS sip:b@127.0.0.1 SIP/2.0", ("Require: timer",), None, "SIP/2.0", None),
        ("CANCEL sip:b@127.0.0.1 SIP/2.0", ("Require: foo",), None, "SIP/2.0", None),
        ("ACK sip:b@127.0.0.1 SIP/2.0", (), None, "SIP/9.9", None),  # never answered
    ],
)
def test_refusal(
    first: str, headers: tuple[str, ...], cseq: str | None, version: str, expected: Refusal | None
) -> None:
    assert refusal(request(first, *headers, cseq=cseq), version=version) == expected


@pytest.mark.parametrize(
    ("data", "version"),
    [
        (b"OPTIONS sip:x SIP/2.0\r\nVia: x\r\n", "SIP/2.0"),
        (b"OPTIONS sip:x sip/7.0\r\n", "SIP/7.0"),
        (b"OPTIONS sip:x SIP/2.0", "SIP/2.0"),
        (b"", ""),
    ],
)
def test_request_version(data: bytes, version: str) -> None:
    assert request_version(data) == version
