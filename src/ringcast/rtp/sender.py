"""The outgoing RTP stream of one call: a prompt's packets, one per clock tick, and RTCP.

RTP per RFC 3550: sequence number and timestamp +160 per 20 ms packet at 8 kHz,
marker on the first packet of a talkspurt and of each RFC 4733 event, RTCP
sender reports about every 5 s (SR + SDES CNAME, a BYE on close, §6.1). A
mixin of :class:`ringcast.rtp.session.MediaSession`: it reads and advances the
session's stream counters; the session owns them and the sockets.
"""

from __future__ import annotations

import logging
import random
import struct
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING

from ringcast.inet import unmapped
from ringcast.media.codecs import FRAME_SAMPLES, Pcm16, get_codec
from ringcast.media.digits import DigitRouter
from ringcast.media.prompt import (
    AudioSegment,
    DtmfSegment,
    GatherSegment,
    Prompt,
    RecordSegment,
)
from ringcast.media.recorder import Recorder
from ringcast.rtp.clock import RtpClock
from ringcast.rtp.packet import (
    build_bye,
    build_event,
    build_sdes_cname,
    build_sender_report,
    event_code,
    ntp_timestamp,
)
from ringcast.rtp.srtp import SrtpContext

if TYPE_CHECKING:
    import socket

RTCP_INTERVAL = 5.0  # seconds between sender reports, randomized 0.5x-1.5x (RFC 3550 §6.3)
END_RETRANSMITS = 2  # extra copies of an RFC 4733 end packet (§2.5.1.4 recommends 3 in all)
SYNC_EVERY = 50  # packets between write-backs of the fast path's counters (1 s)
RECORD_GRACE = 0.5  # seconds a record segment waits past its max for late audio

_SEQ_TS = struct.Struct("!HI")
Packet = bytes | bytearray  # header + payload, as handed to socket.send
AudioListener = Callable[[Pcm16], None]  # gets the callee's decoded audio, packet by packet
_U32 = 0xFFFFFFFF
_log = logging.getLogger(__name__)


