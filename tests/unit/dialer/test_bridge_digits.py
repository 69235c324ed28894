"""An INFO digit as RFC 4733 packets for the relay (issue 17): one event, its
duration growing a tick at a time, then the end packet three times (§2.5)."""

from __future__ import annotations

import pytest

from ringcast.dialer.bridge_digits import END_REPEATS, INFO_TICKS, info_packets
from ringcast.rtp.packet import parse_event


def test_an_info_digit_is_one_rfc4733_event() -> None:
    events = [parse_event(p) for p in info_packets("7")]
    assert [e.event for e in events] == [7] * (INFO_TICKS - 1 + END_REPEATS)
    assert [e.end for e in events] == [False] * (INFO_TICKS - 1) + [True] * END_REPEATS
    assert [e.duration for e in events] == [160, 320, 480, 640, 640, 640]
    assert [parse_event(p).event for p in info_packets("#")][:1] == [11]


def test_no_packets_for_what_is_no_digit() -> None:
    with pytest.raises(ValueError, match="not a DTMF digit"):
        info_packets("x")
