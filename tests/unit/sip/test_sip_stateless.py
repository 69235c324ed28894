"""Stateless answers to strangers (RFC 3261 §8.2.7), without sockets: request in, bytes out."""

from __future__ import annotations

import pytest
from aiosipua.message import SipMessage, SipRequest

from ringcast.sip.message import build_response
from ringcast.sip.stateless import StatelessResponder


def request(
    method: str, *, to_tag: str = "", branch: str = "z9hG4bKs1", from_tag: str = "a"
) -> SipRequest:
    to = "<sip:ringcast@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    msg = SipMessage.parse(
        (
            f"{method} sip:ringcast@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.9:5060;branch={branch}\r\n"
            "Via: SIP/2.0/UDP 192.0.2.8:5060;branch=z9hG4bKproxy\r\n"
            f'From: "Scan" <sip:scan@192.0.2.9>;tag={from_tag}\r\n'
            f"To: {to}\r\n"
            "Call-ID: stranger@192.0.2.9\r\n"
            f"CSeq: 7 {method}\r\n"
            "User-Agent: friendly-scanner\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(msg, SipRequest)
    return msg


@pytest.mark.parametrize(
    ("method", "to_tag", "status", "extra", "tagged"),
    [
        ("OPTIONS", "", 200, ["Allow", "Accept"], True),
        ("INVITE", "", 403, [], True),
        ("REGISTER", "", 405, ["Allow"], True),
        ("SUBSCRIBE", "", 405, ["Allow"], True),
        ("REFER", "", 603, [], True),  # REFER is in our Allow: declined, never 405
        ("BYE", "", 481, [], True),
        ("CANCEL", "", 481, [], True),
        ("INFO", "theirs", 481, [], False),  # names a dialog we do not have: its tag kept
        ("BYE", "theirs", 481, [], False),
    ],
)
def test_answers(method: str, to_tag: str, status: int, extra: list[str], tagged: bool) -> None:
    responder = StatelessResponder(secret=b"k" * 16)
    req = request(method, to_tag=to_tag)
    answer = responder.answer(req)
    assert answer is not None
    msg = SipMessage.parse(answer)
    assert msg.status_code == status  # type: ignore[attr-defined]
    names = [name.lower() for name, _ in msg.headers.items()]
    assert names == [
        "via",
        "from",
        "to",
        "call-id",
        "cseq",
        *[e.lower() for e in extra],
        "content-length",
    ]
    assert msg.headers.get("via") == req.headers.get("via")  # both, in order
    to = msg.to_addr
    assert to is not None
    assert to.tag == (responder.to_tag(req) if tagged else to_tag)
    assert responder.answered == 1


def test_same_bytes_as_a_built_response() -> None:
    """Written straight to bytes, yet what build_response would have serialized."""
    responder = StatelessResponder(secret=b"k" * 16)
    req = request("OPTIONS")
    built = build_response(
        req,
        200,
        to_tag=responder.to_tag(req),
        headers={
            "Allow": "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY, REFER",
            "Accept": "application/sdp",
        },
    )
    assert responder.answer(req) == bytes(built)


def test_a_retransmission_gets_the_same_tag_and_another_request_another() -> None:
    responder = StatelessResponder()
    first = responder.answer(request("OPTIONS"))
    assert first is not None and responder.answer(request("OPTIONS")) == first
    assert responder.to_tag(request("OPTIONS", branch="z9hG4bKs2")) != responder.to_tag(
        request("OPTIONS")
    )
    assert responder.to_tag(request("OPTIONS", from_tag="b")) != responder.to_tag(
        request("OPTIONS")
    )
    # another process (another secret) picks other tags: nothing to guess from outside
    assert StatelessResponder().to_tag(request("OPTIONS")) != responder.to_tag(request("OPTIONS"))


@pytest.mark.parametrize(("server", "header"), [(None, None), ("ringcast/0.1", "ringcast/0.1")])
def test_product_name_only_when_asked(server: str | None, header: str | None) -> None:
    answer = StatelessResponder(server=server).answer(request("OPTIONS"))
    assert answer is not None
    msg = SipMessage.parse(answer)
    assert msg.headers.get_first("server") == header
    assert msg.headers.get_first("user-agent") is None


def test_no_answer_to_ack_nor_to_invite_when_silent() -> None:
    responder = StatelessResponder(silent_invites=True)
    assert responder.answer(request("ACK")) is None
    assert responder.answer(request("INVITE")) is None
    assert responder.answered == 0
