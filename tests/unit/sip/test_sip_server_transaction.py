"""RFC 3261 §17.2 server transactions without sockets: feed events, compare actions.

Each case is a script of events and the exact actions every event must return.
Events: ("respond", status), ("request",) for a retransmitted request, ("ack",),
("timer", name), ("error",) for a transport error.
"""

from __future__ import annotations

import pytest

from ringcast.sip.transaction import (
    Action,
    InviteServerState,
    InviteServerTransaction,
    NoAck,
    NonInviteServerState,
    NonInviteServerTransaction,
    Send,
    StartTimer,
    StopTimer,
    Terminate,
    TimerName,
    Timers,
)

TIMERS = Timers(t1=0.5, t2=4.0, t4=5.0)
G, H, I, J, L = TimerName.G, TimerName.H, TimerName.I, TimerName.J, TimerName.L  # noqa: E741


def wire(status: int) -> bytes:
    return f"SIP/2.0 {status} X\r\n\r\n".encode()


Event = tuple[object, ...]
Step = tuple[Event, list[Action]]


def run(txn: InviteServerTransaction | NonInviteServerTransaction, steps: list[Step]) -> None:
    for n, (event, expected) in enumerate(steps):
        kind = event[0]
        if kind == "respond":
            status = int(str(event[1]))
            got = txn.respond(wire(status), status)
        elif kind == "request":
            got = txn.on_request()
        elif kind == "ack":
            assert isinstance(txn, InviteServerTransaction)
            got = txn.on_ack()
        elif kind == "timer":
            assert isinstance(event[1], TimerName)
            got = txn.on_timer(event[1])
        elif kind == "error":
            got = txn.on_transport_error()
        else:
            raise AssertionError(kind)
        assert got == expected, f"step {n}: {event}"


INVITE_CASES: dict[str, tuple[bool, list[Step], InviteServerState]] = {
    "non-2xx over UDP: G doubles to T2, the ACK confirms, I ends it": (
        False,
        [
            (("request",), []),  # nothing sent yet: absorbed
            (("respond", 180), [Send(wire(180))]),
            (("respond", 488), [Send(wire(488)), StartTimer(G, 0.5), StartTimer(H, 32.0)]),
            (("request",), [Send(wire(488))]),  # retransmitted INVITE: the final again
            (("timer", G), [Send(wire(488)), StartTimer(G, 1.0)]),
            (("timer", G), [Send(wire(488)), StartTimer(G, 2.0)]),
            (("timer", G), [Send(wire(488)), StartTimer(G, 4.0)]),
            (("timer", G), [Send(wire(488)), StartTimer(G, 4.0)]),  # capped at T2
            (("respond", 500), []),  # one final per transaction
            (("ack",), [StopTimer(G), StopTimer(H), StartTimer(I, 5.0)]),
            (("ack",), []),  # a retransmitted ACK is absorbed in Confirmed
            (("request",), []),
            (("timer", G), []),  # a late firing does nothing
            (("timer", I), [Terminate()]),
        ],
        InviteServerState.TERMINATED,
    ),
    "non-2xx over UDP never ACKed: Timer H gives up": (
        False,
        [
            (("respond", 491), [Send(wire(491)), StartTimer(G, 0.5), StartTimer(H, 32.0)]),
            (("timer", H), [StopTimer(G), NoAck(H), Terminate()]),
            (("request",), []),  # over: the owner has forgotten it anyway
            (("timer", G), []),
        ],
        InviteServerState.TERMINATED,
    ),
    "non-2xx over TCP: no Timer G, the ACK ends it at once": (
        True,
        [
            (("respond", 488), [Send(wire(488)), StartTimer(H, 32.0)]),
            (("ack",), [StopTimer(G), StopTimer(H), Terminate()]),
        ],
        InviteServerState.TERMINATED,
    ),
    "2xx over UDP: re-sent on G's schedule until the ACK, L ends it": (
        False,
        [
            (("respond", 200), [Send(wire(200)), StartTimer(G, 0.5), StartTimer(L, 32.0)]),
            (("request",), []),  # RFC 6026 §7.1: INVITE retransmissions absorbed
            (("timer", G), [Send(wire(200)), StartTimer(G, 1.0)]),
            (("ack",), [StopTimer(G)]),
            (("ack",), []),
            (("timer", G), []),
            (("request",), []),
            (("timer", L), [Terminate()]),
        ],
        InviteServerState.TERMINATED,
    ),
    "2xx over UDP never ACKed: re-sent until Timer L, which reports it": (
        False,
        [
            (("respond", 200), [Send(wire(200)), StartTimer(G, 0.5), StartTimer(L, 32.0)]),
            (("timer", G), [Send(wire(200)), StartTimer(G, 1.0)]),
            (("timer", G), [Send(wire(200)), StartTimer(G, 2.0)]),
            (("timer", L), [StopTimer(G), NoAck(L), Terminate()]),
        ],
        InviteServerState.TERMINATED,
    ),
    "2xx over TCP: no retransmission, Accepted until L": (
        True,
        [
            (("respond", 200), [Send(wire(200)), StartTimer(L, 32.0)]),
            (("ack",), [StopTimer(G)]),
            (("timer", L), [Terminate()]),
        ],
        InviteServerState.TERMINATED,
    ),
    "transport error ends it": (
        False,
        [
            (("respond", 200), [Send(wire(200)), StartTimer(G, 0.5), StartTimer(L, 32.0)]),
            (("error",), [StopTimer(G), Terminate()]),
            (("error",), []),
        ],
        InviteServerState.TERMINATED,
    ),
    "still waiting for the TU": (
        False,
        [(("request",), []), (("ack",), []), (("timer", H), [])],
        InviteServerState.PROCEEDING,
    ),
}


