"""Calls from ringcast's SIP engine to real SIPp callees on 127.0.0.1.

One SIPp scenario per behaviour (tests/sipp/uas_*.xml). Small T1 keeps the
retransmission tests fast. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from conftest import free_port
from sipp import SippUas

from ringcast.domain import Outcome
from ringcast.sip import CallSpec, CallState, MediaOffer, OutboundCall, SipEndpoint

pytestmark = pytest.mark.sipp

T1 = 0.05  # seconds: fast retransmissions on loopback
T2 = 0.4


def start_uas(
    tmp_path: Path, scenario: str, *, keys: dict[str, str] | None = None, transport: str = "u1"
) -> SippUas:
    all_keys = dict(keys or {})
    uas = SippUas(scenario, tmp_path, keys=all_keys, max_calls=1, transport=transport)
    try:
        return uas.start()
    except BaseException:
        uas.stop()  # closes its log file
        raise


def make_spec(uas: SippUas, **kwargs: object) -> CallSpec:
    fields: dict[str, object] = {"to": uas.uri("alice"), "from_": "me"}
    fields.update(kwargs)
    return CallSpec(media=MediaOffer(host="127.0.0.1", port=40000), **fields)  # type: ignore[arg-type]


async def wait_for(predicate: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def sipp_done(uas: SippUas, within: float = 5.0) -> int:
    return await asyncio.to_thread(uas.wait, within)


def methods_received(uas: SippUas) -> list[str]:
    return [m.split(" ", 1)[0] for m in uas.received()]


async def test_answer_then_local_bye(endpoint: SipEndpoint, tmp_path: Path) -> None:
    uas = start_uas(tmp_path, "uas_answer.xml")
    try:
        states: list[CallState] = []
        spec = make_spec(
            uas,
            from_='"Shop" <sip:shop@shop.example>',
            headers={"X-Campaign": "spring"},
        )
        call = OutboundCall(endpoint, spec, on_state=states.append)
        assert await call.setup() is True
        assert (call.status_code, call.reason) == (200, "OK")
        assert call.answer is not None and call.answer.codec == "PCMU"
        assert call.answer.host == "127.0.0.1" and call.answer.dtmf_payload_type == 101
        assert call.invite_sent_at is not None and call.answered_at is not None
        await call.hangup()
        await call.hangup()  # idempotent
        assert call.ended.is_set()
        assert states == [
            CallState.CALLING,
            CallState.RINGING,
            CallState.ANSWERED,
            CallState.ENDING,
            CallState.ENDED,
        ]
        assert call.ended_by == "local"
        assert call.outcome is Outcome.ANSWERED and call.status_code == 200
        assert await sipp_done(uas) == 0
        invite = uas.received()[0]
        assert 'From: "Shop" <sip:shop@shop.example>;tag=' in invite
        assert "X-Campaign: spring" in invite
        assert methods_received(uas) == ["INVITE", "ACK", "BYE"]
    finally:
        uas.stop()


@pytest.mark.parametrize(
    ("scenario", "status", "outcome"),
    [("uas_busy.xml", 486, Outcome.BUSY), ("uas_decline.xml", 603, Outcome.DECLINED)],
)
async def test_rejected(
    endpoint: SipEndpoint, tmp_path: Path, scenario: str, status: int, outcome: Outcome
) -> None:
    uas = start_uas(tmp_path, scenario)
    try:
        call = OutboundCall(endpoint, make_spec(uas))
        assert await call.setup() is False
        assert call.status_code == status
        assert call.outcome is outcome
        assert call.ended.is_set() and call.ended_by == "remote"
        assert call.answered_at is None and call.error is None
        assert await sipp_done(uas) == 0  # SIPp got our ACK for the non-2xx final
        assert methods_received(uas) == ["INVITE", "ACK"]
    finally:
        uas.stop()


async def test_no_answer_ring_timeout_cancels(endpoint: SipEndpoint, tmp_path: Path) -> None:
    uas = start_uas(tmp_path, "uas_noanswer.xml")
    try:
        states: list[CallState] = []
        call = OutboundCall(endpoint, make_spec(uas, ring_timeout=0.4), on_state=states.append)
        started = time.monotonic()
        assert await call.setup() is False
        assert 0.3 < time.monotonic() - started < 3.0
        assert (call.status_code, call.reason) == (487, "Request Terminated")
        assert call.canceled_by_us and call.ended_by == "local"
        assert call.outcome is Outcome.NO_ANSWER
        assert states == [
            CallState.CALLING,
            CallState.RINGING,
            CallState.CANCELING,
            CallState.ENDED,
        ]
        assert await sipp_done(uas) == 0
        assert methods_received(uas) == ["INVITE", "CANCEL", "ACK"]
    finally:
        uas.stop()


async def test_hangup_while_ringing_sends_cancel(endpoint: SipEndpoint, tmp_path: Path) -> None:
    uas = start_uas(tmp_path, "uas_noanswer.xml")
    try:
        call = OutboundCall(endpoint, make_spec(uas))
        setup = asyncio.create_task(call.setup(), name="test-setup")
        await wait_for(lambda: call.state is CallState.RINGING)
        await call.cancel()
        assert await setup is False
        assert call.status_code == 487 and call.canceled_by_us
        assert await sipp_done(uas) == 0
    finally:
        uas.stop()


async def test_200_crossing_cancel_is_acked_then_byed(
    endpoint: SipEndpoint, tmp_path: Path
) -> None:
    uas = start_uas(tmp_path, "uas_cancel_crossed.xml")
    try:
        call = OutboundCall(endpoint, make_spec(uas, ring_timeout=0.3))
        assert await call.setup() is False
        await asyncio.wait_for(call.ended.wait(), 5)
        assert call.status_code == 200 and call.canceled_by_us
        assert call.outcome is Outcome.NO_ANSWER
        assert await sipp_done(uas) == 0
        assert methods_received(uas) == ["INVITE", "CANCEL", "ACK", "BYE"]
    finally:
        uas.stop()


@pytest.mark.parametrize(("password", "answered"), [("s3cret", True), ("wrong", False)])
async def test_digest_challenge_verified_by_sipp(
    endpoint: SipEndpoint, tmp_path: Path, password: str, answered: bool
) -> None:
    uas = start_uas(
        tmp_path, "uas_auth.xml", keys={"auth_user": "alice", "auth_password": "s3cret"}
    )
    try:
        call = OutboundCall(endpoint, make_spec(uas, username="alice", password=password))
        assert await call.setup() is answered
        if answered:
            assert call.status_code == 200
            await call.hangup()
        else:
            assert call.status_code == 403 and call.outcome is Outcome.REJECTED
        assert await sipp_done(uas) == 0
        invites = [m for m in uas.received() if m.startswith("INVITE")]
        assert len(invites) == 2
        assert "Authorization: Digest " in invites[1] and "qop=auth" in invites[1]
        assert password not in "".join(uas.received())  # only the digest goes out
    finally:
        uas.stop()


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
async def test_second_challenge_fails_cleanly(
    endpoint: SipEndpoint, tmp_path: Path, algorithm: str, caplog: pytest.LogCaptureFixture
) -> None:
    uas = start_uas(tmp_path, "uas_auth_twice.xml", keys={"auth_algorithm": algorithm})
    try:
        call = OutboundCall(endpoint, make_spec(uas, username="alice", password="pw-secret"))
        with caplog.at_level("DEBUG"):
            assert await call.setup() is False
        assert call.status_code == 407 and call.outcome is Outcome.REJECTED
        assert call.error is not None and "challenged again" in call.error
        assert await sipp_done(uas) == 0
        invites = [m for m in uas.received() if m.startswith("INVITE")]
        assert len(invites) == 2  # answered once, not twice
        assert f"algorithm={algorithm}" in invites[1]
        assert "pw-secret" not in caplog.text
    finally:
        uas.stop()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_callee_hangs_up(sipp_bin: str, tmp_path: Path, transport: str) -> None:
    endpoint = SipEndpoint(host="127.0.0.1", port=0, transport=transport, t1=T1, t2=T2)
    await endpoint.start()
    uas = start_uas(tmp_path, "uas_callee_bye.xml", transport="t1" if transport == "tcp" else "u1")
    try:
        call = OutboundCall(endpoint, make_spec(uas, transport=transport))
        assert await call.setup() is True
        await asyncio.wait_for(call.ended.wait(), 5)
        assert call.ended_by == "remote"
        assert call.status_code == 200 and call.outcome is Outcome.ANSWERED
        assert call.ended_at is not None and call.answered_at is not None
        await call.hangup()  # no-op after the callee's BYE
        assert await sipp_done(uas) == 0
    finally:
        uas.stop()
        await endpoint.close()


async def test_183_early_sdp_then_200_without_sdp(endpoint: SipEndpoint, tmp_path: Path) -> None:
    uas = start_uas(tmp_path, "uas_early_media.xml")
    try:
        states: list[CallState] = []
        call = OutboundCall(endpoint, make_spec(uas), on_state=states.append)
        assert await call.setup() is True
        assert call.answer is not None and call.answer.codec == "PCMA"
        assert call.answer.payload_type == 8
        assert states[:3] == [CallState.CALLING, CallState.RINGING, CallState.ANSWERED]
        await call.hangup()
        assert await sipp_done(uas) == 0
    finally:
        uas.stop()


async def test_callee_reinvite_gets_same_media(endpoint: SipEndpoint, tmp_path: Path) -> None:
    uas = start_uas(tmp_path, "uas_reinvite.xml")
    try:
        call = OutboundCall(endpoint, make_spec(uas))
        assert await call.setup() is True
        await wait_for(lambda: call.answer is not None and call.answer.port == 6002)
        await wait_for(lambda: len(uas.received()) >= 3)  # INVITE, ACK, ACK of re-INVITE
        await call.hangup()
        assert await sipp_done(uas) == 0
        log = uas.messages()
        assert "o=ringcast" in log and " 2 IN IP4 127.0.0.1" in log  # SDP version + 1
        assert "m=audio 40000 RTP/AVP 0 101" in log  # same media, negotiated codec
    finally:
        uas.stop()


async def test_302_redirect_followed_once(endpoint: SipEndpoint, tmp_path: Path) -> None:
    target = start_uas(tmp_path, "uas_answer.xml")
    redirector = start_uas(tmp_path, "uas_redirect.xml", keys={"redirect_port": str(target.port)})
    try:
        call = OutboundCall(endpoint, make_spec(redirector))
        assert await call.setup() is True
        assert call.status_code == 200
        await call.hangup()
        assert await sipp_done(redirector) == 0
        assert await sipp_done(target) == 0
        assert target.invites_per_user() == {"moved": 1}
    finally:
        redirector.stop()
        target.stop()


async def test_redirect_loop_is_recorded(endpoint: SipEndpoint, tmp_path: Path) -> None:
    second = start_uas(tmp_path, "uas_redirect.xml", keys={"redirect_port": "9"})
    first = start_uas(tmp_path, "uas_redirect.xml", keys={"redirect_port": str(second.port)})
    try:
        call = OutboundCall(endpoint, make_spec(first))
        assert await call.setup() is False
        assert call.status_code == 302 and call.outcome is Outcome.REJECTED
        assert await sipp_done(first) == 0 and await sipp_done(second) == 0
    finally:
        first.stop()
        second.stop()


async def test_info_dtmf_and_options(endpoint: SipEndpoint, tmp_path: Path) -> None:
    uas = start_uas(tmp_path, "uas_info_dtmf.xml")
    try:
        digits: list[str] = []
        call = OutboundCall(endpoint, make_spec(uas), on_dtmf=digits.append)
        assert await call.setup() is True
        await wait_for(lambda: call.dtmf_info == ["5"])
        assert digits == ["5"]
        await call.hangup()
        assert await sipp_done(uas) == 0
    finally:
        uas.stop()


@pytest.mark.parametrize(
    ("scenario", "method"),
    [("uas_session_timer.xml", "UPDATE"), ("uas_session_timer_reinvite.xml", "INVITE")],
)
async def test_session_timer_refreshed_by_us(
    endpoint: SipEndpoint, tmp_path: Path, scenario: str, method: str
) -> None:
    uas = start_uas(tmp_path, scenario, keys={"session_expires": "2"})
    try:
        call = OutboundCall(endpoint, make_spec(uas))
        assert await call.setup() is True
        assert call.session_expires == 2 and call.session_refresher == "uac"
        await wait_for(lambda: methods_received(uas).count(method) >= 1 + (method == "INVITE"))
        if method == "INVITE":
            await wait_for(lambda: methods_received(uas).count("ACK") >= 2)
        await call.hangup()
        assert await sipp_done(uas) == 0
        refresh = [m for m in uas.received() if m.startswith(method)][-1]
        assert "Session-Expires: 2;refresher=uac" in refresh
        assert call.state is CallState.ENDED and call.ended_by == "local"
    finally:
        uas.stop()


async def test_late_2xx_to_refresh_reinvite_acked_with_its_cseq(
    endpoint: SipEndpoint, tmp_path: Path
) -> None:
    """§13.2.2.4: the ACK of a 2xx has the CSeq number of the INVITE it answers,
    also for a retransmission that arrives after Timer M (64*T1, RFC 6026) has
    ended our re-INVITE's transaction and reaches the call as a stray 2xx."""
    assert 64 * T1 < 4.0  # the scenario's 200 comes again after 4 s: past Timer M
    uas = start_uas(tmp_path, "uas_reinvite_late_2xx.xml")
    try:
        call = OutboundCall(endpoint, make_spec(uas))
        assert await call.setup() is True
        await wait_for(lambda: methods_received(uas).count("ACK") >= 3, within=9)
        await call.hangup()
        assert await sipp_done(uas) == 0, uas.errors()
        acks = [m for m in uas.received() if m.startswith("ACK ")]
        cseqs = [line for m in acks for line in m.splitlines() if line.startswith("CSeq:")]
        refresh = [m for m in uas.received() if m.startswith("INVITE ")][1]
        assert "CSeq: 2 INVITE" in refresh
        assert cseqs == ["CSeq: 1 ACK", "CSeq: 2 ACK", "CSeq: 2 ACK"]
    finally:
        uas.stop()


