"""Property tests: nothing a peer sends breaks a transaction, the endpoint or a dialog.

(a) Arbitrary and mutated responses go to the pure client transactions (a fake
owner with a fake clock fires their timers) and to the endpoint's ``on_packet``
while a call is set up against a fake address (our sends are captured, T1 is
tiny): no exception escapes and every transaction terminates.
(b) Arbitrary and mutated in-dialog requests go to an established call: no
crash, and the call ends only through a request that matches its dialog
(Call-ID, our tag as To tag, the callee's tag as From tag, RFC 3261 §12.2.2).

Deterministic: ``derandomize=True``; nothing leaves the process.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from aiosipua.message import SipMessage, SipRequest, SipResponse
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ringcast.sip import CallSpec, MediaOffer, SipEndpoint
from ringcast.sip.call import OutboundCall
from ringcast.sip.message import Destination, new_branch, new_tag
from ringcast.sip.transaction import (
    Action,
    ClientTransaction,
    Deliver,
    InviteClientTransaction,
    InviteState,
    NonInviteClientTransaction,
    StartTimer,
    StopTimer,
    Terminate,
    TimerName,
    Timers,
)
from ringcast.sip.uac_logic import CallTimer

DATA = Path(__file__).resolve().parents[2] / "data" / "sip"
CAPTURED_RESPONSES = [
    (DATA / name).read_bytes()
    for name in (
        "sipp_180_ringing.sip",
        "sipp_183_early_pcma.sip",
        "sipp_200_ok_no_sdp.sip",
        "sipp_200_ok_sdp.sip",
        "sipp_407_sha256.sip",
        "sipp_486_busy.sip",
        "ringcast_200_to_reinvite.sip",
    )
]
SDP = (DATA / "sipp_200_ok_sdp.sip").read_bytes().split(b"\r\n\r\n", 1)[1]
PEER = ("127.0.0.1", 9)  # never contacted: every send is captured
T1 = 0.0005  # seconds: Timer B/F = 32 ms
PARSE_ERRORS = (ValueError, IndexError, KeyError, UnicodeError)  # what on_packet treats as garbage

FAST = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SLOW = settings(FAST, max_examples=60)  # each example runs an event loop with real timers


# --- strategies ---------------------------------------------------------------

tokens = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
    min_size=1,
    max_size=12,
)
junk = st.one_of(
    st.text(max_size=30).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.binary(max_size=30),
    st.sampled_from([b"", b" ", b";", b"<", b">", b";tag=", b"\x00", b"\r\n", b":", b"\xff\xfe"]),
)


def header_lines(raw: bytes) -> dict[str, bytes]:
    """The first value of each header in a captured message, by lower-case name."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    found: dict[str, bytes] = {}
    for line in head:
        name, _, value = line.partition(b":")
        found.setdefault(name.strip().lower().decode(), value.strip())
    return found


def retarget(capture: bytes, request: bytes) -> bytes:
    """A captured response rewritten to answer ``request`` (Via, From, To, Call-ID, CSeq)."""
    req = header_lines(request)
    head, _, body = capture.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    out = [lines[0]]
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        key = name.strip().lower().decode("latin-1")
        if key in ("via", "from", "call-id", "cseq"):
            line = name + b": " + req[key]
        elif key == "to":
            tag = re.search(rb";tag=[^;\s]+", value)
            line = b"To: " + req["to"] + (tag.group(0) if tag else b"")
        out.append(line)
    return b"\r\n".join(out) + b"\r\n\r\n" + body