@pytest.mark.parametrize("case", list(INVITE_CASES))
def test_invite_server_transaction(case: str) -> None:
    reliable, steps, final_state = INVITE_CASES[case]
    txn = InviteServerTransaction(reliable=reliable, timers=TIMERS, key="z9hG4bKx:INVITE")
    run(txn, steps)
    assert txn.state is final_state
    assert txn.terminated is (final_state is InviteServerState.TERMINATED)


NON_INVITE_CASES: dict[str, tuple[bool, list[Step], NonInviteServerState]] = {
    "final over UDP: retransmissions answered until Timer J": (
        False,
        [
            (("request",), []),  # Trying: nothing to re-send
            (("respond", 200), [Send(wire(200)), StartTimer(J, 32.0)]),
            (("request",), [Send(wire(200))]),
            (("request",), [Send(wire(200))]),
            (("respond", 500), []),
            (("timer", J), [Terminate()]),
            (("timer", J), []),
        ],
        NonInviteServerState.TERMINATED,
    ),
    "provisional then final": (
        False,
        [
            (("respond", 100), [Send(wire(100))]),
            (("request",), [Send(wire(100))]),
            (("respond", 481), [Send(wire(481)), StartTimer(J, 32.0)]),
            (("request",), [Send(wire(481))]),
        ],
        NonInviteServerState.COMPLETED,
    ),
    "final over TCP: Timer J is zero, so it ends at once": (
        True,
        [(("respond", 200), [Send(wire(200)), Terminate()]), (("request",), [])],
        NonInviteServerState.TERMINATED,
    ),
    "transport error ends it": (
        False,
        [(("error",), [Terminate()]), (("respond", 200), []), (("error",), [])],
        NonInviteServerState.TERMINATED,
    ),
}


@pytest.mark.parametrize("case", list(NON_INVITE_CASES))
def test_non_invite_server_transaction(case: str) -> None:
    reliable, steps, final_state = NON_INVITE_CASES[case]
    txn = NonInviteServerTransaction(reliable=reliable, timers=TIMERS, key="z9hG4bKy:BYE")
    run(txn, steps)
    assert txn.state is final_state


def test_server_timers_derive_from_t1_and_t4() -> None:
    timers = Timers(t1=0.05, t2=0.4, t4=0.6)
    txn = InviteServerTransaction(reliable=False, timers=timers)
    assert txn.respond(wire(503), 503) == [
        Send(wire(503)),
        StartTimer(G, 0.05),
        StartTimer(H, 64 * 0.05),
    ]
    assert txn.on_ack() == [StopTimer(G), StopTimer(H), StartTimer(I, 0.6)]