async def test_max_duration_sends_bye(endpoint: SipEndpoint, tmp_path: Path) -> None:
    uas = start_uas(tmp_path, "uas_answer.xml")
    try:
        call = OutboundCall(endpoint, make_spec(uas, max_duration=0.3))
        assert await call.setup() is True
        await asyncio.wait_for(call.ended.wait(), 5)
        assert call.ended_by == "local" and call.hangup_reason == "max-duration"
        assert await sipp_done(uas) == 0
    finally:
        uas.stop()


async def test_tcp_call(sipp_bin: str, tmp_path: Path) -> None:
    ep = SipEndpoint(host="127.0.0.1", port=0, transport="tcp", t1=T1, tcp_idle_timeout=0.3)
    await ep.start()
    uas = start_uas(tmp_path, "uas_answer.xml", transport="t1")
    try:
        call = OutboundCall(ep, make_spec(uas, transport="tcp"))
        assert await call.setup() is True
        assert ep.tcp_connections == 1
        await asyncio.sleep(0.5)  # idle, but the call still needs it
        assert ep.tcp_connections == 1
        await call.hangup()
        assert call.ended_by == "local"
        assert await sipp_done(uas) == 0
        assert "SIP/2.0/TCP" in uas.received()[0]
        await wait_for(lambda: ep.tcp_connections == 0)  # idle and unused: closed
    finally:
        uas.stop()
        await ep.close()


