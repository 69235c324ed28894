"""SRTP/SRTCP on the shared clock (RFC 3711): real UDP on 127.0.0.1, a libsrtp peer.

The test's socket plays the callee: it opens what ringcast sends with
ringcast's key (through its own pylibsrtp session, not ringcast's wrapper) and
protects what it sends with its own. Checks: the payloads on the wire are not
the prompt's, once opened they are exactly the prompt's shared frames (which
stay plain: other calls share them); RTCP arrives as SRTCP; digits sent as
SRTP count, forged ones are dropped and counted, and never latch the stream.
"""

from __future__ import annotations

import asyncio
import base64
import random
import re
import secrets
from dataclasses import replace
from pathlib import Path

import pylibsrtp
import pytest
from media_stream_lib import RtpSink, job_to
from sipp import SippUas

from ringcast.dialer.call import CallContext, place_call
from ringcast.domain import Outcome
from ringcast.media import prepare_prompt
from ringcast.media.prompt import AudioSegment
from ringcast.rtp import MediaSession, PortAllocator, RtpClock
from ringcast.rtp.packet import RTCP_BYE, RTCP_SR, build_event, build_rtp, parse_rtcp, parse_rtp
from ringcast.rtp.srtp import PROFILES, SrtpContext
from ringcast.sip import SipEndpoint

HERE = Path(__file__).parent

SUITES = [
    ("AES_CM_128_HMAC_SHA1_80", 30, 10),
    ("AES_CM_128_HMAC_SHA1_32", 30, 4),
    ("AEAD_AES_256_GCM", 44, 16),
]


def _peer(suite: str, key: bytes, *, inbound: bool) -> pylibsrtp.Session:
    kind = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    return pylibsrtp.Session(
        pylibsrtp.Policy(key=key, ssrc_type=kind, srtp_profile=PROFILES[suite])
    )


@pytest.mark.parametrize(("suite", "key_len", "tag_len"), SUITES)
async def test_srtp_stream_opens_to_the_shared_frames(
    clock: RtpClock, allocator: PortAllocator, sink: RtpSink, suite: str, key_len: int,
    tag_len: int,
) -> None:  # fmt: skip
    ours, theirs = secrets.token_bytes(key_len), secrets.token_bytes(key_len)
    prompt = await prepare_prompt([{"say": "one two three", "voice": "en-us"}])
    session = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
    session.secure(suite, ours, theirs)
    session.start("127.0.0.1", sink.port, 0, "PCMU", 101)
    assert session.srtp_suite == suite
    result = await asyncio.wait_for(session.play(prompt), 10)
    assert result.completed
    await session.close()
    await asyncio.sleep(0.05)  # the RTCP BYE reaches the sink's reader
    opener = _peer(suite, ours, inbound=True)
    plain = [opener.unprotect(p.data) for p in sink.packets]
    seg = prompt.segments[0]
    assert isinstance(seg, AudioSegment)
    frames = list(seg.payloads["PCMU"])
    assert [parse_rtp(p).payload for p in plain] == frames  # exactly the shared frames
    assert all(len(p.data) == len(q) + tag_len for p, q in zip(sink.packets, plain, strict=True))
    wire = [parse_rtp(p.data).payload[:160] for p in sink.packets]
    assert sum(w == f for w, f in zip(wire, frames, strict=True)) == 0  # encrypted on the wire
    # SRTCP: the sender reports and the BYE open with our key
    kinds = [
        [r.packet_type for r in parse_rtcp(opener.unprotect_rtcp(d))] for d in sink.rtcp_packets
    ]
    assert kinds and RTCP_SR in kinds[-1] and RTCP_BYE in kinds[-1]


async def test_srtp_digits_count_forged_ones_do_not(
    clock: RtpClock, allocator: PortAllocator, sink: RtpSink
) -> None:
    suite = "AES_CM_128_HMAC_SHA1_80"
    ours, theirs = secrets.token_bytes(30), secrets.token_bytes(30)
    prompt = await prepare_prompt([{"gather": {"digits": 1, "timeout": 3}}])
    session = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
    # before the answer is applied (start) nothing is read: no packet is taken for plain RTP
    early = build_rtp(
        build_event(3, end=False, duration=160), payload_type=101, seq=1, timestamp=1, ssrc=9
    )
    sink.rtp.sendto(early, ("127.0.0.1", session.local_port))
    await asyncio.sleep(0.05)
    assert session.dtmf_received == "" and session.packets_received == 0
    assert session.strangers == 1
    session.secure(suite, ours, theirs)
    session.start("127.0.0.1", sink.port, 0, "PCMU", 101)
    play = asyncio.create_task(session.play(prompt), name="test-srtp-play")
    await asyncio.sleep(0.2)
    forger = _peer(suite, secrets.token_bytes(30), inbound=False)  # a key it never agreed
    protect = _peer(suite, theirs, inbound=False)
    for seq, (sender, event) in enumerate([(forger, 7)] * 6 + [(protect, 4)] * 6, start=2):
        payload = build_event(event, end=seq % 6 == 1, duration=160)
        rtp = build_rtp(payload, payload_type=101, seq=seq, timestamp=1000 * (seq > 7), ssrc=9)
        sink.rtp.sendto(sender.protect(rtp), ("127.0.0.1", session.local_port))
        await asyncio.sleep(0.01)
    plain_rtcp = b"\x81\xc9\x00\x01\x00\x00\x00\x09"  # an unprotected RR: not authentic either
    sink.rtcp.sendto(plain_rtcp, ("127.0.0.1", session.local_port + 1))
    result = await asyncio.wait_for(play, 5)
    await asyncio.sleep(0.05)
    assert result.dtmf == "4"
    assert session.srtp_auth_failures == 7
    assert clock.srtp_auth_failures == 7
    assert clock.srtp_streams == 1
    assert session.rtcp_received == 0
    await session.close()


