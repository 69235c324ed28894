"""Numbers end to end (issue 15 part 1): `ringcast serve` with trunks in its
config file dials E.164, tel: and national recipients through the trunk, and
SIPp, as the carrier's side, receives the Request-URI the trunk's rules make."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
from sipp import SippUas

from e2e.server import MediaServer, RingcastServer, write_tone_wav


def _invites(uas: SippUas) -> dict[str, str]:
    """Request-URI -> the INVITE's text, for every INVITE SIPp received."""
    out = {}
    for msg in uas.received():
        first = msg.split("\r\n", 1)[0].split("\n", 1)[0]
        if first.startswith("INVITE "):
            out[first.split()[1]] = msg
    return out


def test_numbers_reach_the_callee_with_the_trunks_request_uri(
    tmp_path: Path, sipp_bin: str
) -> None:
    write_tone_wav(tmp_path / "hello.wav", seconds=0.5)
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp_sink,
        MediaServer(tmp_path) as media,
    ):
        rtp_sink.bind(("127.0.0.1", 0))
        sink = str(rtp_sink.getsockname()[1])
        with SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": sink}) as carrier:
            _run(tmp_path, media, carrier)


def _run(tmp_path: Path, media: MediaServer, carrier: SippUas) -> None:
    config = tmp_path / "ringcast.toml"
    config.write_text(
        'default_trunk = "carrier"\n'
        "[trunks.carrier]\n"
        f'proxy = "sip:{carrier.uri_host}"\n'
        "asserted_identity = true\n"
        "[trunks.national]\n"
        f'proxy = "sip:{carrier.uri_host}"\n'
        'country = "US"\n'
        'strip = "+1"\n'
        'prefix = "9"\n'
        "user_phone = true\n"
    )
    with RingcastServer(tmp_path, args=["--config", str(config)]) as rc:
        play = [{"play": media.url("hello.wav")}]
        given = ["+15550100001", "tel:+1-555-010-0002"]
        first = httpx.post(
            f"{rc.base}/voice/call/play",
            json={
                "recipients": [{"to": t} for t in given],
                "from": "+15550100099",
                "playlist": play,
            },
            timeout=10,
        )
        assert first.status_code == 200, first.text
        second = httpx.post(
            f"{rc.base}/voice/call/play",
            json={
                "to": "(201) 555-0123",
                "from": "shop",
                "playlist": play,
                "sip": {"trunk": "national"},
            },
            timeout=10,
        )
        assert second.status_code == 200, second.text
        # on the do-not-call list in E.164; given nationally, read in the trunk's country
        listed = httpx.post(f"{rc.base}/dnc", json={"entries": ["+12015550124"]}, timeout=10)
        assert listed.status_code == 200, listed.text
        third = httpx.post(
            f"{rc.base}/voice/call/play",
            json={"to": "201.555.0124", "playlist": play, "sip": {"trunk": "national"}},
            timeout=10,
        )
        assert third.status_code == 200, third.text
        report = rc.wait_ready(first.json()["request_id"], timeout=60)["report"]
        records = httpx.get(f"{rc.base}{report['location']}", timeout=10).json()["records"]
        single = rc.wait_ready(second.json()["request_id"], timeout=60)["record"]
        suppressed = rc.wait_ready(third.json()["request_id"], timeout=60)["record"]
    assert (suppressed["to"], suppressed["outcome"]) == ("201.555.0124", "suppressed"), suppressed
    # reports show `to` as given
    assert [r["to"] for r in records] == given
    assert [r["result"] for r in records] == ["completed", "completed"], records
    assert (single["to"], single["result"]) == ("(201) 555-0123", "completed"), single
    invites = _invites(carrier)
    host = carrier.uri_host
    assert sorted(invites) == sorted(
        [
            f"sip:+15550100001@{host}",
            f"sip:+15550100002@{host}",
            f"sip:92015550123@{host};user=phone",  # strip +1, prefix 9
        ]
    ), list(invites)
    caller = invites[f"sip:+15550100001@{host}"]
    assert "\nP-Asserted-Identity: <sip:+15550100099@127.0.0.1>" in caller.replace("\r", "")
    assert "From: <sip:+15550100099@" in caller
    assert "P-Asserted-Identity" not in invites[f"sip:92015550123@{host};user=phone"]