async def test_silent_udp_peer_is_timer_b_408(sipp_bin: str) -> None:
    ep = SipEndpoint(host="127.0.0.1", port=0, t1=0.02)
    await ep.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as black_hole:
        black_hole.bind(("127.0.0.1", 0))  # bound, never read: no answer, no ICMP
        port = black_hole.getsockname()[1]
        try:
            call = OutboundCall(
                ep,
                CallSpec(
                    to=f"sip:nobody@127.0.0.1:{port}",
                    from_="me",
                    media=MediaOffer("127.0.0.1", 40000),
                ),
            )
            started = time.monotonic()
            assert await call.setup() is False
            assert 1.2 <= time.monotonic() - started < 3.0  # Timer B = 64*T1
            assert (call.status_code, call.reason) == (408, "Request Timeout")
            assert call.error == f"no response from 127.0.0.1:{port} (Timer B)"
            assert call.outcome is Outcome.FAILED
            # Timer A doubled from T1 = 20 ms until Timer B: 20, 40, ... 640 ms
            assert 5 <= ep.retransmissions <= 7
        finally:
            await ep.close()


async def test_closed_udp_port_is_503_from_icmp(sipp_bin: str) -> None:
    ep = SipEndpoint(host="127.0.0.1", port=0, t1=0.5)
    await ep.start()
    try:
        port = free_port()
        call = OutboundCall(
            ep,
            CallSpec(
                to=f"sip:nobody@127.0.0.1:{port}",
                from_="me",
                media=MediaOffer("127.0.0.1", 40000),
            ),
        )
        started = time.monotonic()
        assert await asyncio.wait_for(call.setup(), 5) is False
        assert time.monotonic() - started < 1.0  # well before Timer A or B
        assert (call.status_code, call.reason) == (503, "Service Unavailable")
        assert call.error == f"cannot reach 127.0.0.1:{port} over udp: Connection refused"
        assert call.outcome is Outcome.FAILED
    finally:
        await ep.close()


