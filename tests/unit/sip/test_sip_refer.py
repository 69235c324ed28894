"""REFER (RFC 3515) and its NOTIFY sipfrag states: the pure machine, fed events."""

from __future__ import annotations

import pytest

from ringcast.sip.refer import (
    NotifyReply,
    ReferClient,
    ReferState,
    parse_sipfrag,
    subscription_terminated,
    transfer_result,
)

FRAG = "message/sipfrag;version=2.0"


def test_parse_sipfrag() -> None:
    assert parse_sipfrag(b"SIP/2.0 200 OK\r\n") == (200, "OK")
    assert parse_sipfrag(b"SIP/2.0 100 Trying") == (100, "Trying")
    assert parse_sipfrag(b"SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n") == (486, "Busy Here")
    assert parse_sipfrag(b"INVITE sip:x SIP/2.0\r\n") is None
    assert parse_sipfrag(b"") is None
    assert subscription_terminated("terminated;reason=noresource")
    assert not subscription_terminated("active;expires=60")
    assert not subscription_terminated(None)


def test_accepted_then_trying_then_ok() -> None:
    m = ReferClient()
    m.on_response(202, "Accepted")
    assert m.state is ReferState.ACCEPTED
    reply = m.on_notify("refer", "active;expires=60", FRAG, b"SIP/2.0 100 Trying\r\n")
    assert (reply, m.state) == (NotifyReply(200, False), ReferState.ACCEPTED)
    reply = m.on_notify("refer", "terminated;reason=noresource", FRAG, b"SIP/2.0 200 OK\r\n")
    assert (reply, m.state, m.status) == (NotifyReply(200, True), ReferState.SUCCEEDED, 200)
    assert transfer_result(m.state, m.status) == "answered"
    # a retransmitted final NOTIFY is answered again, nothing changes
    assert m.on_notify("refer", None, FRAG, b"SIP/2.0 500 x") == NotifyReply(200, True)
    assert m.state is ReferState.SUCCEEDED


@pytest.mark.parametrize(
    ("frag", "result"),
    [(b"SIP/2.0 486 Busy Here", "busy"), (b"SIP/2.0 408 Timeout", "no-answer"),
     (b"SIP/2.0 503 Unavailable", "failed")],
)  # fmt: skip
def test_a_failing_sipfrag_fails(frag: bytes, result: str) -> None:
    m = ReferClient()
    m.on_response(202)
    assert m.on_notify("refer", "terminated", FRAG, frag).done
    assert m.state is ReferState.FAILED
    assert transfer_result(m.state, m.status) == result


def test_a_refused_refer() -> None:
    m = ReferClient()
    m.on_response(100)
    assert m.state is ReferState.SENT
    m.on_response(603, "Decline")
    assert (m.state, m.status, m.reason) == (ReferState.REFUSED, 603, "Decline")
    assert transfer_result(m.state, m.status) == "failed"


def test_notify_before_the_202_and_odd_notifies() -> None:
    m = ReferClient()
    assert m.on_notify("presence", None, FRAG, b"SIP/2.0 200 OK") == NotifyReply(489, False)
    assert m.state is ReferState.SENT
    assert m.on_notify("refer;id=1", "active", FRAG, b"garbage") == NotifyReply(400, False)
    assert m.state is ReferState.ACCEPTED  # a NOTIFY for the REFER came: it was accepted
    reply = m.on_notify("refer", "terminated;reason=timeout", "text/plain", b"")
    assert (reply.done, m.state) == (True, ReferState.FAILED)


def test_no_final_notify_times_out() -> None:
    m = ReferClient()
    m.on_response(202)
    m.on_timeout()
    assert (m.state, m.reason) == (ReferState.FAILED, "no final NOTIFY")
    assert transfer_result(m.state, m.status) == "failed"
