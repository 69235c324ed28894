"""Machine detection and in-band DTMF end to end: `ringcast serve` on SQLite calls a
SIPp callee that answers and plays a greeting (or DTMF tones) from a pcap this
test builds (RFC 3551 µ-law RTP, `play_pcap_audio`).

What ringcast sends back is captured on the loopback interface (an AF_PACKET
socket, root only, as the test machines run) and decoded: in `drop` mode the
voicemail must start after the machine's beep has ended and be the voicemail's
speech; in `hangup` mode no audio may be sent at all.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
from conftest import free_port, missing
from media_stream_lib import encode_audio, make_signal, normalized_xcorr, to_8k
from sipp import SippUas, answer_and_play

from e2e.server import MediaServer, RingcastServer, post
from e2e.test_webhooks_e2e import Receiver
from ringcast.media import tts
from ringcast.media.amd import MachineDetector
from ringcast.media.codecs import float_to_pcm16, get_codec
from ringcast.rtp.udp import attach_filter
from ringcast.webhooks.sign import generate_secret

RATE = 8000
GREETING = (
    "Hi, you have reached Dana. I cannot come to the phone right now. "
    "Please leave a message after the tone."
)
BEEP_HZ = 1000.0
BEEP_SECONDS = 0.4
VOICEMAIL = {"say": "This is the pharmacy: your order is ready.", "voice": "en-us"}
MESSAGE = make_signal(1.5, 16000)  # a recorded voicemail: what the machine must get
PLAYLIST = [{"say": "Hello, this is the playlist.", "voice": "en-us"}]
LONG = [*PLAYLIST, {"pause": 6}]


def write_pcap(path: Path, pcm: np.ndarray, port: int = 6000) -> None:
    """`pcm` (8 kHz) as RFC 3551 PCMU RTP, 20 ms a packet, in an Ethernet pcap."""
    payload = get_codec("PCMU").encode(pcm.astype(np.int16))
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    ssrc, seq0, ts0 = 0x1234ABCD, 1000, 5000
    for i in range(len(payload) // 160):
        rtp = struct.pack("!BBHII", 0x80, 0x80 if i == 0 else 0, seq0 + i, ts0 + 160 * i, ssrc)
        rtp += payload[160 * i : 160 * (i + 1)]
        udp = struct.pack("!HHHH", port, port, 8 + len(rtp), 0) + rtp
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
            socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1"),
        )  # fmt: skip
        frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
        usec = i * 20_000
        out.append(
            struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame), len(frame))
        )
        out.append(frame)
    path.write_bytes(b"".join(out))


def callee(tmp_path: Path, pcm: np.ndarray, *, telephone_event: bool) -> SippUas:
    pcap = tmp_path / "callee.pcap"
    write_pcap(pcap, pcm)
    scenario = answer_and_play(
        tmp_path / "uas_pcap.xml", f'play_pcap_audio="{pcap}"', telephone_event=telephone_event
    )
    media_port = free_port()
    return SippUas(
        scenario, tmp_path, max_calls=1, extra=["-mi", "127.0.0.1", "-mp", str(media_port)]
    )


def speech(text: str, voice: str = "en-us") -> np.ndarray:
    s = tts.synthesize(text, voice=voice)
    return np.asarray(soxr.resample(s.samples, s.sample_rate, RATE), dtype=np.float64)


def tone(hz: float, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return amp * np.sin(2 * np.pi * hz * t)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE))


def line(x: np.ndarray) -> np.ndarray:
    """A little line noise (40 dB under full scale), as 16-bit PCM."""
    noise = np.random.default_rng(16).standard_normal(len(x)) * 0.003
    return float_to_pcm16((x + noise).astype(np.float32))


def machine_greeting() -> tuple[np.ndarray, float]:
    """A machine's greeting, a beep, then silence; and where the beep ends (s)."""
    head = np.concatenate([silence(0.4), speech(GREETING), silence(0.6)])
    beep_end = (len(head) / RATE) + BEEP_SECONDS
    return line(np.concatenate([head, tone(BEEP_HZ, BEEP_SECONDS), silence(12.0)])), beep_end


def human_answer() -> np.ndarray:
    return line(np.concatenate([silence(0.4), speech("Hello?"), silence(8.0)]))


SO_RCVBUFFORCE = 33  # Linux <asm-generic/socket.h> (root: past net.core.rmem_max)
SOL_PACKET, PACKET_STATISTICS = 263, 6  # Linux <linux/if_packet.h>


