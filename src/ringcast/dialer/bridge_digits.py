"""Digits during a bridged transfer (issue 17).

While two legs are bridged (:class:`ringcast.rtp.relay.Bridge`) the relay reads
the callee's socket, so its own session no longer sees RFC 4733 events:
:func:`hear_digits` lets the callee→agent direction also hand each event's
digit to the call's record (once per event: RFC 4733 §2.5.1.4 sends the end
packet three times, §2.5.1.3 repeats the start), outside the clock tick.

An agent may send its digits as SIP INFO (``application/dtmf-relay``) instead
of RFC 4733: :func:`relay_info_digit` turns one into RFC 4733 packets (§2.5:
a start, updates, three end packets, one per tick) on the agent→callee
direction, which sends them with the callee's telephone-event type like the
events it relays. A callee that negotiated no telephone-event gets none.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

from ringcast.media.codecs import FRAME_SAMPLES
from ringcast.rtp.packet import DTMF_EVENTS, RTP_HEADER_SIZE, build_event, event_code, payload_span
from ringcast.rtp.relay import RelayLeg

log = logging.getLogger(__name__)

INFO_TICKS = 4  # 20 ms ticks an INFO digit lasts before its end packets (80 ms)
END_REPEATS = 3  # RFC 4733 §2.5.1.4: the end packet is sent three times
_keys = itertools.count(1)  # INFO digits' event keys: negative, never an RTP timestamp


def hear_digits(leg: RelayLeg, on_digit: Callable[[str], None]) -> None:
    """Also give `on_digit` every digit the leg's source sends as RFC 4733 events,
    each once, called soon on the event loop (never inside a clock tick). Call it
    before the bridge starts: the leg reads through ``leg.on_packet``."""
    relay = leg.on_packet
    event_pts = leg.in_event_pts
    loop = asyncio.get_running_loop()
    # (SSRC, timestamp) of the event counted last: the session's own, so the rest of
    # the digit that started the transfer (its end packets) is not counted again
    last: tuple[int, int] | None = leg.source.last_event

    def on_packet(data: bytes) -> None:
        nonlocal last
        relay(data)
        if len(data) < RTP_HEADER_SIZE or data[1] & 0x7F not in event_pts:
            return
        pos, end = payload_span(data)
        if end - pos < 4 or data[pos] >= len(DTMF_EVENTS):
            return
        key = (int.from_bytes(data[8:12], "big"), int.from_bytes(data[4:8], "big"))
        if key == last:
            return  # a repeat of the event already counted
        last = key
        loop.call_soon(on_digit, DTMF_EVENTS[data[pos]])

    leg.on_packet = on_packet  # type: ignore[method-assign]


def info_packets(digit: str) -> list[bytes]:
    """The telephone-event payloads of one INFO digit, one per tick (RFC 4733 §2.5)."""
    code = event_code(digit)
    out = [build_event(code, end=False, duration=n * FRAME_SAMPLES) for n in range(1, INFO_TICKS)]
    end = build_event(code, end=True, duration=INFO_TICKS * FRAME_SAMPLES)
    return out + [end] * END_REPEATS


def relay_info_digit(leg: RelayLeg, digit: str) -> bool:
    """Queue `digit` (from an INFO) as RFC 4733 packets towards the leg's target;
    False when the target takes no telephone-event or it is no DTMF digit."""
    if leg.out_event_pt is None:
        return False
    try:
        payloads = info_packets(digit)
    except ValueError:
        return False
    key = -next(_keys)  # one event: its packets share the key, no RTP timestamp equals it
    leg.put_event(payloads, key)
    return True