async def test_unreachable_tcp_is_503(sipp_bin: str) -> None:
    ep = SipEndpoint(host="127.0.0.1", port=0, t1=T1)
    await ep.start()
    try:
        port = free_port(socket.SOCK_STREAM)
        call = OutboundCall(
            ep,
            CallSpec(
                to=f"sip:nobody@127.0.0.1:{port}",
                from_="me",
                media=MediaOffer("127.0.0.1", 40000),
                transport="tcp",
            ),
        )
        assert await asyncio.wait_for(call.setup(), 5) is False
        assert (call.status_code, call.reason) == (503, "Service Unavailable")
        assert call.error is not None and "refused" in call.error.lower()
        assert call.outcome is Outcome.FAILED
    finally:
        await ep.close()


async def test_session_refreshed_by_callee_then_expires(
    endpoint: SipEndpoint, tmp_path: Path
) -> None:
    uas = start_uas(tmp_path, "uas_session_refresh_by_callee.xml")
    try:
        call = OutboundCall(endpoint, make_spec(uas))
        assert await call.setup() is True
        assert call.session_expires == 3 and call.session_refresher == "uas"
        started = time.monotonic()
        await asyncio.wait_for(call.ended.wait(), 6)
        # refreshed at ~1 s, then BYE at 3 - min(32, 3/3) = 2 s after the refresh
        assert 2.5 < time.monotonic() - started < 4.5
        assert call.ended_by == "local" and call.hangup_reason == "session-expired"
        assert await sipp_done(uas) == 0
    finally:
        uas.stop()