class StreamSender:
    """Sends a prompt as RTP on the clock's ticks (the session's outgoing half)."""

    # the session's fields this half reads and writes (MediaSession sets them; its
    # __slots__ hold them)
    _clock: RtpClock
    _rtcp_sock: socket.socket
    _rtcp_remote: tuple[str, int] | None
    _srtp: SrtpContext | None
    _router: DigitRouter | None
    _recorder: Recorder | None
    recordings: list[Recorder]
    local_port: int
    ssrc: int
    _seq: int
    _ts: int
    payload_type: int
    dtmf_payload_type: int | None
    codec: str
    packets_sent: int
    event_packets_sent: int
    rtcp_sent: int

    if TYPE_CHECKING:

        def listen(self, listener: AudioListener) -> None: ...

        def unlisten(self, listener: AudioListener) -> None: ...

    @property
    def octets_sent(self) -> int:
        """RTP payload octets sent (RFC 3550 §6.4.1 sender's octet count)."""
        audio = self.packets_sent - self.event_packets_sent
        return audio * get_codec(self.codec).bytes_per_frame + 4 * self.event_packets_sent

    def _packets(
        self, prompt: Prompt, start: int = 0
    ) -> Generator[Packet | None, int | None, None]:
        """Every packet of the prompt from segment `start`, one per clock tick (a
        generator: cheap to step; a barge-in closes it and starts another).

        The audio fast path keeps seq/timestamp/count in locals and writes them back
        to the session every SYNC_EVERY packets (and around DTMF and gather, which
        use the session's fields). After a hold, `_resume_tick` sends in the
        number of ticks missed: the timestamp jumps by as much and the marker is
        set (a hold inside an RFC 4733 event or its gap only delays it).
        """
        codec = self.codec
        pt = self.payload_type
        dtmf_pt = self.dtmf_payload_type
        silence = get_codec(codec).silence_frame()
        hdr = bytearray(struct.pack("!BBHII", 0x80, pt | 0x80, 0, 0, self.ssrc))  # marker on
        pack_into = _SEQ_TS.pack_into
        seq, ts, sent = self._seq, self._ts, self.packets_sent
        checkpoint = sent + SYNC_EVERY
        next_rtcp = sent + _rtcp_packets()
        marker = True
        in_locals = True  # False while a helper generator owns the session's counters
        router = self._router
        segments = prompt.segments
        try:
            for index in range(start, len(segments)):
                seg = segments[index]
                if router is not None:
                    router.enter(index)
                dtmf_pt = self.dtmf_payload_type  # a re-INVITE may have changed it
                if isinstance(seg, AudioSegment):
                    chunks = seg.chunks[codec]
                elif isinstance(seg, DtmfSegment) and dtmf_pt is None:
                    chunks = (seg.inband[codec],)  # no telephone-event: in-band Q.23 tones
                else:
                    self._seq, self._ts, self.packets_sent = seq, ts, sent
                    in_locals = False
                    if isinstance(seg, DtmfSegment) and dtmf_pt is not None:
                        for digit in seg.digits:
                            yield from self._event_packets(hdr, event_code(digit), seg, dtmf_pt)
                            hdr[1] = pt
                            for _ in range(seg.gap_frames - END_RETRANSMITS):
                                yield self._audio_packet(hdr, silence, pack_into)
                    elif isinstance(seg, GatherSegment):
                        yield from self._gather(seg, hdr, silence, pack_into, pt)
                    elif isinstance(seg, RecordSegment):
                        yield from self._record(seg, hdr, silence, pack_into, pt)
                    seq, ts, sent = self._seq, self._ts, self.packets_sent
                    in_locals = True
                    marker = False
                    continue
                for frames in chunks:
                    for payload in frames:
                        pack_into(hdr, 2, seq, ts)
                        seq = (seq + 1) & 0xFFFF
                        ts = (ts + FRAME_SAMPLES) & _U32
                        sent += 1
                        if sent >= checkpoint:
                            self._seq, self._ts, self.packets_sent = seq, ts, sent
                            checkpoint = sent + SYNC_EVERY
                            if sent >= next_rtcp:
                                self._send_rtcp()
                                next_rtcp = sent + _rtcp_packets()
                        skipped = yield hdr + payload
                        if marker:
                            hdr[1] = pt
                            marker = False
                        if skipped:  # resumed after a hold: a new talkspurt
                            ts = (ts + skipped * FRAME_SAMPLES) & _U32
                            hdr[1] = pt | 0x80
                            marker = True
        finally:
            if in_locals:
                self._seq, self._ts, self.packets_sent = seq, ts, sent

    def _audio_packet(
        self, hdr: bytearray, payload: bytes, pack_into: Callable[..., None]
    ) -> bytearray:
        pack_into(hdr, 2, self._seq, self._ts)
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + FRAME_SAMPLES) & _U32
        self.packets_sent += 1
        return hdr + payload

    def _event_packets(
        self, hdr: bytearray, event: int, seg: DtmfSegment, dtmf_pt: int
    ) -> Iterator[Packet]:
        """RFC 4733 §2.5: one event, its timestamp fixed at the start, duration growing,
        marker on the first packet, the end packet sent 1 + END_RETRANSMITS times."""
        start_ts = self._ts
        ev = bytearray(hdr)
        ev[1] = 0x80 | (dtmf_pt & 0x7F)
        for i in range(seg.tone_frames + END_RETRANSMITS):
            n = min(i + 1, seg.tone_frames)
            end = i + 1 >= seg.tone_frames
            _SEQ_TS.pack_into(ev, 2, self._seq, start_ts)
            self._seq = (self._seq + 1) & 0xFFFF
            self._ts = (self._ts + FRAME_SAMPLES) & _U32
            self.packets_sent += 1
            self.event_packets_sent += 1
            yield ev + build_event(event, end=end, duration=n * FRAME_SAMPLES)
            ev[1] = dtmf_pt & 0x7F

    def _gather(
        self,
        seg: GatherSegment,
        hdr: bytearray,
        silence: bytes,
        pack_into: Callable[..., None],
        pt: int,
    ) -> Generator[Packet, int | None, None]:
        """Silence until the gather has its digits (barge-in ones too), the callee
        opts out, or the timeout."""
        router = self._router
        for _ in range(max(1, round(seg.timeout / self._clock.ptime))):
            if router is not None and router.gather_done:
                return
            skipped = yield self._audio_packet(hdr, silence, pack_into)
            hdr[1] = pt
            if skipped:  # resumed after a hold (see _packets)
                self._ts = (self._ts + skipped * FRAME_SAMPLES) & _U32
                hdr[1] = pt | 0x80

    def _record(
        self,
        seg: RecordSegment,
        hdr: bytearray,
        silence: bytes,
        pack_into: Callable[..., None],
        pt: int,
    ) -> Generator[Packet, int | None, None]:
        """Silence while a :class:`Recorder` listens to the callee, until it stops
        (max, silence, a finish_on digit) or max + RECORD_GRACE of clock time (a
        callee sending no audio). Its audio is kept in `recordings` however the
        segment ends (a hang-up closes this generator)."""
        recorder = Recorder(seg.settings)
        self.recordings.append(recorder)
        self._recorder = recorder

        def listener(pcm: Pcm16) -> None:
            recorder.feed(pcm)

        self.listen(listener)
        try:
            for _ in range(max(1, round((seg.settings.max + RECORD_GRACE) / self._clock.ptime))):
                if recorder.done:
                    return
                skipped = yield self._audio_packet(hdr, silence, pack_into)
                hdr[1] = pt
                if skipped:  # resumed after a hold (see _packets)
                    self._ts = (self._ts + skipped * FRAME_SAMPLES) & _U32
                    hdr[1] = pt | 0x80
        finally:
            self._recorder = None
            self.unlisten(listener)
            recorder.close()

    def _send_rtcp(self, *, bye: bool = False) -> None:
        """A compound SR + SDES CNAME (+ BYE) to the callee's RTCP port (RFC 3550 §6.1)."""
        if self._rtcp_remote is None or unmapped(self._rtcp_remote[0]) == "0.0.0.0":
            return  # c=0.0.0.0: the callee named no address (RFC 3264 §8.4)
        pkt = build_sender_report(
            ssrc=self.ssrc,
            ntp=ntp_timestamp(),
            rtp_timestamp=self._ts,
            packets=self.packets_sent,
            octets=self.octets_sent,
        ) + build_sdes_cname(self.ssrc, f"ringcast@{self.local_port}")
        if bye:
            pkt += build_bye(self.ssrc)
        if self._srtp is not None:
            protected = self._srtp.protect_rtcp(pkt)  # SRTCP (RFC 3711 §3.4)
            if protected is None:
                return
            pkt = protected
        try:
            self._rtcp_sock.sendto(pkt, self._rtcp_remote)
            self.rtcp_sent += 1
        except OSError as exc:
            _log.debug("rtcp to %s not sent: %s", self._rtcp_remote, exc)


def _rtcp_packets() -> int:
    """Packets until the next SR: RTCP_INTERVAL randomized by 0.5-1.5 (RFC 3550 §6.3.1)."""
    return max(1, round(RTCP_INTERVAL * random.uniform(0.5, 1.5) / 0.020))
