"""Gather actions and transfers (issue 17) against SIPp callees and agents.

The callee SIPp's SDP answer names a UDP socket this test owns (`RtpPeer`): it
learns ringcast's RTP address from the first packet ringcast sends, then
speaks from there: the RFC 4733 digit "1" (the packets of
tests/data/media/rfc4733_1.pcap) and a 700 Hz tone. The agent SIPp likewise
names a second socket, which answers with an 1100 Hz tone in PCMA (the callee
talks PCMU: ringcast transcodes). Each side's received audio is decoded and
correlated with the other side's tone.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from conftest import free_port
from rtp_pcap import pcap_path, rfc4733_packets
from sipp import SippUas

from e2e.server import RingcastServer, post
from e2e.test_webhooks_e2e import Receiver
from ringcast.media.codecs import get_codec

pytestmark = pytest.mark.sipp

CALLEE_HZ, AGENT_HZ = 700.0, 1100.0
PEER_SECONDS = 12.0  # longest a test peer speaks


def pcap_packets(path: Path) -> list[bytes]:
    """The RTP payloads of a pcap's UDP records (Ethernet + IPv4 + UDP: 42 bytes)."""
    data = path.read_bytes()[24:]
    out = []
    while data:
        size = struct.unpack_from("<IIII", data)[2]
        out.append(data[16 + 42 : 16 + size])
        data = data[16 + size :]
    return out


class RtpPeer(threading.Thread):
    """A test-owned RTP endpoint: speaks a tone (and a digit) once ringcast has sent to it,
    keeps every packet it receives."""

    def __init__(
        self,
        codec: str,
        hz: float,
        digit_at: float | None = None,
        later: tuple[float, list[bytes]] | None = None,  # (when, RTP packets) of one more
    ) -> None:
        super().__init__(daemon=True)
        self.codec = get_codec(codec)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.005)
        self.port = self.sock.getsockname()[1]
        self.hz = hz
        self.digit_at = digit_at
        self.later = later
        self.received: list[bytes] = []
        self.remote: tuple[str, int] | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        t = np.arange(int(PEER_SECONDS * 8000)) / 8000
        pcm = (np.sin(2 * np.pi * self.hz * t) * 10000).astype(np.int16)
        audio = self.codec.encode(pcm)
        events = pcap_packets(pcap_path("1")) if self.digit_at is not None else []
        later_at, later = self.later if self.later is not None else (0.0, [])
        later = list(later)
        seq, ts, n, start = 1, 0, 0, 0.0
        deadline = time.monotonic() + 30
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                data, addr = self.sock.recvfrom(2048)
                self.received.append(data)
                if self.remote is None:
                    self.remote, start = addr, time.monotonic()
            except TimeoutError:
                pass
            if self.remote is None:
                continue
            due = int((time.monotonic() - start) / 0.020)
            while n <= due and (n + 1) * 160 <= len(audio):
                if self.digit_at is not None and events and n * 0.020 >= self.digit_at:
                    pkt = events.pop(0)
                elif later and n * 0.020 >= later_at:
                    pkt = later.pop(0)
                else:
                    hdr = struct.pack("!BBHII", 0x80, self.codec.payload_type, seq, ts, 0x1234)
                    pkt = hdr + audio[n * 160 : (n + 1) * 160]
                    seq, ts = seq + 1, ts + 160
                self.sock.sendto(pkt, self.remote)
                n += 1

    def __enter__(self) -> RtpPeer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(5)
        self.sock.close()

    def events(self) -> list[tuple[int, bool]]:
        """The RFC 4733 events received (payload type 101): (event, end) of each packet."""
        return [(p[12], bool(p[13] & 0x80)) for p in self.received if p[1] & 0x7F == 101]

    def tone_match(self, hz: float) -> float:
        """The best normalised match of `hz` over 0.5 s windows of each received audio
        stream (by SSRC): about 1.0 for that pure tone, near 0 for anything else."""
        streams: dict[int, list[bytes]] = {}
        for pkt in self.received:
            if pkt[1] & 0x7F == self.codec.payload_type:
                streams.setdefault(struct.unpack_from("!I", pkt, 8)[0], []).append(pkt[12:])
        best = 0.0
        for payloads in streams.values():
            x = self.codec.decode(b"".join(payloads)).astype(np.float64)
            w = np.exp(-2j * np.pi * hz * np.arange(4000) / 8000)
            for i in range(0, len(x) - 4000, 2000):
                seg = x[i : i + 4000]
                norm = np.linalg.norm(seg) * np.sqrt(2000)
                if norm > 0:
                    best = max(best, float(abs(np.dot(seg, w)) / norm))
        return best


