"""IPv6 and dual stack end to end (issue 15 part 5), on ::1 and 127.0.0.1 only.

`ringcast serve --sip [::1]:P` calls a SIPp on ::1 (`-i ::1`); a dual-stack
server (`--sip [::]:P`) calls one IPv4 and one IPv6 callee, each with Via,
Contact and SDP of its family and RTP from a socket of that family; `ringcast
call` reaches a host name that has only an AAAA record (the project's DNS
test server); an address or family that cannot be used is one line at start.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from conftest import free_port
from dnsserver import ZoneServer
from sipp import SippUas

from e2e.server import RingcastServer, post

RINGCAST = str(Path(sys.executable).parent / "ringcast")


def rtp_socket(host: str) -> socket.socket:
    """A UDP socket on `host` that the callee's SDP names: our RTP lands here."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket) -> list[tuple[bytes, str]]:
    """Every datagram queued on `sock`: (payload, source IP)."""
    out: list[tuple[bytes, str]] = []
    while True:
        try:
            data, addr = sock.recvfrom(2048)
        except BlockingIOError:
            return out
        out.append((data, str(addr[0])))


def invite_of(uas: SippUas) -> str:
    invites = [m for m in uas.received() if m.startswith("INVITE ")]
    assert len(invites) == 1, uas.received()
    return invites[0]


def record_of(rc: RingcastServer, request_id: str) -> dict[str, Any]:
    rc.wait_ready(request_id, timeout=60)
    status = httpx.get(f"{rc.base}/voice/call/status/{request_id}", timeout=10).json()
    return dict(status["record"])


def records_of(rc: RingcastServer, request_id: str) -> list[dict[str, Any]]:
    rc.wait_ready(request_id, timeout=60)
    status = httpx.get(f"{rc.base}/voice/call/status/{request_id}", timeout=10).json()
    rep = httpx.get(f"{rc.base}/report/{status['report']['id']}", timeout=30).json()
    return list(rep["records"])


def test_serve_on_ipv6_calls_sipp_on_ipv6(tmp_path: Path, sipp_bin: str) -> None:
    """`--sip [::1]:P --public-ip ::1` (the issue's command, which used to die with
    a traceback): the INVITE carries [::1] in Via, Contact and From, SDP
    `c=IN IP6 ::1`, and the prompt's RTP reaches the callee's IPv6 media port."""
    media = rtp_socket("::1")
    with (
        media,
        SippUas(
            "uas_answer_any_family.xml",
            tmp_path,
            host="::1",
            keys={"rtp_port": str(media.getsockname()[1])},
        ) as uas,
        RingcastServer(tmp_path, sip_host="::1", args=["--public-ip", "::1"]) as rc,
    ):
        rid = post(rc, {"to": uas.uri("alice"), "from": "me", "playlist": [{"say": "Hello"}]})
        record = record_of(rc, rid)
        packets = drain(media)
    assert (record["result"], record["answered"]) == ("completed", True), record
    invite = invite_of(uas)
    assert invite.startswith(f"INVITE sip:alice@[::1]:{uas.port} SIP/2.0")
    assert re.search(rf"^Via: SIP/2.0/UDP \[::1\]:{rc.sip_port};", invite, re.M), invite
    assert re.search(rf"^Contact: <sip:me@\[::1\]:{rc.sip_port}>", invite, re.M), invite
    assert re.search(r"^From: <sip:me@\[::1\]>", invite, re.M), invite
    assert "\nc=IN IP6 ::1" in invite and "\no=ringcast " in invite and " IN IP6 ::1" in invite
    assert len(packets) >= 10, len(packets)  # "Hello" is well over 200 ms of RTP
    assert {source for _, source in packets} == {"::1"}
    assert all(data[0] >> 6 == 2 for data, _ in packets)  # RTP version 2


