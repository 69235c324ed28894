"""RFC 3261 §17.1 client transactions without sockets: feed events, compare actions."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiosipua.message import SipMessage, SipRequest, SipResponse

from ringcast.sip.transaction import (
    Action,
    Deliver,
    InviteClientTransaction,
    InviteState,
    NonInviteClientTransaction,
    NonInviteState,
    Send,
    StartTimer,
    StopTimer,
    SyntheticResponse,
    Terminate,
    TimerName,
    Timers,
    build_non2xx_ack,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "sip"
TIMERS = Timers(t1=0.5, t2=4.0, t4=5.0)


def load(name: str) -> SipRequest | SipResponse:
    return SipMessage.parse((DATA / name).read_bytes())


def invite() -> SipRequest:
    msg = load("ringcast_invite.sip")
    assert isinstance(msg, SipRequest)
    return msg


def response(name: str) -> SipResponse:
    msg = load(name)
    assert isinstance(msg, SipResponse)
    return msg


def timers_started(actions: list[Action]) -> list[tuple[TimerName, float]]:
    return [(a.timer, a.delay) for a in actions if isinstance(a, StartTimer)]


def delivered(actions: list[Action]) -> list[SipResponse]:
    return [a.response for a in actions if isinstance(a, Deliver)]


def sends(actions: list[Action]) -> list[bytes]:
    return [a.data for a in actions if isinstance(a, Send)]


def test_timers_derive_from_t1() -> None:
    assert TIMERS.b == 32.0
    assert Timers(t1=0.1).b == pytest.approx(6.4)
    assert Timers(t1=0.1).d == 32.0  # Timer D is at least 32 s over UDP


def test_invite_start_over_udp_arms_a_and_b() -> None:
    txn = InviteClientTransaction(invite(), reliable=False, timers=TIMERS)
    actions = txn.start()
    (wire,) = sends(actions)
    assert wire.startswith(b"INVITE sip:alice@127.0.0.1:")
    assert timers_started(actions) == [(TimerName.A, 0.5), (TimerName.B, 32.0)]
    assert txn.state is InviteState.CALLING


def test_invite_over_tcp_has_no_timer_a() -> None:
    txn = InviteClientTransaction(invite(), reliable=True, timers=TIMERS)
    assert timers_started(txn.start()) == [(TimerName.B, 32.0)]


def test_timer_a_doubles_without_t2_cap() -> None:
    txn = InviteClientTransaction(invite(), reliable=False, timers=TIMERS)
    wire = sends(txn.start())[0]
    delays = []
    for _ in range(6):
        actions = txn.on_timer(TimerName.A)
        assert sends(actions) == [wire]  # the same bytes again
        delays.append(timers_started(actions)[0][1])
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]


def test_timer_b_is_a_synthetic_408() -> None:
    txn = InviteClientTransaction(invite(), reliable=False, timers=TIMERS)
    txn.start()
    actions = txn.on_timer(TimerName.B)
    (resp,) = delivered(actions)
    assert isinstance(resp, SyntheticResponse)
    assert (resp.status_code, resp.reason_phrase) == (408, "Request Timeout")
    assert resp.detail == "Timer B"
    assert resp.call_id == invite().call_id and resp.cseq is not None
    assert isinstance(actions[-1], Terminate)
    assert txn.state is InviteState.TERMINATED
    assert txn.on_timer(TimerName.A) == []  # late timers do nothing


def test_transport_error_is_a_synthetic_503() -> None:
    txn = InviteClientTransaction(invite(), reliable=True, timers=TIMERS)
    txn.start()
    (resp,) = delivered(txn.on_transport_error("connection refused"))
    assert resp.status_code == 503 and resp.reason_phrase == "Service Unavailable"
    assert txn.terminated


def test_provisional_stops_retransmission_and_timer_b() -> None:
    txn = InviteClientTransaction(invite(), reliable=False, timers=TIMERS)
    txn.start()
    actions = txn.on_response(response("sipp_180_ringing.sip"))
    assert StopTimer(TimerName.A) in actions and StopTimer(TimerName.B) in actions
    assert [r.status_code for r in delivered(actions)] == [180]
    assert txn.state is InviteState.PROCEEDING
    assert txn.on_timer(TimerName.A) == [] and txn.on_timer(TimerName.B) == []


def test_2xx_enters_accepted_and_passes_retransmissions_up() -> None:
    txn = InviteClientTransaction(invite(), reliable=False, timers=TIMERS)
    txn.start()
    ok = response("sipp_200_ok_sdp.sip")
    actions = txn.on_response(ok)
    assert [r.status_code for r in delivered(actions)] == [200]
    assert sends(actions) == []  # the 2xx ACK is the TU's, not the transaction's
    assert (TimerName.M, 32.0) in timers_started(actions)
    assert txn.state is InviteState.ACCEPTED
    again = txn.on_response(ok)
    assert delivered(again) == [ok]  # TU re-sends its ACK (§13.2.2.4)
    assert txn.on_timer(TimerName.M) == [Terminate()]


def test_non_2xx_final_is_acked_by_the_transaction() -> None:
    req = invite()
    txn = InviteClientTransaction(req, reliable=False, timers=TIMERS)
    txn.start()
    busy = response("sipp_486_busy.sip")
    actions = txn.on_response(busy)
    (ack,) = sends(actions)
    parsed = SipMessage.parse(ack)
    assert isinstance(parsed, SipRequest) and parsed.method == "ACK"
    assert parsed.uri == req.uri
    assert parsed.headers.get("via") == req.headers.get("via")[:1]  # same branch
    assert parsed.headers.get_first("to") == busy.headers.get_first("to")  # with tag
    assert parsed.cseq is not None and parsed.cseq.seq == 1 and parsed.cseq.method == "ACK"
    assert [r.status_code for r in delivered(actions)] == [486]
    assert (TimerName.D, 32.0) in timers_started(actions)
    assert txn.state is InviteState.COMPLETED
    # A retransmitted 486 is ACKed again and not passed up.
    assert txn.on_response(busy) == [Send(ack)]
    assert txn.on_timer(TimerName.D) == [Terminate()]


def test_non_2xx_over_tcp_terminates_at_once() -> None:
    txn = InviteClientTransaction(invite(), reliable=True, timers=TIMERS)
    txn.start()
    actions = txn.on_response(response("sipp_486_busy.sip"))
    assert isinstance(actions[-1], Terminate) and txn.terminated


def test_give_up_after_cancel() -> None:
    txn = InviteClientTransaction(invite(), reliable=False, timers=TIMERS)
    txn.start()
    txn.on_response(response("sipp_180_ringing.sip"))
    (resp,) = delivered(txn.give_up())
    assert resp.status_code == 408 and txn.terminated


def test_build_non2xx_ack_copies_route() -> None:
    req = invite()
    req.headers.append("Route", "<sip:proxy.example;lr>")
    ack = build_non2xx_ack(req, response("sipp_486_busy.sip"))
    assert ack.headers.get("route") == ["<sip:proxy.example;lr>"]
    assert bytes(ack).endswith(b"Content-Length: 0\r\n\r\n")


def bye() -> SipRequest:
    msg = load("ringcast_bye.sip")
    assert isinstance(msg, SipRequest)
    return msg


def test_timer_e_doubles_up_to_t2_then_stays() -> None:
    txn = NonInviteClientTransaction(bye(), reliable=False, timers=TIMERS)
    assert timers_started(txn.start()) == [(TimerName.E, 0.5), (TimerName.F, 32.0)]
    delays = [timers_started(txn.on_timer(TimerName.E))[0][1] for _ in range(5)]
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0]


def test_timer_e_in_proceeding_uses_t2() -> None:
    txn = NonInviteClientTransaction(bye(), reliable=False, timers=TIMERS)
    txn.start()
    trying = SipResponse(status_code=100, reason_phrase="Trying", headers=bye().headers.copy())
    assert [r.status_code for r in delivered(txn.on_response(trying))] == [100]
    assert txn.state is NonInviteState.PROCEEDING
    assert timers_started(txn.on_timer(TimerName.E)) == [(TimerName.E, 4.0)]


def test_timer_f_is_a_synthetic_408() -> None:
    txn = NonInviteClientTransaction(bye(), reliable=False, timers=TIMERS)
    txn.start()
    (resp,) = delivered(txn.on_timer(TimerName.F))
    assert isinstance(resp, SyntheticResponse) and resp.status_code == 408
    assert resp.detail == "Timer F" and txn.terminated


def test_final_then_timer_k_absorbs_retransmissions() -> None:
    txn = NonInviteClientTransaction(bye(), reliable=False, timers=TIMERS)
    txn.start()
    ok = SipResponse(status_code=200, reason_phrase="OK", headers=bye().headers.copy())
    actions = txn.on_response(ok)
    assert delivered(actions) == [ok]
    assert (TimerName.K, 5.0) in timers_started(actions)  # T4 over UDP
    assert txn.state is NonInviteState.COMPLETED
    assert txn.on_response(ok) == []  # absorbed
    assert txn.on_timer(TimerName.E) == []
    assert txn.on_timer(TimerName.K) == [Terminate()]


def test_non_invite_over_tcp_has_no_timer_e_and_no_k() -> None:
    txn = NonInviteClientTransaction(bye(), reliable=True, timers=TIMERS)
    assert timers_started(txn.start()) == [(TimerName.F, 32.0)]
    ok = SipResponse(status_code=200, reason_phrase="OK", headers=bye().headers.copy())
    assert isinstance(txn.on_response(ok)[-1], Terminate)