def _callee(tmp_path: Path, peer: RtpPeer, scenario: str = "uas_bridge_callee.xml") -> SippUas:
    keys = {"rtp_port": str(peer.port), "codec_pt": "0"}
    return SippUas(scenario, tmp_path, keys=keys)


def _agent(tmp_path: Path, peer: RtpPeer, scenario: str = "uas_bridge_agent.xml") -> SippUas:
    keys = {"rtp_port": str(peer.port), "codec_pt": "8"}
    return SippUas(scenario, tmp_path, keys=keys)


def _body(callee: str, transfer: dict[str, Any]) -> dict[str, Any]:
    return {
        "to": callee,
        "playlist": [
            {"pause": 0.4},
            {
                "gather": {
                    "digits": 1,
                    "timeout": 8,
                    "actions": {"1": [transfer], "default": [{"pause": 0.3}]},
                }
            },
        ],
        "max_duration": 60,
    }


def test_bridged_transfer_relays_audio_both_ways(tmp_path: Path, sipp_bin: str) -> None:
    secret = tmp_path / "ringcast.db.webhook-secret"
    with (
        Receiver(lambda: secret.read_text().strip()) as rx,
        RtpPeer("PCMU", CALLEE_HZ, digit_at=0.3) as caller_side,
        RtpPeer("PCMA", AGENT_HZ) as agent_side,
        _callee(tmp_path, caller_side) as callee,
        _agent(tmp_path, agent_side) as agent,
        RingcastServer(tmp_path, env={"RINGCAST_WEBHOOK_SECRET": ""}) as rc,
    ):
        transfer = {"transfer": agent.uri("agent"), "timeout": 10, "record": True}
        body = {**_body(callee.uri("bob"), transfer), "callback_url": rx.url()}
        record = rc.wait_ready(post(rc, body), 45)["record"]
        digits = rx.wait_for("call.digits")
        transferred = rx.wait_for("call.transferred")
        metrics = httpx.get(f"{rc.base}/metrics", timeout=10).text
        recordings = record.get("recordings") or []
        wav = httpx.get(rc.base + recordings[0]["url"], timeout=10) if recordings else None
    assert all(e["verified"] == e["id"] for e in digits + transferred)
    assert digits[0]["payload"]["data"]["dtmf"] == "1", digits
    assert transferred[0]["payload"]["data"]["transfer"]["result"] == "answered", transferred
    assert 'ringcast_transfers_total{mode="bridge",result="answered"} 1.0' in metrics
    assert record["dtmf"] == "1", record
    assert agent.invites_per_user() == {"agent": 1}, agent.errors()
    t = record["transfer"]
    assert (t["to"], t["mode"], t["result"], t["cause"]) == (
        agent.uri("agent"),
        "bridge",
        "answered",
        "200",
    ), record
    assert "connect_time" in t and t["duration"] >= 2, record
    # the callee's 700 Hz reached the agent (PCMU -> PCMA), the agent's 1100 Hz the callee
    heard = (
        agent_side.tone_match(CALLEE_HZ),
        caller_side.tone_match(AGENT_HZ),
        agent_side.tone_match(AGENT_HZ),  # not an echo of its own audio
    )
    assert heard[0] > 0.9 and heard[1] > 0.9 and heard[2] < 0.3, (heard, record)
    assert "BYE" in "".join(callee.received()), "ringcast did not hang up the callee"
    # "record": true: the bridged call is kept, both legs mixed (both tones in it)
    assert len(recordings) == 1 and recordings[0]["duration"] >= 2, record
    assert wav is not None and wav.status_code == 200, wav
    pcm, rate = sf.read(io.BytesIO(wav.content), dtype="float64")
    assert rate == 8000
    spectrum = np.abs(np.fft.rfft(pcm))
    freqs = np.fft.rfftfreq(len(pcm), 1 / 8000)

    def level(hz: float) -> float:
        return float(spectrum[(freqs > hz - 15) & (freqs < hz + 15)].max())

    floor = float(np.median(spectrum))
    assert level(CALLEE_HZ) > 50 * floor and level(AGENT_HZ) > 50 * floor, (
        level(CALLEE_HZ),
        level(AGENT_HZ),
        floor,
    )


