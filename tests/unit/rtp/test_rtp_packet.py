"""RTP/RTCP/RFC 4733 wire formats against captured bytes (tests/data/media/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringcast.rtp.packet import (
    RTCP_BYE,
    RTCP_SDES,
    RTCP_SR,
    RtpHeaderTemplate,
    build_bye,
    build_event,
    build_rtp,
    build_sdes_cname,
    build_sender_report,
    event_code,
    ntp_timestamp,
    parse_event,
    parse_rtcp,
    parse_rtp,
    payload_span,
)

DATA = Path(__file__).parents[2] / "data" / "media"


def test_pcmu_packet_matches_capture() -> None:
    captured = (DATA / "rtp_pcmu_marker.bin").read_bytes()
    built = build_rtp(
        b"\xff" * 160, payload_type=0, seq=0x1234, timestamp=0xDEADBEEF, ssrc=0x01020304,
        marker=True,
    )  # fmt: skip
    assert built == captured
    pkt = parse_rtp(captured)
    assert (pkt.payload_type, pkt.marker, pkt.seq, pkt.timestamp, pkt.ssrc) == (
        0, True, 0x1234, 0xDEADBEEF, 0x01020304,
    )  # fmt: skip
    assert pkt.payload == b"\xff" * 160


def test_header_template_patches_in_place() -> None:
    tpl = RtpHeaderTemplate(ssrc=0xCAFEBABE, payload_type=8)
    assert (
        tpl.packet(b"\xd5" * 160, 0xFFFF, 0xFFFFFF60) == (DATA / "rtp_pcma_wrap.bin").read_bytes()
    )
    tpl.set_marker(True)
    tpl.set_payload_type(0)
    again = tpl.packet(b"\xff" * 160, 0x1234, 0xDEADBEEF)
    assert again[:2] == b"\x80\x80"
    assert parse_rtp(again).seq == 0x1234


def test_event_packet_matches_capture() -> None:
    captured = (DATA / "rtp_event_hash_end.bin").read_bytes()
    payload = build_event(event_code("#"), end=True, duration=800)
    built = build_rtp(payload, payload_type=101, seq=0x1235, timestamp=0xDEADBEEF, ssrc=0x01020304)
    assert built == captured
    ev = parse_event(parse_rtp(captured).payload)
    assert (ev.digit, ev.end, ev.volume, ev.duration) == ("#", True, 10, 800)


def test_event_codes() -> None:
    assert [event_code(d) for d in "0123456789*#abcd"] == list(range(16))
    with pytest.raises(ValueError, match="not a DTMF digit: 'x'"):
        event_code("x")


def test_sender_report_matches_capture() -> None:
    built = build_sender_report(
        ssrc=0x01020304, ntp=0xE9F1A2B380000000, rtp_timestamp=0xDEADBEEF, packets=250,
        octets=40000,
    )  # fmt: skip
    assert built == (DATA / "rtcp_sr.bin").read_bytes()


def test_compound_sr_sdes_bye_parses() -> None:
    data = (
        build_sender_report(ssrc=7, ntp=ntp_timestamp(0.0), rtp_timestamp=1, packets=2, octets=3)
        + build_sdes_cname(7, "ringcast@20000")
        + build_bye(7, "done")
    )
    parts = parse_rtcp(data)
    assert [p.packet_type for p in parts] == [RTCP_SR, RTCP_SDES, RTCP_BYE]
    assert all(len(p.body) % 4 == 0 for p in parts)
    assert parts[1].body[4:6] == bytes([1, len("ringcast@20000")])
    assert parts[2].body[:4] == (7).to_bytes(4, "big")


def test_ntp_timestamp_epoch() -> None:
    assert ntp_timestamp(0.0) == 2208988800 << 32
    assert ntp_timestamp(1.5) & 0xFFFFFFFF == 1 << 31


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x00", "RTP packet too short: 2 bytes"),
        (b"\x40" + b"\x00" * 11, "RTP version 1 is not 2"),
        (b"\x82" + b"\x00" * 11, "RTP packet too short for 2 CSRCs"),
        (b"\xa0" + b"\x00" * 11 + b"\x05", "RTP padding length 5 is invalid"),
    ],
)
def test_parse_rtp_errors(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rtp(data)


def test_parse_rtp_with_csrc_extension_and_padding() -> None:
    data = (
        bytes([0x80 | 0x20 | 0x10 | 1, 0x00]) + b"\x00\x01" + b"\x00\x00\x00\xa0" + b"\x00" * 4
        + b"\x00\x00\x00\x09"  # CSRC
        + b"\xbe\xde\x00\x01" + b"\x00" * 4  # one-word extension
        + b"\xff\xff" + b"\x00\x02"  # payload + 2 bytes of padding
    )  # fmt: skip
    pkt = parse_rtp(data)
    assert pkt.csrcs == (9,)
    assert pkt.payload == b"\xff\xff"
    # the per-packet paths' shortcut finds the same payload
    start, end = payload_span(data)
    assert data[start:end] == pkt.payload


def test_payload_span_of_plain_and_truncated_packets() -> None:
    plain = build_rtp(b"\x01" * 160, payload_type=0, seq=7, timestamp=160, ssrc=0x1234)
    assert payload_span(plain) == (12, 172)
    # an extension bit without room for the extension header: only the fixed header
    assert payload_span(bytes([0x90]) + b"\x00" * 13) == (12, 14)
    # padding that claims more than the packet: no payload
    start, end = payload_span(bytes([0xA0]) + b"\x00" * 10 + b"\x40")
    assert end <= start


def test_parse_rtcp_errors() -> None:
    with pytest.raises(ValueError, match="RTCP length 6 runs past the datagram"):
        parse_rtcp((DATA / "rtcp_sr.bin").read_bytes()[:20])
    with pytest.raises(ValueError, match="RTCP packet truncated at byte 0"):
        parse_rtcp(b"\x80")