def _attach_udp_port_filter(sock: socket.socket, port: int) -> None:
    """Classic BPF on an AF_PACKET socket of `lo`: IPv4 UDP to or from `port` only
    (what ``tcpdump -dd 'ip and udp port P'`` compiles to, without fragments)."""
    prog = [
        (0x28, 0, 0, 12),  # ldh [12]: ethertype
        (0x15, 0, 8, 0x0800),  # IPv4, else drop
        (0x30, 0, 0, 23),  # ldb [23]: IP protocol
        (0x15, 0, 6, 17),  # UDP, else drop
        (0xB1, 0, 0, 14),  # ldxb 4*([14]&0xf): IP header length
        (0x48, 0, 0, 14),  # ldh [x + 14]: source port
        (0x15, 2, 0, port),  # ours: accept
        (0x48, 0, 0, 16),  # ldh [x + 16]: destination port
        (0x15, 0, 1, port),  # ours: accept, else drop
        (0x06, 0, 0, 0x40000),  # accept (up to 256 KB of the frame)
        (0x06, 0, 0, 0),  # drop
    ]
    attach_filter(sock, prog)


class LoopbackCapture:
    """UDP datagrams on `lo` to or from `port`, with their arrival times (root only)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.packets: list[tuple[float, int, int, bytes]] = []  # (t, src, dst, payload)
        self.dropped = 0  # frames the socket dropped (its buffer was full), read at close
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        # Only this port's UDP reaches the socket (filtered in the kernel), in a buffer
        # that holds seconds of it: other tests' RTP on `lo` once overflowed the default
        # buffer of a socket that saw all of it, and the lost packets shifted the audio.
        _attach_udp_port_filter(self.sock, port)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 * 1024 * 1024)
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lo-capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            if addr[2] == socket.PACKET_OUTGOING or frame[12:14] != b"\x08\x00":
                continue  # each loopback packet shows twice; keep the incoming copy
            ip = frame[14:]
            if ip[9] != 17:
                continue
            udp = ip[4 * (ip[0] & 0x0F) :]
            src, dst = struct.unpack("!HH", udp[:4])
            if self.port in (src, dst):
                self.packets.append((time.monotonic(), src, dst, bytes(udp[8:])))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        # struct tpacket_stats: packets passed to the socket, and those it dropped
        stats = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        _, self.dropped = struct.unpack("II", stats)
        self.sock.close()

    def sent_to(self) -> list[tuple[float, bytes]]:
        """RTP (even ports) that arrived at `port`: what ringcast sent the callee."""
        return [(t, p) for t, _, dst, p in self.packets if dst == self.port and len(p) >= 12]

    def sent_from(self) -> list[tuple[float, bytes]]:
        return [(t, p) for t, src, _, p in self.packets if src == self.port and len(p) >= 12]


@contextlib.contextmanager
def serve(tmp_path: Path, **kwargs: Any) -> Iterator[RingcastServer]:
    """`ringcast serve` on SQLite, given time to start on a machine busy with other tests."""
    rc = RingcastServer(tmp_path, **kwargs)
    try:
        yield rc.start(timeout=120)
    finally:
        rc.stop()


def _capture(uas: SippUas) -> LoopbackCapture | None:
    if os.geteuid() != 0:
        return None
    return LoopbackCapture(int(uas.extra[uas.extra.index("-mp") + 1]))


def decided_at_ms(pcm: np.ndarray) -> float:
    """Where in `pcm` (as the callee sends it, through G.711 µ-law) the detector
    decides: the call's `machine_detection_ms` cannot be less."""
    codec = get_codec("PCMU")
    heard = codec.decode(codec.encode(pcm))
    detector = MachineDetector(timeout=6)
    for i in range(0, len(heard), 640):
        detector.feed(heard[i : i + 640])
        if detector.decision is not None:
            return detector.decision.at_ms
    raise AssertionError("the detector decided nothing on this audio")


def _call(rc: RingcastServer, uas: SippUas, **extra: object) -> dict[str, object]:
    body = {"to": uas.uri("dana"), "from": "me", "playlist": PLAYLIST}
    body.update(extra)
    request_id = post(rc, body)
    status = rc.wait_ready(request_id, 180)
    record = status["record"]
    assert isinstance(record, dict)
    return record


@pytest.mark.sipp
def test_detect_machine_then_human(sipp_bin: str, tmp_path: Path) -> None:
    """detect: the record says who answered; the playlist plays either way (here it
    lasts longer than the decision needs: a call whose playlist ends first is `unknown`)."""
    greeting, _ = machine_greeting()
    with serve(tmp_path) as rc:
        with callee(tmp_path, greeting, telephone_event=True) as uas:
            record = _call(rc, uas, machine_detection={"mode": "detect"}, playlist=LONG)
        assert record["answered_by"] == "machine", (record, rc.output())
        # answer -> decision, to the millisecond: not before the audio that decided
        # (it once came from clocks cut to the second: up to 1 s short), less SIPp's
        # playout jitter (its pcap's first packets came up to 40 ms early), and
        # within a few seconds of it
        at = decided_at_ms(greeting)
        assert at - 100 <= int(record["machine_detection_ms"]) <= at + 3000, (record, at)  # type: ignore[call-overload]
        assert "voicemail" not in record
        assert record["answered"] is True
        (tmp_path / "h").mkdir()
        human = human_answer()
        with callee(tmp_path / "h", human, telephone_event=True) as uas:
            record = _call(rc, uas, machine_detection={"mode": "detect"}, playlist=LONG)
        assert record["answered_by"] == "human", (record, rc.output())
        at = decided_at_ms(human)
        assert at - 100 <= int(record["machine_detection_ms"]) <= at + 3000, (record, at)  # type: ignore[call-overload]