def test_each_gather_sends_its_own_call_digits(tmp_path: Path, sipp_bin: str) -> None:
    """Two gathers in one call: the first hears 1, the second nothing (its default
    actions hang up); each choice is its own call.digits webhook, numbered."""
    secret = tmp_path / "ringcast.db.webhook-secret"
    with (
        Receiver(lambda: secret.read_text().strip()) as rx,
        RtpPeer("PCMU", CALLEE_HZ, digit_at=0.3) as caller_side,
        _callee(tmp_path, caller_side) as callee,
        RingcastServer(tmp_path, env={"RINGCAST_WEBHOOK_SECRET": ""}) as rc,
    ):
        body = _body(callee.uri("bob"), {"pause": 0.1})
        body["playlist"][1]["gather"]["actions"] = {"1": [{"pause": 0.2}]}
        body["playlist"].append(
            {"gather": {"digits": 1, "timeout": 1, "actions": {"default": [{"hangup": True}]}}}
        )
        body["callback_url"] = rx.url()
        record = rc.wait_ready(post(rc, body), 45)["record"]
        digits = rx.wait_for("call.digits", n=2)
    assert len(digits) == 2, digits
    assert len({e["id"] for e in digits}) == 2, digits
    data = sorted((e["payload"]["data"] for e in digits), key=lambda d: d["gather"])
    assert [(d["gather"], d["dtmf"]) for d in data] == [(1, "1"), (2, "1")], data
    assert record["dtmf"] == "1" and record["result"] == "completed", record


@pytest.mark.parametrize(
    ("scenario", "result", "cause", "rang"),
    [("uas_busy.xml", "busy", "486", False), ("uas_noanswer.xml", "no-answer", "487", True)],
)
def test_agent_busy_or_not_answering(
    tmp_path: Path, sipp_bin: str, scenario: str, result: str, cause: str, rang: bool
) -> None:
    with (
        RtpPeer("PCMU", CALLEE_HZ, digit_at=0.3) as caller_side,
        _callee(tmp_path, caller_side) as callee,
        SippUas(scenario, tmp_path) as agent,
        RingcastServer(tmp_path) as rc,
    ):
        transfer = {"transfer": agent.uri("agent"), "timeout": 2}
        record = rc.wait_ready(post(rc, _body(callee.uri("bob"), transfer)), 45)["record"]
    assert agent.invites_per_user() == {"agent": 1}, agent.errors()
    t = record["transfer"]
    assert (t["result"], t["cause"], t["duration"]) == (result, cause, 0), record
    assert "connect_time" not in t
    assert (record["outcome"], record["dtmf"]) == ("answered", "1"), record
    if rang:  # the callee heard ringback (440 + 480 Hz) while the agent rang for 2 s
        assert caller_side.tone_match(440.0) > 0.3


def test_refer_accepted(tmp_path: Path, sipp_bin: str) -> None:
    target = f"sip:agent@127.0.0.1:{free_port()}"  # the callee never calls it: SIPp reports
    with (
        RtpPeer("PCMU", CALLEE_HZ, digit_at=0.3) as caller_side,
        _callee(tmp_path, caller_side, "uas_refer.xml") as callee,
        RingcastServer(tmp_path) as rc,
    ):
        body = _body(callee.uri("bob"), {"transfer": target, "mode": "refer"})
        record = rc.wait_ready(post(rc, body), 45)["record"]
    refer = next(m for m in callee.received() if m.startswith("REFER "))
    assert f"Refer-To: <{target}>" in refer, refer
    assert "Referred-By: " in refer, refer
    t = record["transfer"]
    assert (t["mode"], t["result"], t["cause"]) == ("refer", "answered", "200"), record
    notify_ok = [m for m in callee.received() if m.startswith("SIP/2.0 200") and "NOTIFY" in m]
    assert notify_ok, "ringcast did not answer the NOTIFY with 200"


def test_refer_refused_falls_back_to_default(tmp_path: Path, sipp_bin: str) -> None:
    target = f"sip:agent@127.0.0.1:{free_port()}"
    with (
        RtpPeer("PCMU", CALLEE_HZ, digit_at=0.3) as caller_side,
        _callee(tmp_path, caller_side, "uas_refer_refused.xml") as callee,
        RingcastServer(tmp_path) as rc,
    ):
        body = _body(callee.uri("bob"), {"transfer": target, "mode": "refer"})
        body["playlist"][1]["gather"]["actions"]["default"] = [{"dtmf": "42"}]
        record = rc.wait_ready(post(rc, body), 45)["record"]
    t = record["transfer"]
    assert (t["result"], t["cause"]) == ("failed", "603"), record
    assert "603" in t["error"], record
    # the default actions ran after the refusal: ringcast sent the digits 4 and 2
    events = [p for p in caller_side.received if p[1] & 0x7F == 101]
    codes = {p[12] for p in events}
    assert codes == {4, 2}, json.dumps(record)


