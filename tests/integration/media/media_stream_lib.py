"""What the callee received: a UDP socket the test owns, and checks on its packets."""

from __future__ import annotations

import asyncio
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr

from ringcast.dialer.call import CallJob
from ringcast.media.codecs import get_codec
from ringcast.rtp.packet import parse_event, parse_rtp

sys.path.insert(0, str(Path(__file__).parents[2] / "unit" / "media"))
from media_http import (  # noqa: E402
    MediaServer,
    Route,
    encode_audio,
    make_signal,
    media_server,
)

__all__ = [
    "MediaServer",
    "Received",
    "RtpSink",
    "Route",
    "encode_audio",
    "make_signal",
    "media_server",
    "normalized_xcorr",
]


@dataclass
class Received:
    at: float
    data: bytes
    addr: tuple[str, int]


@dataclass
class RtpSink:
    """An RTP socket (and RTCP at port+1) on 127.0.0.1 that records what arrives."""

    rtp: socket.socket
    rtcp: socket.socket
    packets: list[Received] = field(default_factory=list)
    rtcp_packets: list[bytes] = field(default_factory=list)

    @classmethod
    def open(cls) -> RtpSink:
        for _ in range(100):
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtp.bind(("127.0.0.1", 0))
            port = rtp.getsockname()[1]
            if port % 2 or port >= 65535:
                rtp.close()
                continue
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind(("127.0.0.1", port + 1))
            except OSError:
                rtp.close()
                rtcp.close()
                continue
            rtp.setblocking(False)
            rtcp.setblocking(False)
            sink = cls(rtp, rtcp)
            loop = asyncio.get_running_loop()
            loop.add_reader(rtp.fileno(), sink._read_rtp)
            loop.add_reader(rtcp.fileno(), sink._read_rtcp)
            return sink
        raise RuntimeError("no free even/odd port pair on 127.0.0.1")

    @property
    def port(self) -> int:
        return int(self.rtp.getsockname()[1])

    def _read_rtp(self) -> None:
        while True:
            try:
                data, addr = self.rtp.recvfrom(2048)
            except BlockingIOError:
                return
            self.packets.append(Received(time.monotonic(), data, addr))

    def _read_rtcp(self) -> None:
        while True:
            try:
                data, _ = self.rtcp.recvfrom(2048)
            except BlockingIOError:
                return
            self.rtcp_packets.append(data)

    async def first_sender_port(self, within: float = 5.0) -> int:
        """Wait (up to `within` s) for the first RTP packet; the port it came from."""
        for _ in range(max(1, round(within / 0.02))):
            if self.packets:
                break
            await asyncio.sleep(0.02)
        assert self.packets, "no RTP from ringcast"
        return int(self.packets[0].addr[1])

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for s in (self.rtp, self.rtcp):
            loop.remove_reader(s.fileno())
            s.close()

    def send_event(self, to_port: int, digit_event: int, ts: int, seq: int) -> int:
        """Press a key like a phone: 3 RFC 4733 packets then 3 end packets (PT 101)."""
        from ringcast.rtp.packet import build_event, build_rtp

        for i in range(6):
            payload = build_event(digit_event, end=i >= 3, duration=160 * min(i + 1, 4))
            pkt = build_rtp(
                payload, payload_type=101, seq=seq, timestamp=ts, ssrc=0x5EED, marker=i == 0
            )
            self.rtp.sendto(pkt, ("127.0.0.1", to_port))
            seq += 1
        return seq

    # -- checks -------------------------------------------------------------------------

    def check_stream(self, audio_pt: int, dtmf_pt: int | None = None) -> list[bytes]:
        """Assert RFC 3550 pacing/numbering; return the audio payloads in order."""
        parsed = [parse_rtp(p.data) for p in self.packets]
        assert parsed, "no RTP received"
        assert len({p.ssrc for p in parsed}) == 1
        assert parsed[0].marker, "first packet must carry the marker bit"
        seqs = [p.seq for p in parsed]
        assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False)), (
            "sequence numbers not contiguous"
        )
        audio = [p for p in parsed if p.payload_type == audio_pt]
        other = {p.payload_type for p in parsed} - {audio_pt, dtmf_pt}
        assert not other, f"unexpected payload types {other}"
        first = audio[0]
        for p in audio:
            steps = (p.seq - first.seq) & 0xFFFF
            assert (p.timestamp - first.timestamp) & 0xFFFFFFFF == 160 * steps, (
                "timestamp is not +160 per 20 ms packet"
            )
            assert len(p.payload) == 160
        gaps = [b.at - a.at for a, b in zip(self.packets, self.packets[1:], strict=False)]
        median = statistics.median(gaps)
        assert 0.018 <= median <= 0.022, f"median inter-packet gap {median * 1e3:.1f} ms"
        return [p.payload for p in audio]

    def events(self, dtmf_pt: int) -> list[tuple[int, str, bool, int]]:
        """(timestamp, digit, end, duration) of every RFC 4733 packet received."""
        out = []
        for p in self.packets:
            pkt = parse_rtp(p.data)
            if pkt.payload_type == dtmf_pt:
                ev = parse_event(pkt.payload)
                out.append((pkt.timestamp, ev.digit or "?", ev.end, ev.duration))
        return out


def decode(payloads: list[bytes], codec: str) -> np.ndarray:
    pcm = get_codec(codec).decode(b"".join(payloads))
    return pcm.astype(np.float64) / 32768.0


def to_8k(frames: np.ndarray, rate: int) -> np.ndarray:
    mono = frames.mean(axis=1) if frames.ndim == 2 else frames
    return np.asarray(soxr.resample(mono.astype(np.float64), rate, 8000), dtype=np.float64)


def normalized_xcorr(received: np.ndarray, reference: np.ndarray) -> float:
    """Peak normalized cross-correlation over all lags (1.0 = identical shape)."""
    n = received.size + reference.size
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(received, size) * np.conj(np.fft.rfft(reference, size)), size)
    lag = int(np.argmax(np.abs(corr)))
    if lag >= size - reference.size:
        lag -= size
    if lag >= 0:
        a = received[lag : lag + reference.size]
        b = reference[: a.size]
    else:
        b = reference[-lag : -lag + received.size]
        a = received[: b.size]
    return float(abs(np.dot(a, b)) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


def job_to(uri: str, *, max_duration: int = 10) -> CallJob:
    """One dialer job (call c1 of request r1, attempt 1, 5 s ring timeout) to `uri`."""
    return CallJob(
        call_id="c1",
        request_id="r1",
        to=uri,
        from_="me",
        attempt=1,
        ring_timeout=5,
        max_duration=max_duration,
    )