async def test_challenged_bye_is_answered_with_digest(
    endpoint: SipEndpoint, tmp_path: Path
) -> None:
    uas = start_uas(
        tmp_path, "uas_bye_auth.xml", keys={"auth_user": "alice", "auth_password": "s3cret"}
    )
    try:
        call = OutboundCall(endpoint, make_spec(uas, username="alice", password="s3cret"))
        assert await call.setup() is True
        await call.hangup()
        assert call.ended_by == "local"
        assert await sipp_done(uas) == 0
        byes = [m for m in uas.received() if m.startswith("BYE")]
        assert len(byes) == 2 and "\nAuthorization: Digest " in byes[1]
        assert not any(m.startswith("SIP/2.0 403") for m in uas.messages().split("\n"))
    finally:
        uas.stop()


async def test_unanswered_bye_ends_the_session_when_sent(
    endpoint: SipEndpoint, tmp_path: Path
) -> None:
    """RFC 3261 §15.1.1: the session ends when the BYE is handed to its transaction.
    A callee that never answers it (Timer F, 64*T1) does not lengthen the call; the
    408 is the record's error."""
    uas = start_uas(tmp_path, "uas_bye_unanswered.xml")
    try:
        call = OutboundCall(endpoint, make_spec(uas))
        assert await call.setup() is True
        await asyncio.sleep(0.5)
        sent_at = time.monotonic()
        await call.hangup()
        waited = time.monotonic() - sent_at
        assert waited >= endpoint.timers.b * 0.9  # the BYE really went unanswered
        assert call.answered_at is not None and call.ended_at is not None
        connected = (call.ended_at - call.answered_at).total_seconds()
        assert connected < endpoint.timers.b / 2  # the call, not the call + Timer F
        assert call.status_code == 200 and call.outcome is Outcome.ANSWERED
        assert call.error is not None and "no answer to our BYE: 408" in call.error
    finally:
        uas.stop()


async def test_create_call_validates_input(endpoint: SipEndpoint) -> None:
    media = MediaOffer("127.0.0.1", 40000)
    with pytest.raises(ValueError, match="to must be a sip: or sips: URI"):
        OutboundCall(endpoint, CallSpec(to="tel:+15551234", from_="me", media=media))
    with pytest.raises(ValueError, match="header 'Via' is managed by ringcast"):
        OutboundCall(
            endpoint, CallSpec(to="sip:a@127.0.0.1", from_="me", media=media, headers={"Via": "x"})
        )
    with pytest.raises(ValueError, match="invalid header"):
        OutboundCall(
            endpoint,
            CallSpec(to="sip:a@127.0.0.1", from_="me", media=media, headers={"X-A": "1\r\nB: 2"}),
        )