@pytest.mark.sipp
def test_drop_plays_the_voicemail_after_the_beep(sipp_bin: str, tmp_path: Path) -> None:
    greeting, beep_end = machine_greeting()
    (tmp_path / "message.wav").write_bytes(encode_audio(MESSAGE, 16000, "WAV"))
    with (
        MediaServer(tmp_path) as media,
        serve(tmp_path) as rc,
        callee(tmp_path, greeting, telephone_event=True) as uas,
    ):
        cap = _capture(uas)
        try:
            voicemail = [{"play": media.url("message.wav")}]
            record = _call(
                rc, uas, machine_detection={"mode": "drop", "timeout": 6}, voicemail=voicemail
            )
        finally:
            if cap is not None:
                cap.close()
    assert record["answered_by"] == "machine", (record, rc.output())
    assert record["voicemail"] == "left", record
    if cap is None:  # record checked, audio not: a skip here, a failure under CI=true
        missing("root (capturing the RTP on lo)")
    assert cap is not None
    heard = cap.sent_from()
    said = [(t, p) for t, p in cap.sent_to() if p[1] & 0x7F == 0]
    assert heard and said, "no RTP captured"
    start = heard[0][0]  # the callee's first packet: its greeting's time 0
    first_said = said[0][0] - start
    assert first_said >= beep_end - 0.1, (first_said, beep_end)  # not into the greeting
    assert cap.dropped == 0, f"the capture lost {cap.dropped} packets: the audio cannot be judged"
    audio = get_codec("PCMU").decode(b"".join(p[12:] for _, p in said)).astype(np.float64)
    assert normalized_xcorr(audio / 32768, to_8k(MESSAGE, 16000)) >= 0.9


@pytest.mark.sipp
def test_hangup_sends_no_audio_to_a_machine(sipp_bin: str, tmp_path: Path) -> None:
    """hangup: BYE after the decision, no RTP audio sent; call.machine_detected posted."""
    greeting, _ = machine_greeting()
    secret = generate_secret()
    env = {"RINGCAST_WEBHOOK_SECRET": secret}
    with (
        Receiver(lambda: secret) as rx,
        serve(tmp_path, env=env) as rc,
        callee(tmp_path, greeting, telephone_event=True) as uas,
    ):
        cap = _capture(uas)
        try:
            record = _call(rc, uas, machine_detection={"mode": "hangup"}, callback_url=rx.url())
        finally:
            if cap is not None:
                cap.close()
        bye = [m for m in uas.received() if m.startswith("BYE ")]
        (event,) = rx.wait_for("call.machine_detected")
    assert event["verified"] == event["id"]
    assert event["payload"]["data"]["answered_by"] == "machine"
    assert event["payload"]["data"]["machine_detection_ms"] == record["machine_detection_ms"]
    assert record["answered_by"] == "machine", (record, rc.output())
    assert len(bye) == 1
    assert "voicemail" not in record
    # hung up before the callee's audio (greeting, beep, 12 s of silence) ran out
    assert int(record["duration"]) < len(greeting) / RATE - 10  # type: ignore[call-overload]
    if cap is None:  # record checked, audio not: a skip here, a failure under CI=true
        missing("root (capturing the RTP on lo)")
    assert cap is not None
    assert cap.sent_from(), "the callee's greeting was not captured"
    assert [p for _, p in cap.sent_to() if p[1] & 0x7F == 0] == []


@pytest.mark.sipp
def test_drop_plays_the_playlist_to_a_human(sipp_bin: str, tmp_path: Path) -> None:
    with serve(tmp_path) as rc:
        with callee(tmp_path, human_answer(), telephone_event=False) as uas:
            record = _call(rc, uas, machine_detection={"mode": "drop"}, voicemail=[VOICEMAIL])
    assert record["answered_by"] == "human", (record, rc.output())
    assert "voicemail" not in record


@pytest.mark.sipp
def test_inband_dtmf_reaches_the_record(sipp_bin: str, tmp_path: Path) -> None:
    """No telephone-event in the callee's SDP: tones 4 and 2 (120 ms) in its audio."""
    from ringcast.media.prompt import dtmf_tone

    audio = np.concatenate(
        [silence(2.0), dtmf_tone("4", 0.12), silence(0.1), dtmf_tone("2", 0.12), silence(6.0)]
    )
    playlist = [{"say": "Press two digits."}, {"gather": {"digits": 2, "timeout": 6}}]
    with (
        serve(tmp_path) as rc,
        callee(tmp_path, line(audio), telephone_event=False) as uas,
    ):
        request_id = post(rc, {"to": uas.uri("dana"), "from": "me", "playlist": playlist})
        record = rc.wait_ready(request_id, 180)["record"]
    assert record["dtmf"] == "42", (record, rc.output())
    assert "answered_by" not in record