@st.composite
def mutations(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with a few random byte and line edits."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(["set", "delete", "insert", "truncate", "drop-line", "dup-line"]))
        if not data:
            data += draw(st.binary(min_size=1, max_size=8))
            continue
        at = draw(st.integers(0, len(data) - 1))
        if op == "set":
            data[at] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "insert":
            data[at:at] = draw(junk)
        elif op == "truncate":
            del data[at:]
        else:
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            if op == "drop-line":
                del lines[i]
            else:
                lines.insert(i, lines[i])
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


def _choose(draw: st.DrawFn, right: bytes, wrong: bytes) -> bytes | None:
    """The right value mostly, else a wrong one, junk, or None (header left out)."""
    pick = draw(st.integers(0, 19))
    if pick < 16:
        return right
    if pick == 16:
        return wrong
    if pick < 19:
        return draw(junk)
    return None


def _assemble(draw: st.DrawFn, start: bytes, headers: list[tuple[bytes, bytes | None]]) -> bytes:
    lines = [start]
    for name, value in headers:
        if value is not None:
            lines.append(name + b": " + value)
    for _ in range(draw(st.integers(0, 3))):
        lines.append(draw(tokens).encode() + b": " + draw(junk))
    body = draw(st.one_of(st.just(b""), st.just(SDP), st.binary(max_size=200), mutations(SDP)))
    length = _choose(draw, str(len(body)).encode(), str(len(body) + 7).encode())
    if length is not None:
        lines.append(b"Content-Length: " + length)
    if body and draw(st.booleans()):
        lines.append(b"Content-Type: application/sdp")
    order = draw(st.permutations(lines[1:])) if draw(st.booleans()) else lines[1:]
    return b"\r\n".join([lines[0], *order]) + b"\r\n\r\n" + body


@st.composite
def responses_to(draw: st.DrawFn, request: bytes) -> bytes:
    """A response to ``request``: generated header by header, or a mutated capture."""
    if draw(st.integers(0, 3)) == 0:
        capture = retarget(draw(st.sampled_from(CAPTURED_RESPONSES)), request)
        return draw(st.one_of(st.just(capture), mutations(capture)))
    req = header_lines(request)
    status = draw(
        st.one_of(
            st.sampled_from([100, 180, 183, 200, 202, 302, 401, 407, 408, 486, 487, 500, 603]),
            st.integers(100, 699),
            st.integers(-10, 100_000),
        )
    )
    version = draw(st.sampled_from([b"SIP/2.0", b"SIP/2.0", b"SIP/3.0", b"sip/2.0"]))
    start = version + b" " + str(status).encode() + b" " + draw(tokens).encode()
    seq, _, method = req["cseq"].partition(b" ")
    wrong_cseq = draw(
        st.sampled_from(
            [
                seq + b" BYE",
                seq + b" OPTIONS",
                b"999 " + method,
                b"x " + method,
                b"1",
                b"-1 " + method,
            ]
        )
    )
    to_tag = b";tag=" + draw(tokens).encode() if draw(st.integers(0, 4)) else b""
    headers = [
        (
            b"Via",
            _choose(draw, req["via"], b"SIP/2.0/UDP 127.0.0.1:9;branch=" + new_branch().encode()),
        ),
        (b"From", _choose(draw, req["from"], b"<sip:x@127.0.0.1>;tag=other")),
        (b"To", _choose(draw, req["to"] + to_tag, req["to"] + b";tag=")),
        (b"Call-ID", _choose(draw, req["call-id"], b"other@127.0.0.1")),
        (b"CSeq", _choose(draw, req["cseq"], wrong_cseq)),
    ]
    if draw(st.booleans()):
        headers.append((b"Contact", _choose(draw, b"<sip:bob@127.0.0.1:9>", b"*")))
    if status in (401, 407) or draw(st.integers(0, 9)) == 0:
        name = b"WWW-Authenticate" if status == 401 else b"Proxy-Authenticate"
        headers.append(
            (name, _choose(draw, b'Digest realm="x", nonce="n", algorithm=MD5', b"Basic"))
        )
    if 300 <= status < 400:
        headers.append((b"Contact", _choose(draw, b"<sip:carol@127.0.0.1:9>", b"<sip:>")))
    return _assemble(draw, start, headers)


# --- (a) client transactions with a fake clock ----------------------------------


class FakeOwner:
    """Applies a transaction's actions like the endpoint does, on a fake clock."""

    def __init__(self, txn: ClientTransaction) -> None:
        self.txn = txn
        self.now = 0.0
        self.timers: dict[TimerName, float] = {}
        self.terminated = False
        self.finals = 0  # final responses (real or synthetic) delivered to the TU

    def apply(self, actions: list[Action]) -> None:
        assert not self.terminated or not actions, f"actions after Terminate: {actions}"
        for action in actions:
            if isinstance(action, StartTimer):
                assert action.delay >= 0
                self.timers[action.timer] = self.now + action.delay
            elif isinstance(action, StopTimer):
                self.timers.pop(action.timer, None)
            elif isinstance(action, Deliver):
                if action.response.status_code >= 200:
                    self.finals += 1
            elif isinstance(action, Terminate):
                self.terminated = True
                self.timers.clear()

    def fire_next(self) -> bool:
        if not self.timers:
            return False
        timer, at = min(self.timers.items(), key=lambda item: item[1])
        del self.timers[timer]
        self.now = max(self.now, at)
        self.apply(self.txn.on_timer(timer))
        return True


def _parse_response(data: bytes) -> SipResponse | None:
    try:
        msg = SipMessage.parse(data)
    except PARSE_ERRORS:
        return None  # the endpoint drops it as garbage before any transaction sees it
    return msg if isinstance(msg, SipResponse) else None


REQUESTS = {
    "INVITE": (DATA / "ringcast_invite.sip").read_bytes(),
    "BYE": (DATA / "ringcast_bye.sip").read_bytes(),
}


@FAST
@given(
    method=st.sampled_from(sorted(REQUESTS)),
    reliable=st.booleans(),
    data=st.data(),
)
def test_client_transactions_survive_any_response(
    method: str, reliable: bool, data: st.DataObject
) -> None:
    raw = REQUESTS[method]
    request = SipMessage.parse(raw)
    assert isinstance(request, SipRequest)
    timers = Timers(t1=0.5, t2=4.0, t4=5.0)
    txn: ClientTransaction
    if method == "INVITE":
        txn = InviteClientTransaction(request, reliable=reliable, timers=timers)
    else:
        txn = NonInviteClientTransaction(request, reliable=reliable, timers=timers)
    owner = FakeOwner(txn)
    owner.apply(txn.start())
    events = data.draw(st.lists(st.one_of(st.none(), responses_to(raw)), max_size=10))
    for item in events:
        if item is None:
            owner.fire_next()  # time passes up to the next timer
            continue
        response = _parse_response(item)
        if response is not None:
            owner.apply(txn.on_response(response))
    for _ in range(200):  # bounded: Timer A doubles, so B comes within ~7 firings
        if not owner.fire_next():
            break
    if not txn.terminated and isinstance(txn, InviteClientTransaction):
        # Proceeding has no timer of its own: the TU's CANCEL guard gives up (§9.1).
        assert txn.state is InviteState.PROCEEDING
        owner.apply(txn.give_up())
    event(f"{method} ended in {owner.now:g} s")
    assert txn.terminated and owner.terminated and not owner.timers
    assert owner.finals >= 1  # the TU always hears a final: real, or synthetic 408/503
    assert owner.now <= 64 * timers.t1 + max(timers.d, timers.t4, 64 * timers.t1)


# --- the endpoint with captured sends -------------------------------------------


class Harness:
    """An endpoint whose sends are captured, and errors anywhere are collected."""

    def __init__(self, ep: SipEndpoint) -> None:
        self.ep = ep
        self.sent: list[tuple[bytes, Destination]] = []
        self.errors: list[str] = []
        ep.send_raw = self._send  # type: ignore[method-assign]

    def _send(self, data: bytes, dest: Destination) -> None:
        self.sent.append((data, dest))

    def feed(self, data: bytes) -> None:
        self.ep.on_packet(data, PEER, "udp")  # must never raise

    def take(self, prefix: bytes) -> bytes:
        for data, _ in self.sent:
            if data.startswith(prefix):
                return data
        raise AssertionError(f"nothing sent starting with {prefix!r}")


class _ErrorLog(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(f"{record.name}: {record.getMessage()}")


def run_with_endpoint(scenario: Callable[[Harness], Coroutine[Any, Any, None]]) -> None:
    """Run ``scenario`` in a fresh loop with a started endpoint; fail on any logged error."""

    async def main() -> None:
        ep = SipEndpoint(host="127.0.0.1", port=0, t1=T1, t2=8 * T1, t4=10 * T1)
        await ep.start()
        harness = Harness(ep)
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: harness.errors.append(str(ctx)))
        handler = _ErrorLog(harness.errors)
        watched = [logging.getLogger("ringcast"), logging.getLogger("asyncio")]
        for lg in watched:
            lg.addHandler(handler)
        try:
            await scenario(harness)
        finally:
            await ep.close(grace=0.2)
            for lg in watched:
                lg.removeHandler(handler)
        assert harness.errors == []

    asyncio.run(main())


# call-id -> the task running its setup() (an OutboundCall has __slots__: no room on it)
SETUPS: dict[str, asyncio.Task[bool]] = {}


async def start_call(h: Harness, ring_timeout: float = 30.0) -> tuple[OutboundCall, bytes]:
    call = OutboundCall(
        h.ep,
        CallSpec(
            to=f"sip:bob@{PEER[0]}:{PEER[1]}",
            from_="me",
            media=MediaOffer("127.0.0.1", 40000),
            ring_timeout=ring_timeout,
        ),
    )
    SETUPS[call.call_id] = asyncio.create_task(call.setup(), name=f"fuzz-setup-{call.call_id}")
    for _ in range(20):
        await asyncio.sleep(0)
        if h.sent:
            break
    return call, h.take(b"INVITE ")


async def establish(h: Harness) -> OutboundCall:
    call, invite = await start_call(h)
    h.feed(retarget((DATA / "sipp_200_ok_sdp.sip").read_bytes(), invite))
    assert await asyncio.wait_for(SETUPS.pop(call.call_id), 1) is True
    assert call.dialog is not None
    return call


async def all_transactions_end(ep: SipEndpoint, within: float = 1.0) -> None:
    """Every client transaction terminates: Timer D (>= 32 s by RFC) is fired early."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    txns = ep.transactions._client  # noqa: SLF001 - the property is about the endpoint's own table
    while txns and loop.time() < deadline:
        for entry in list(txns.values()):
            handle = entry.handles.pop(TimerName.D, None)
            if handle is not None:
                handle.cancel()
                ep.transactions._fire(entry, TimerName.D)  # noqa: SLF001
        await asyncio.sleep(0.002)
    assert not txns, [(e.txn.key, e.txn.state, list(e.handles)) for e in txns.values()]


@SLOW
@given(data=st.data())
def test_endpoint_call_setup_survives_any_response(data: st.DataObject) -> None:
    async def scenario(h: Harness) -> None:
        call, invite = await start_call(h)
        packets = data.draw(st.lists(responses_to(invite), max_size=8))
        for packet in packets:
            h.feed(packet)
            if data.draw(st.booleans()):
                await asyncio.sleep(0)
        for _ in range(5):  # a redirect or digest retry runs in a spawned task: let it send
            await asyncio.sleep(0)
        # CANCEL (unanswered: Timer B, or 64*T1 after CANCEL) or BYE (Timer F) ends it.
        await asyncio.wait_for(call.hangup("fuzz"), 2)
        setup: asyncio.Task[bool] = SETUPS.pop(call.call_id)
        assert setup.done() and call.ended.is_set()
        event(f"INVITE final {call.status_code}")
        await all_transactions_end(h.ep)

    run_with_endpoint(scenario)


def test_ring_timeout_between_redirect_and_new_invite_ends_the_call() -> None:
    """Found by the property above: the 302 and the ring timer fall in one loop iteration."""

    async def scenario(h: Harness) -> None:
        call, invite = await start_call(h, ring_timeout=0.2)
        h.feed(retarget((DATA / "sipp_180_ringing.sip").read_bytes(), invite))
        redirect = retarget((DATA / "sipp_486_busy.sip").read_bytes(), invite).replace(
            b"486 Busy Here", b"302 Moved Temporarily"
        )
        redirect = redirect.replace(
            b"\r\nCall-ID:", b"\r\nContact: <sip:carol@127.0.0.1:9>\r\nCall-ID:", 1
        )
        loop = asyncio.get_running_loop()
        ring = call._timers.get(CallTimer.RING)  # noqa: SLF001 - the race needs its deadline
        assert ring is not None
        loop.call_at(ring.when() - 0.01, time.sleep, 0.02)  # both fall due together
        loop.call_at(ring.when() - 0.0001, h.feed, redirect)
        setup: asyncio.Task[bool] = SETUPS.pop(call.call_id)
        try:
            assert await asyncio.wait_for(asyncio.shield(setup), 1) is False
        finally:
            call.abort("test over")

    run_with_endpoint(scenario)


# --- (b) in-dialog requests ------------------------------------------------------


def _matches(data: bytes, call: OutboundCall) -> bool:
    """Would the same parser see this as a request in ``call``'s dialog (§12.2.2)?"""
    try:
        msg = SipMessage.parse(data)
    except PARSE_ERRORS:
        return False
    if not isinstance(msg, SipRequest) or call.dialog is None:
        return False
    to, frm = msg.to_addr, msg.from_addr
    return (
        msg.call_id == call.call_id
        and to is not None
        and to.tag == call.local_tag
        and frm is not None
        and (frm.tag or "") == call.dialog.remote_tag
    )


@st.composite
def in_dialog_requests(draw: st.DrawFn, call: OutboundCall) -> bytes:
    assert call.dialog is not None
    method = draw(
        st.sampled_from(["BYE", "BYE", "INVITE", "UPDATE", "INFO", "OPTIONS", "CANCEL", "ACK"])
        | st.sampled_from(["PRACK", "NOTIFY", "bye", "REFER"])
        | tokens
    )
    local, remote = call.local_tag.encode(), call.dialog.remote_tag.encode()
    seq = draw(st.one_of(st.integers(1, 10), st.integers(-5, 2**33)))
    uri = _choose(draw, b"sip:me@127.0.0.1:5060", b"sip:") or b""
    start = method.encode() + b" " + uri + b" SIP/2.0"
    headers = [
        (
            b"Via",
            _choose(
                draw, b"SIP/2.0/UDP 127.0.0.1:9;branch=" + new_branch().encode(), b"SIP/2.0/UDP"
            ),
        ),
        (
            b"From",
            _choose(
                draw,
                b"<sip:bob@127.0.0.1:9>;tag=" + remote,
                b"<sip:bob@127.0.0.1:9>;tag=x" + remote,
            ),
        ),
        (
            b"To",
            _choose(
                draw, b"<sip:me@127.0.0.1>;tag=" + local, b"<sip:me@127.0.0.1>;tag=" + local[:-1]
            ),
        ),
        (b"Call-ID", _choose(draw, call.call_id.encode(), call.call_id.encode()[1:])),
        (b"CSeq", _choose(draw, f"{seq} {method}".encode(), f"{seq} OPTIONS".encode())),
        (b"Max-Forwards", b"70"),
    ]
    if draw(st.booleans()):
        headers.append((b"Session-Expires", _choose(draw, b"90;refresher=uas", b"0")))
    if method == "INFO" and draw(st.booleans()):
        headers.append((b"Content-Type", b"application/dtmf-relay"))
    raw = _assemble(draw, start, headers)
    return draw(st.one_of(st.just(raw), mutations(raw))) if draw(st.booleans()) else raw


@SLOW
@given(data=st.data())
def test_established_call_survives_any_in_dialog_request(data: st.DataObject) -> None:
    async def scenario(h: Harness) -> None:
        call = await establish(h)
        matched = False
        for packet in data.draw(st.lists(in_dialog_requests(call), max_size=8)):
            was_live = not call.ended.is_set()
            h.feed(packet)
            matched = matched or _matches(packet, call)
            if was_live and call.ended.is_set():
                assert _matches(packet, call), packet
                assert call.ended_by == "remote"
            await asyncio.sleep(0)
        event("ended by the callee" if call.ended.is_set() else "still up")
        if not matched:
            assert not call.ended.is_set()
        if not call.ended.is_set():
            await asyncio.wait_for(call.hangup(), 2)

    run_with_endpoint(scenario)


# --- the examples behind the properties ----------------------------------------------


def _bye(call: OutboundCall, *, to_tag: str, from_tag: str, call_id: str | None = None) -> bytes:
    return (
        "BYE sip:me@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch={new_branch()}\r\n"
        f"From: <sip:bob@127.0.0.1:9>;tag={from_tag}\r\n"
        f"To: <sip:me@127.0.0.1>;tag={to_tag}\r\n"
        f"Call-ID: {call_id or call.call_id}\r\n"
        "CSeq: 5 BYE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_bye_needs_call_id_and_both_tags() -> None:
    async def scenario(h: Harness) -> None:
        call = await establish(h)
        assert call.dialog is not None
        ours, theirs = call.local_tag, call.dialog.remote_tag
        wrong = [
            _bye(call, to_tag=ours + "x", from_tag=theirs),
            _bye(call, to_tag=ours, from_tag=theirs + "x"),
            _bye(call, to_tag=ours, from_tag=""),
            _bye(call, to_tag=theirs, from_tag=ours),  # tags swapped
            _bye(call, to_tag=ours, from_tag=theirs, call_id="other@127.0.0.1"),
        ]
        for bye in wrong:
            h.sent.clear()
            h.feed(bye)
            assert [d.split(b"\r\n", 1)[0] for d, _ in h.sent] == [
                b"SIP/2.0 481 Call/Transaction Does Not Exist"
            ]
            assert not call.ended.is_set()
        h.sent.clear()
        h.feed(_bye(call, to_tag=ours, from_tag=theirs))
        assert h.take(b"SIP/2.0 ").startswith(b"SIP/2.0 200 ")
        assert call.ended.is_set() and call.ended_by == "remote"

    run_with_endpoint(scenario)


def test_tags_and_branches_carry_at_least_32_random_bits() -> None:
    tags = [new_tag() for _ in range(10_000)]
    assert len(set(tags)) == len(tags)
    for tag in tags[:100]:
        assert len(bytes.fromhex(tag)) * 8 >= 32
    branches = [new_branch() for _ in range(1000)]
    assert all(b.startswith("z9hG4bK") and len(bytes.fromhex(b[7:])) * 8 >= 32 for b in branches)
    assert len(set(branches)) == len(branches)
    # every hex digit is used in every position: the bits are random, not a counter
    for pos in range(len(tags[0])):
        assert len({t[pos] for t in tags}) == 16


@pytest.mark.parametrize("silent", [False, True])
def test_fuzzed_out_of_dialog_invites_are_never_answered_when_silent(silent: bool) -> None:
    async def scenario(h: Harness) -> None:
        h.ep.silent_invites = silent
        call = await establish(h)
        h.sent.clear()
        invite = (
            "INVITE sip:me@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:9;branch={new_branch()}\r\n"
            "From: <sip:scan@127.0.0.1>;tag=scan\r\nTo: <sip:me@127.0.0.1>\r\n"
            "Call-ID: scan@127.0.0.1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        h.feed(invite)
        assert [d[:12] for d, _ in h.sent] == ([] if silent else [b"SIP/2.0 403 "])
        await asyncio.wait_for(call.hangup(), 2)

    run_with_endpoint(scenario)