async def test_reinvite_glare_491_both_ways(endpoint: SipEndpoint, tmp_path: Path) -> None:
    """RFC 3261 §14.2: the callee's re-INVITE crosses our session refresh and gets 491;
    §14.1: our refresh, answered 491, is retried after 2.1-4 s (we own the Call-ID)."""
    uas = start_uas(tmp_path, "uas_glare.xml", keys={"session_expires": "2"})
    try:
        call = OutboundCall(endpoint, make_spec(uas))
        assert await call.setup() is True
        await wait_for(lambda: methods_received(uas).count("ACK") >= 3, within=10.0)
        assert call.state is CallState.ANSWERED
        await call.hangup()
        assert await sipp_done(uas) == 0, uas.errors()
        timeline = uas.timeline()
        firsts = [(when, msg.split("\n", 1)[0].strip()) for when, msg in timeline]
        assert [line.split(" ", 1)[0] for _, line in firsts] == [
            "INVITE",
            "ACK",
            "INVITE",
            "SIP/2.0",
            "ACK",
            "INVITE",
            "ACK",
            "BYE",
        ], uas.errors()
        assert firsts[3][1] == "SIP/2.0 491 Request Pending"  # our answer to its re-INVITE
        assert "CSeq: 1 INVITE" in timeline[3][1]
        assert "CSeq: 2 ACK" in timeline[4][1]  # we ACKed its 491 to our refresh
        assert "CSeq: 3 INVITE" in timeline[5][1]  # the retry, a new transaction
        waited = (timeline[5][0] - timeline[4][0]).total_seconds()
        assert 2.1 - 0.05 <= waited <= 4.0 + 0.3, waited
        assert call.ended_by == "local" and call.error is None
    finally:
        uas.stop()


async def test_reinvite_crossing_our_update_refresh_gets_491(sipp_bin: str, tmp_path: Path) -> None:
    """RFC 3261 §14.2 / RFC 3311 §5.2: a re-INVITE while our UPDATE refresh is pending gets
    491; our UPDATE, answered 491, is retried 2.1-4 s later (§14.1)."""
    # T1 0.5 s: no retransmission of our pending UPDATE during the exchange (SIPp
    # would take one for the retry it waits for).
    ep = SipEndpoint(host="127.0.0.1", port=0, t1=0.5, t2=4.0)
    await ep.start()
    uas = start_uas(tmp_path, "uas_glare_update.xml", keys={"session_expires": "2"})
    try:
        call = OutboundCall(ep, make_spec(uas))
        assert await call.setup() is True
        await wait_for(lambda: methods_received(uas).count("UPDATE") >= 2, within=10.0)
        assert call.state is CallState.ANSWERED
        await call.hangup()
        assert await sipp_done(uas) == 0, uas.errors()
        timeline = uas.timeline()
        firsts = [msg.split("\n", 1)[0].strip() for _, msg in timeline]
        assert [line.split(" ", 1)[0] for line in firsts] == [
            "INVITE",
            "ACK",
            "UPDATE",
            "SIP/2.0",
            "UPDATE",
            "BYE",
        ], uas.errors()
        assert firsts[3] == "SIP/2.0 491 Request Pending"
        assert "CSeq: 2 UPDATE" in timeline[2][1] and "CSeq: 3 UPDATE" in timeline[4][1]
        waited = (timeline[4][0] - timeline[3][0]).total_seconds()
        assert 2.1 - 0.05 <= waited <= 4.0 + 0.3, waited
    finally:
        uas.stop()
        await ep.close()


def cluster(*ports: int) -> Callable[[str, int | None, str], Awaitable[list[tuple[str, int]]]]:
    """A locator that finds the servers of ``localhost`` at these 127.0.0.1 ports,
    in this order (what SRV records would give, RFC 3263 §4.2)."""

    async def locate(host: str, port: int | None, transport: str) -> list[tuple[str, int]]:
        assert host == "localhost"
        return [("127.0.0.1", p) for p in ports]

    return locate


def unstarted(
    tmp_path: Path, scenario: str, keys: dict[str, str] | None = None, transport: str = "u1"
) -> SippUas:
    """A SIPp callee for one call with its port chosen; started inside the test's try."""
    return SippUas(scenario, tmp_path, keys=keys, max_calls=1, transport=transport)