def test_dual_stack_server_calls_each_callee_in_its_family(tmp_path: Path, sipp_bin: str) -> None:
    """`--sip [::]:P`: one request to an IPv4 and an IPv6 callee. Each INVITE goes
    out from the one dual-stack socket with the address of the callee's family in
    Via, Contact and SDP, and each callee's RTP comes from an address of its family."""
    media4, media6 = rtp_socket("127.0.0.1"), rtp_socket("::1")
    with (
        media4,
        media6,
        SippUas(
            "uas_answer_any_family.xml",
            tmp_path,
            keys={"rtp_port": str(media4.getsockname()[1])},
        ) as uas4,
        SippUas(
            "uas_answer_any_family.xml",
            tmp_path,
            host="::1",
            keys={"rtp_port": str(media6.getsockname()[1])},
        ) as uas6,
        RingcastServer(tmp_path, sip_host="::") as rc,
    ):
        rid = post(
            rc,
            {
                "recipients": [{"to": uas4.uri("four")}, {"to": uas6.uri("six")}],
                "from": "me",
                "playlist": [{"say": "Hello"}],
            },
        )
        records = records_of(rc, rid)
        packets4, packets6 = drain(media4), drain(media6)
    assert sorted((r["to"], r["result"], r["answered"]) for r in records) == sorted(
        [(uas4.uri("four"), "completed", True), (uas6.uri("six"), "completed", True)]
    ), records
    four, six = invite_of(uas4), invite_of(uas6)
    assert re.search(rf"^Via: SIP/2.0/UDP 127\.0\.0\.1:{rc.sip_port};", four, re.M), four
    assert re.search(rf"^Contact: <sip:me@127\.0\.0\.1:{rc.sip_port}>", four, re.M), four
    assert "\nc=IN IP4 127.0.0.1" in four
    assert re.search(rf"^Via: SIP/2.0/UDP \[::1\]:{rc.sip_port};", six, re.M), six
    assert re.search(rf"^Contact: <sip:me@\[::1\]:{rc.sip_port}>", six, re.M), six
    assert "\nc=IN IP6 ::1" in six
    assert len(packets4) >= 10 and {s for _, s in packets4} == {"127.0.0.1"}
    assert len(packets6) >= 10 and {s for _, s in packets6} == {"::1"}


def test_outbound_proxy_on_ipv6(tmp_path: Path, sipp_bin: str) -> None:
    """A request's `sip.proxy` `sip:[::1]:P`: the INVITE for a callee named by host
    name goes to the proxy over IPv6 (the name is never looked up), with a
    bracketed loose Route."""
    with (
        SippUas("uas_answer_any_family.xml", tmp_path, host="::1") as proxy,
        RingcastServer(tmp_path, sip_host="::") as rc,
    ):
        rid = post(
            rc,
            {
                "to": "sip:alice@pbx.invalid",
                "from": "me",
                "playlist": [{"pause": 0.3}],
                "sip": {"proxy": f"sip:[::1]:{proxy.port}"},
            },
        )
        record = record_of(rc, rid)
    assert (record["result"], record["answered"]) == ("completed", True), record
    invite = invite_of(proxy)
    assert invite.startswith("INVITE sip:alice@pbx.invalid SIP/2.0")
    assert re.search(rf"^Route: <sip:\[::1\]:{proxy.port};lr>", invite, re.M), invite
    assert re.search(rf"^Via: SIP/2.0/UDP \[::1\]:{rc.sip_port};", invite, re.M), invite
    assert "\nc=IN IP6 ::1" in invite


