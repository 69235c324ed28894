"""SDP offer/answer for one audio stream (RFC 3264), against captured bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiosipua.message import SipMessage
from aiosipua.sdp import serialize_sdp

from ringcast.sip.sdp import (
    MediaAnswer,
    MediaOffer,
    build_answer_message,
    build_offer,
    parse_answer,
    sdp_session_version,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "sip"


def body(name: str) -> bytes:
    return SipMessage.parse((DATA / name).read_bytes()).body


def test_offer_matches_captured_invite_body() -> None:
    captured = body("ringcast_invite.sip")
    session_id = captured.split(b"o=ringcast ", 1)[1].split(b" ", 1)[0].decode()
    built = build_offer(MediaOffer("127.0.0.1", 40000), session_version=1, session_id=session_id)
    assert built == captured


def test_offer_lines() -> None:
    sdp = build_offer(
        MediaOffer("192.0.2.10", 20000, codecs=["PCMA"], telephone_event=False),
        session_version=7,
        session_id="42",
    ).decode()
    assert sdp.splitlines() == [
        "v=0",
        "o=ringcast 42 7 IN IP4 192.0.2.10",
        "s=ringcast",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        "m=audio 20000 RTP/AVP 8",
        "a=rtpmap:8 PCMA/8000",
        "a=ptime:20",
        "a=sendrecv",
    ]
    assert sdp.endswith("\r\n")
    assert sdp_session_version(sdp.encode()) == 7


def test_offer_rejects_unknown_codec() -> None:
    with pytest.raises(ValueError) as info:
        build_offer(MediaOffer("127.0.0.1", 1, codecs=["OPUS"]), session_version=1)
    assert str(info.value) == "unsupported codec 'OPUS': ringcast offers PCMU and PCMA"


def test_answer_from_captured_200() -> None:
    answer = parse_answer(body("sipp_200_ok_sdp.sip"), ["PCMU", "PCMA"])
    assert answer == MediaAnswer(
        host="127.0.0.1",
        port=6004,
        payload_type=0,
        codec="PCMU",
        clock_rate=8000,
        dtmf_payload_type=101,
    )


def test_answer_from_captured_183_picks_pcma() -> None:
    answer = parse_answer(body("sipp_183_early_pcma.sip"), ["PCMU", "PCMA"])
    assert (answer.codec, answer.payload_type, answer.dtmf_payload_type) == ("PCMA", 8, 101)


def test_answer_order_is_the_answerers() -> None:
    sdp = (
        b"v=0\r\no=x 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\n"
        b"m=audio 5004 RTP/AVP 8 0\r\nc=IN IP4 10.0.0.2\r\n"
    )
    answer = parse_answer(sdp, ["PCMU", "PCMA"])
    assert (answer.host, answer.port, answer.codec) == ("10.0.0.2", 5004, "PCMA")
    assert answer.dtmf_payload_type is None


@pytest.mark.parametrize(
    ("sdp", "message"),
    [
        (b"v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n", "SDP answer has no audio stream"),
        (
            b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 0 RTP/AVP 0\r\n",
            "SDP answer rejected the audio stream",
        ),
        (b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n", "SDP answer has no connection address"),
        (
            b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 18 101\r\n"
            b"a=rtpmap:18 G729/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
            "SDP answer has no common codec (offered PCMU,PCMA; answered G729,telephone-event)",
        ),
        (b"\xff\xfe", "SDP answer is not UTF-8 text"),
    ],
)
def test_answer_errors_have_exact_messages(sdp: bytes, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_answer(sdp, ["PCMU", "PCMA"])
    assert str(info.value) == message


def _sdp(session: str = "", media: str = "", conn: str = "192.0.2.7", extra: str = "") -> bytes:
    text = (
        f"v=0\r\no=x 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 {conn}\r\nt=0 0\r\n{session}"
        f"m=audio 5004 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n{media}{extra}"
    )
    return text.encode()


@pytest.mark.parametrize(
    ("sdp", "direction", "receives"),
    [
        (_sdp(), "sendrecv", True),
        (_sdp(media="a=sendonly\r\n"), "sendonly", False),
        (_sdp(media="a=recvonly\r\n"), "recvonly", True),
        (_sdp(media="a=inactive\r\n"), "inactive", False),
        (_sdp(session="a=inactive\r\n"), "inactive", False),  # session level
        (_sdp(session="a=sendonly\r\n", media="a=sendrecv\r\n"), "sendrecv", True),  # media wins
        (_sdp(conn="0.0.0.0"), "sendonly", False),  # RFC 3264 §8.4 old-style hold
        (_sdp(conn="0.0.0.0", media="a=recvonly\r\n"), "inactive", False),
    ],
)
def test_answer_direction(sdp: bytes, direction: str, receives: bool) -> None:
    answer = parse_answer(sdp, ["PCMU"])
    assert (answer.direction, answer.receives) == (direction, receives)


@pytest.mark.parametrize(
    ("theirs", "ours"),
    [
        ("sendrecv", "sendrecv"),
        ("sendonly", "recvonly"),
        ("recvonly", "sendonly"),
        ("inactive", "inactive"),
    ],
)
def test_answer_mirrors_direction_and_rejects_extra_m_lines(theirs: str, ours: str) -> None:
    video = "m=video 5006 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    text = "m=text 5008 RTP/AVP 98\r\n"
    head, audio = _sdp(session=f"a={theirs}\r\n", extra=video).split(b"m=audio", 1)
    offer = head + text.encode() + b"m=audio" + audio
    remote = parse_answer(offer, ["PCMU"])
    assert [m.media for m in remote.media_lines] == ["text", "audio", "video"]
    message = build_answer_message(
        MediaOffer("192.0.2.10", 20000),
        remote,
        session_version=2,
        session_id="9",
        codecs=["PCMU"],
        dtmf_payload_type=101,
    )
    lines = serialize_sdp(message).splitlines()
    m_lines = [line for line in lines if line.startswith("m=")]
    assert m_lines == [
        "m=text 0 RTP/AVP 98",
        "m=audio 20000 RTP/AVP 0 101",
        "m=video 0 RTP/AVP 96",
    ]
    assert (
        f"a={ours}" in lines
        and sum(line in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive") for line in lines)
        == 1
    )