@contextlib.asynccontextmanager
async def call_to_cluster(
    *targets: SippUas | int, t1: float = T1, t2: float = T2
) -> AsyncIterator[OutboundCall]:
    """A call to `sip:alice@localhost` whose servers are `targets` in order (SIPp
    callees, started here, or bare ports); SIPps stopped and endpoint closed after."""
    sipps = [t for t in targets if isinstance(t, SippUas)]
    ports = [t.port if isinstance(t, SippUas) else t for t in targets]
    ep = SipEndpoint(host="127.0.0.1", port=0, t1=t1, t2=t2, locator=cluster(*ports))
    try:
        for uas in sipps:
            uas.start()
        await ep.start()
        yield OutboundCall(
            ep, CallSpec(to="sip:alice@localhost", from_="me", media=MediaOffer("127.0.0.1", 40000))
        )
    finally:
        for uas in sipps:
            uas.stop()
        await ep.close()


async def test_503_fails_over_to_the_next_server(sipp_bin: str, tmp_path: Path) -> None:
    """RFC 3263 §4.3: a 503 from the first server of the target sends the same INVITE
    (same CSeq, new branch) to the next one, which answers."""
    busy = unstarted(tmp_path, "uas_unavailable.xml", keys={"retry_after": "120"})
    good = unstarted(tmp_path, "uas_answer.xml")
    async with call_to_cluster(busy, good) as call:
        assert await call.setup() is True
        assert call.status_code == 200 and call.error is None
        await call.hangup()
        assert await sipp_done(busy) == 0, busy.errors()
        assert await sipp_done(good) == 0, good.errors()
        assert methods_received(busy) == ["INVITE", "ACK"]
        assert methods_received(good) == ["INVITE", "ACK", "BYE"]
        first, second = busy.received()[0], good.received()[0]
        assert "CSeq: 1 INVITE" in first and "CSeq: 1 INVITE" in second
        branch = re.compile(r"branch=(z9hG4bK\w+)")
        assert branch.findall(first) != branch.findall(second)
        assert call.retry_after == 120


async def test_every_server_503_records_retry_after(sipp_bin: str, tmp_path: Path) -> None:
    """RFC 3263 §4.3 / RFC 3261 §21.5.4: when no server takes the call, the record
    names each one and keeps the shortest Retry-After."""
    first = unstarted(tmp_path, "uas_unavailable.xml", keys={"retry_after": "120"})
    second = unstarted(tmp_path, "uas_unavailable.xml", keys={"retry_after": "30"})
    async with call_to_cluster(first, second) as call:
        assert await call.setup() is False
        assert (call.status_code, call.outcome) == (503, Outcome.FAILED)
        assert call.retry_after == 30
        assert call.error == (
            f"servers unavailable: 127.0.0.1:{first.port} 503 Service Unavailable; "
            f"127.0.0.1:{second.port} 503 Service Unavailable (Retry-After 30 s)"
        )
        assert await sipp_done(first) == 0 and await sipp_done(second) == 0
        assert methods_received(first) == methods_received(second) == ["INVITE", "ACK"]


async def test_unreachable_server_fails_over_to_the_next(sipp_bin: str, tmp_path: Path) -> None:
    """RFC 3263 §4.3: a transport error (ICMP port unreachable) also moves on."""
    closed = free_port()
    good = unstarted(tmp_path, "uas_answer.xml")
    async with call_to_cluster(closed, good, t1=0.5, t2=4.0) as call:
        started = time.monotonic()
        assert await asyncio.wait_for(call.setup(), 5) is True
        assert time.monotonic() - started < 1.0  # the ICMP error, not Timer A or B
        await call.hangup()
        assert await sipp_done(good) == 0, good.errors()
        assert methods_received(good) == ["INVITE", "ACK", "BYE"]
        assert call.error is None and call.retry_after is None


async def test_server_that_rang_is_not_failed_over(sipp_bin: str, tmp_path: Path) -> None:
    """A 503 after the callee rang is final: the next server could ring it twice."""
    ringing = unstarted(tmp_path, "uas_ring_then_unavailable.xml")
    good = unstarted(tmp_path, "uas_answer.xml")
    async with call_to_cluster(ringing, good) as call:
        assert await call.setup() is False
        assert call.status_code == 503
        assert await sipp_done(ringing) == 0, ringing.errors()
        assert good.received() == []