def ringcast_call(uri: str, cwd: Path, sip: str, **env: str) -> subprocess.CompletedProcess[str]:
    lo = 20000 + (free_port() % 300) * 20
    return subprocess.run(
        [RINGCAST, "call", uri, "--say", "Hi", "--sip", sip, "--rtp-ports", f"{lo}-{lo + 9}"],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_host_name_with_only_an_aaaa_record(tmp_path: Path, sipp_bin: str) -> None:
    """A dual-stack `ringcast call` asks A and AAAA and calls the one address there
    is, ::1; an IPv4-only one never asks AAAA and fails the call in one line."""
    with ZoneServer() as dns, SippUas("uas_answer_any_family.xml", tmp_path, host="::1") as uas:
        dns.set("v6.carrier.test. 60 IN AAAA ::1")
        uri = f"sip:alice@v6.carrier.test:{uas.port}"
        dual = ringcast_call(uri, tmp_path, "[::]:0", RINGCAST_DNS_SERVER=dns.setting)
        asked_dual = dns.queries
        dns.set("v6.carrier.test. 60 IN AAAA ::1")  # clears the question log
        v4 = ringcast_call(uri, tmp_path, "127.0.0.1:0", RINGCAST_DNS_SERVER=dns.setting)
        asked_v4 = dns.queries
    assert dual.returncode == 0, dual.stderr
    record = json.loads(dual.stdout)
    assert (record["result"], record["answered"]) == ("completed", True), record
    assert uas.invites_per_user() == {"alice": 1}
    assert "\nc=IN IP6 ::1" in invite_of(uas)
    assert ("v6.carrier.test.", "AAAA") in asked_dual
    assert v4.returncode == 1
    failed = json.loads(v4.stdout)
    assert failed["result"] == "failed"
    assert "no address for v6.carrier.test" in failed["error"], failed
    assert asked_v4 == [("v6.carrier.test.", "A")]


def test_tcp_on_a_dual_stack_server_to_an_ipv6_callee(tmp_path: Path, sipp_bin: str) -> None:
    """`--sip [::]:P --sip-transport tcp` and `;transport=tcp` to a SIPp on TCP ::1:
    the connection is IPv6, and Via and Contact name [::1] with TCP."""
    with SippUas("uas_answer_any_family.xml", tmp_path, host="::1", transport="t1") as uas:
        lo = 20000 + (free_port() % 300) * 20
        done = subprocess.run(
            [RINGCAST, "call", f"{uas.uri('alice')};transport=tcp", "--say", "Hi"]
            + ["--sip", "[::]:0", "--sip-transport", "tcp", "--rtp-ports", f"{lo}-{lo + 9}"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert (record["result"], record["answered"]) == ("completed", True), record
    invite = invite_of(uas)
    assert re.search(r"^Via: SIP/2.0/TCP \[::1\]:\d+;", invite, re.M), invite
    assert re.search(r"^Contact: <sip:ringcast@\[::1\]:\d+;transport=tcp>", invite, re.M), invite
    assert "\nc=IN IP6 ::1" in invite


def test_ipv4_only_server_refuses_an_ipv6_recipient_in_its_record(tmp_path: Path) -> None:
    """`sip:alice@[::1]:P` from a server bound to 127.0.0.1: the call fails with a
    record that says which family is missing and how to get it; nothing is sent."""
    port = free_port()
    done = ringcast_call(f"sip:alice@[::1]:{port}", tmp_path, "127.0.0.1:0")
    assert done.returncode == 1, done.stderr
    record = json.loads(done.stdout)
    assert record["result"] == "failed"
    assert "[::1] is reached over IPv6 only" in record["error"], record
    assert "listen on [::] for both" in record["error"]
    assert "Traceback" not in done.stderr


def serve_fails(tmp_path: Path, *args: str) -> str:
    """`ringcast serve` with `args`: it must exit non-zero with one error line."""
    http = ["--http", f"127.0.0.1:{free_port(socket.SOCK_STREAM)}"]
    if "--http" in args:
        http = []
    if "--sip" not in args:
        http += ["--sip", "127.0.0.1:0"]
    done = subprocess.run(
        [RINGCAST, "serve", "--db", f"sqlite:///{tmp_path / 'rc.db'}", *http, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("ringcast: error: "), done.stderr
    return errors[0]


def test_unusable_addresses_are_one_line_at_start(tmp_path: Path) -> None:
    """An address this host lacks, a port in use, a family mismatch and a bare
    IPv6 address with a port: each one line naming it, exit non-zero."""
    assert "cannot listen for --sip [2001:db8::1]:5" in serve_fails(
        tmp_path, "--sip", "[2001:db8::1]:5062"
    )
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as taken:
        taken.bind(("::1", 0))
        port = taken.getsockname()[1]
        line = serve_fails(tmp_path, "--sip", f"[::1]:{port}")
    assert f"cannot listen for --sip [::1]:{port} (udp): Address already in use" in line
    line = serve_fails(tmp_path, "--sip", "127.0.0.1:0", "--public-ip", "::1")
    assert "public_ip ::1 is IPv6, but SIP is bound to 127.0.0.1:0 (IPv4 only)" in line
    line = serve_fails(tmp_path, "--sip", "::1:5060")
    assert "put an IPv6 address in brackets, like [::1]:5060" in line
    line = serve_fails(tmp_path, "--sip", "[::]:0", "--public-ip", "::1,::2")
    assert "two IPv6 addresses" in line
    line = serve_fails(tmp_path, "--http", "[2001:db8::1]:8080", "--insecure-no-auth")
    assert line == (
        "ringcast: error: cannot serve HTTP on --http [2001:db8::1]:8080:"
        " Cannot assign requested address"
    )