def test_context_rekey_and_repr() -> None:
    a, b, c = secrets.token_bytes(30), secrets.token_bytes(30), secrets.token_bytes(30)
    ctx = SrtpContext("AES_CM_128_HMAC_SHA1_80", a, b)
    assert repr(ctx) == "SrtpContext(AES_CM_128_HMAC_SHA1_80)"
    pkt = build_rtp(b"\x01" * 160, payload_type=0, seq=1, timestamp=160, ssrc=5)
    assert ctx.open(_peer("AES_CM_128_HMAC_SHA1_80", c, inbound=False).protect(pkt)) is None
    ctx.rekey_remote(c)
    again = build_rtp(b"\x01" * 160, payload_type=0, seq=2, timestamp=320, ssrc=5)
    assert ctx.open(_peer("AES_CM_128_HMAC_SHA1_80", c, inbound=False).protect(again)) == again
    assert ctx.auth_failures == 1
    with pytest.raises(ValueError, match="unsupported SRTP crypto-suite 'NULL'"):
        SrtpContext("NULL", a, b)


def test_fast_send_path_equals_pylibsrtp_protect() -> None:
    """The per-call-buffer send path writes exactly what ``Session.protect`` would."""
    key, other = secrets.token_bytes(30), secrets.token_bytes(30)
    fast: list[bytes] = []
    public: list[bytes] = []
    send_fast = SrtpContext("AES_CM_128_HMAC_SHA1_80", key, other).wrap_send(
        lambda b: fast.append(bytes(b))
    )
    send_public = SrtpContext("AES_CM_128_HMAC_SHA1_80", key, other)._wrap_public(public.append)
    for seq in range(1, 4):
        pkt = bytearray(build_rtp(bytes([seq]) * 160, payload_type=0, seq=seq, timestamp=0, ssrc=1))
        send_fast(pkt)
        send_public(pkt)
    assert fast == public and len(fast[0]) == 172 + 10
    with pytest.raises(OSError, match="too long for SRTP"):
        send_fast(bytes(1400))


@pytest.mark.sipp
async def test_reinvite_rekeys_and_a_plain_reoffer_is_refused(
    endpoint: SipEndpoint, tmp_path: Path, sipp_bin: str
) -> None:
    """A real SIPp callee re-keys mid-call (RFC 4568 §7.1.4): our answer keeps our key
    under its tag, its digits under the new key count; a plain re-offer gets 488."""
    suite = "AES_CM_128_HMAC_SHA1_80"
    key1, key2 = secrets.token_bytes(30), secrets.token_bytes(30)
    sinks = [RtpSink.open(), RtpSink.open()]
    keys = {
        "sink1": str(sinks[0].port),
        "sink2": str(sinks[1].port),
        "key1": base64.b64encode(key1).decode(),
        "key2": base64.b64encode(key2).decode(),
    }
    uas = SippUas(HERE / "uas_srtp_rekey.xml", tmp_path, keys=keys, max_calls=1)
    uas.start()
    clock = RtpClock()
    base = random.randrange(40000, 59000, 2)
    ctx = CallContext(
        sip=endpoint, clock=clock, ports=PortAllocator(base, base + 20), rtp_bind_host="127.0.0.1"
    )
    prompt = await prepare_prompt([{"pause": 3.0}])
    job = replace(job_to(uas.uri("alice"), max_duration=8), sip={"srtp": "required"})
    try:
        call = asyncio.create_task(place_call(job, prompt, ctx), name="test-srtp-rekey")
        for _ in range(150):  # the stream moved to sink2: the re-key is applied
            if sinks[1].packets:
                break
            await asyncio.sleep(0.02)
        invite = uas.received()[0]
        our_port = int(re.findall(r"^m=audio (\d+) ", invite, re.M)[0])
        rekeyed = _peer(suite, key2, inbound=False)
        for i in range(6):
            payload = build_event(4, end=i >= 3, duration=160 * min(i + 1, 4))
            rtp = build_rtp(payload, payload_type=101, seq=100 + i, timestamp=5000, ssrc=77)
            sinks[1].rtp.sendto(rekeyed.protect(rtp), ("127.0.0.1", our_port))
        report = await asyncio.wait_for(call, 15)
        rc = await asyncio.to_thread(uas.wait, 5)
    finally:
        uas.stop()
        await clock.stop()
        for s in sinks:
            s.close()
    assert rc == 0, uas.errors()  # SIPp saw 200, 200 (re-key), 488 (plain), BYE
    assert report.outcome is Outcome.ANSWERED and report.srtp == suite
    assert report.dtmf == "4"  # sent under the new key
    ours = [a for a in re.findall(r"^a=crypto:(\d+) (\S+) inline:(\S+)", invite, re.M)]
    assert [(tag, name) for tag, name, _ in ours][0] == ("1", suite)
    our_key = base64.b64decode(ours[0][2])
    answers = [m for m in uas.received() if m.startswith("SIP/2.0 200") and "m=audio" in m]
    assert len(answers) == 1, answers  # the 200 to the re-key (the 2xx to BYE has no SDP)
    assert f"a=crypto:5 {suite} inline:{ours[0][2]}" in answers[0]
    assert " RTP/SAVP " in answers[0]
    # our stream, before and after the move, opens with our one key: no new one mid-call
    opener = _peer(suite, our_key, inbound=True)
    assert sinks[0].packets and sinks[1].packets
    for s in sinks:
        for p in s.packets:
            opener.unprotect(p.data)