async def test_redirect_tries_contacts_by_q_value(endpoint: SipEndpoint, tmp_path: Path) -> None:
    """RFC 3261 §8.1.3.4 / §20.10: a 3xx's Contacts are tried highest q first (ties in the
    order listed), the next one when a target fails (> 399); one with a lower q is left
    untried once a target answers."""
    low = unstarted(tmp_path, "uas_answer.xml")
    busy = unstarted(tmp_path, "uas_busy.xml")
    good = unstarted(tmp_path, "uas_answer.xml")
    contacts = (
        f"<sip:low@127.0.0.1:{low.port}>;q=0.1, "
        f'"Desk" <sip:busy@127.0.0.1:{busy.port}>;q=0.9, '
        f"sip:good@127.0.0.1:{good.port};q=0.9"
    )
    redirector = unstarted(tmp_path, "uas_redirect_contacts.xml", keys={"contacts": contacts})
    sipps = [low, busy, good, redirector]
    try:
        for uas in sipps:
            uas.start()
        call = OutboundCall(endpoint, make_spec(redirector))
        assert await call.setup() is True
        await call.hangup()
        for uas in (redirector, busy, good):
            assert await sipp_done(uas) == 0, uas.errors()
        assert busy.invites_per_user() == {"busy": 1}
        assert good.invites_per_user() == {"good": 1}
        assert methods_received(good) == ["INVITE", "ACK", "BYE"]
        assert low.received() == []
    finally:
        for uas in sipps:
            uas.stop()


async def test_redirect_contact_transport_is_honoured(
    endpoint: SipEndpoint, tmp_path: Path
) -> None:
    """RFC 3263 §4.1 / §19.1.1: a redirect Contact with ;transport=tcp is called over TCP
    (and our Contact says TCP too), though the call itself was placed over UDP."""
    target = unstarted(tmp_path, "uas_answer.xml", transport="t1")
    contacts = f"<sip:moved@127.0.0.1:{target.port};transport=tcp>"
    redirector = unstarted(tmp_path, "uas_redirect_contacts.xml", keys={"contacts": contacts})
    sipps = [target, redirector]
    try:
        for uas in sipps:
            uas.start()
        call = OutboundCall(endpoint, make_spec(redirector))
        assert await call.setup() is True, call.error
        await call.hangup()
        assert await sipp_done(redirector) == 0 and await sipp_done(target) == 0, target.errors()
        invite = target.received()[0]
        assert invite.startswith(f"INVITE sip:moved@127.0.0.1:{target.port};transport=tcp ")
        assert "SIP/2.0/TCP" in invite and ";transport=tcp>" in invite
        assert methods_received(target) == ["INVITE", "ACK", "BYE"]
    finally:
        for uas in sipps:
            uas.stop()


async def test_in_dialog_retransmissions_are_answered_by_the_server_transaction(
    endpoint: SipEndpoint, tmp_path: Path
) -> None:
    """§17.2: our 2xx to a re-INVITE is re-sent until SIPp's ACK (Timer G), a repeated
    re-INVITE is absorbed (RFC 6026), and a retransmitted BYE gets the same 200 again
    after the call ended, while a new BYE there gets 481."""
    uas = start_uas(tmp_path, "uas_in_dialog_retransmit.xml")  # ACK withheld 1 s
    try:
        call = OutboundCall(endpoint, make_spec(uas))
        assert await call.setup() is True
        await asyncio.wait_for(call.ended.wait(), 10)
        assert call.ended_by == "remote"
        assert await sipp_done(uas) == 0, uas.errors()
        received = uas.received()

        def answers(cseq: str) -> list[str]:
            return [
                m.split("\n", 1)[0].strip()
                for m in received
                if m.startswith("SIP/2.0") and re.search(rf"^CSeq:\s*{cseq}\s*$", m, re.M | re.I)
            ]

        reinvite_200s = answers("1 INVITE")
        # the first 200, then Timer G's copies while the ACK was withheld; no answer to
        # the repeated re-INVITE beyond those (absorbed in Accepted)
        assert len(reinvite_200s) >= 2 and set(reinvite_200s) == {"SIP/2.0 200 OK"}
        copies = {m for m in received if m.startswith("SIP/2.0") and "CSeq: 1 INVITE" in m}
        assert len(copies) == 1  # every copy the same bytes
        assert answers("2 BYE") == ["SIP/2.0 200 OK", "SIP/2.0 200 OK"]
        assert answers("3 BYE") == ["SIP/2.0 481 Call/Transaction Does Not Exist"]
        assert endpoint.transactions.server_count >= 1  # the BYE's, until Timer J
    finally:
        uas.stop()