def test_the_agent_leg_counts_against_the_request_limit(tmp_path: Path, sipp_bin: str) -> None:
    """max_concurrent 1: the callee's call holds the only channel, so the agent is not
    dialed and the transfer fails (then the default actions run)."""
    with (
        RtpPeer("PCMU", CALLEE_HZ, digit_at=0.3) as caller_side,
        RtpPeer("PCMA", AGENT_HZ) as agent_side,
        _callee(tmp_path, caller_side) as callee,
        _agent(tmp_path, agent_side) as agent,
        RingcastServer(tmp_path) as rc,
    ):
        transfer = {"transfer": agent.uri("agent"), "timeout": 5}
        body = {**_body(callee.uri("bob"), transfer), "max_concurrent": 1}
        record = rc.wait_ready(post(rc, body), 45)["record"]
    assert agent.invites_per_user() == {}, agent.errors()
    t = record["transfer"]
    assert t["result"] == "failed" and "request:" in t["error"], record
    assert record["outcome"] == "answered", record


def test_a_number_is_transferred_through_the_default_trunk(tmp_path: Path, sipp_bin: str) -> None:
    """A transfer target that is a phone number goes through the trunk as a recipient
    would: the agent (here the carrier) gets the trunk's Request-URI (strip and prefix
    applied); the record keeps the number as given."""
    with (
        RtpPeer("PCMU", CALLEE_HZ, digit_at=0.3) as caller_side,
        _callee(tmp_path, caller_side) as callee,
        SippUas("uas_busy.xml", tmp_path) as carrier,
    ):
        config = tmp_path / "ringcast.toml"
        config.write_text(
            'default_trunk = "carrier"\n'
            "[trunks.carrier]\n"
            f'proxy = "sip:{carrier.uri_host}"\n'
            'strip = "+1"\n'
            'prefix = "9"\n'
        )
        with RingcastServer(tmp_path, args=["--config", str(config)]) as rc:
            transfer = {"transfer": "+15550100001", "timeout": 3}
            record = rc.wait_ready(post(rc, _body(callee.uri("bob"), transfer)), 45)["record"]
            # a number that cannot be one is refused at the door, naming the field
            bad = {"transfer": "+1555", "timeout": 3}
            refused = httpx.post(
                f"{rc.base}/voice/call/play", json=_body(callee.uri("bob"), bad), timeout=10
            )
    assert carrier.invites_per_user() == {"95550100001": 1}, carrier.errors()
    t = record["transfer"]
    assert (t["to"], t["result"], t["cause"]) == ("+15550100001", "busy", "486"), record
    assert refused.status_code == 422, refused.text
    assert "playlist[1].gather.actions.1[0].transfer" in refused.text, refused.text


def test_digits_during_a_bridge_are_recorded_and_info_digits_relayed(
    tmp_path: Path, sipp_bin: str
) -> None:
    """The callee presses 9 (RFC 4733) while bridged: it reaches the agent and the
    record (`dtmf` "19"); the agent presses 7 as SIP INFO (application/dtmf-relay):
    the callee receives it as RFC 4733 events."""
    nine = rfc4733_packets("9", seq=3000, timestamp=48000)  # an event of its own
    with (
        RtpPeer("PCMU", CALLEE_HZ, digit_at=0.3, later=(3.0, nine)) as caller_side,
        RtpPeer("PCMA", AGENT_HZ) as agent_side,
        _callee(tmp_path, caller_side) as callee,
        _agent(tmp_path, agent_side, "uas_bridge_agent_info.xml") as agent,
        RingcastServer(tmp_path) as rc,
    ):
        transfer = {"transfer": agent.uri("agent"), "timeout": 10}
        record = rc.wait_ready(post(rc, _body(callee.uri("bob"), transfer)), 45)["record"]
    assert record.get("transfer", {}).get("result") == "answered", json.dumps(record)
    assert agent.invites_per_user() == {"agent": 1}, agent.errors()
    assert any(m.startswith("SIP/2.0 200") for m in agent.received() if "CSeq: 1 INFO" in m), (
        agent.errors()
    )
    assert record["dtmf"] == "19", record
    assert (9, True) in agent_side.events(), agent_side.events()  # passed through
    relayed = caller_side.events()
    assert (7, False) in relayed and relayed.count((7, True)) == 3, relayed
