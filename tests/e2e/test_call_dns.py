"""`ringcast call` by domain (RFC 3263) and with `;transport=tcp`, end to end: the
CLI process asks a DNS server on 127.0.0.1 (`RINGCAST_DNS_SERVER`) and calls the
SIPp callee its SRV records name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port
from dnsserver import ZoneServer
from sipp import SippUas

pytestmark = pytest.mark.sipp


def ringcast_call(uri: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).parent / "ringcast")
    lo = 20000 + (free_port() % 300) * 20
    return subprocess.run(
        [exe, "call", uri, "--say", "Hi", "--sip", f"127.0.0.1:{free_port()}"]
        + ["--rtp-ports", f"{lo}-{lo + 9}"],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_call_by_domain_follows_srv(tmp_path: Path, sipp_bin: str) -> None:
    """No NAPTR: SRV `_sip._udp` names two servers; the first (priority 10) answers
    503, the second answers the call (RFC 3263 §4.3)."""
    with (
        ZoneServer() as dns,
        SippUas("uas_unavailable.xml", tmp_path, keys={"retry_after": "30"}) as busy,
        SippUas("uas_answer.xml", tmp_path) as good,
    ):
        dns.set(
            "\n".join(
                [
                    f"_sip._udp.carrier.test. 60 IN SRV 10 0 {busy.port} a.carrier.test.",
                    f"_sip._udp.carrier.test. 60 IN SRV 20 0 {good.port} b.carrier.test.",
                    "a.carrier.test. 60 IN A 127.0.0.1",
                    "b.carrier.test. 60 IN A 127.0.0.1",
                ]
            )
        )
        done = ringcast_call(
            "sip:alice@carrier.test", tmp_path, {"RINGCAST_DNS_SERVER": dns.setting}
        )
        queries = dns.queries
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert (record["result"], record["answered"]) == ("completed", True)
    assert record["disconnect_cause_code"] == "200"
    assert busy.invites_per_user() == {"alice": 1}
    assert good.invites_per_user() == {"alice": 1}
    assert queries[:2] == [("carrier.test.", "NAPTR"), ("_sip._udp.carrier.test.", "SRV")]


def test_call_with_transport_tcp_in_the_uri(tmp_path: Path, sipp_bin: str) -> None:
    """`;transport=tcp` in the recipient: the INVITE goes over TCP to a SIPp that
    listens on TCP only."""
    with SippUas("uas_answer.xml", tmp_path, transport="t1") as uas:
        done = ringcast_call(f"sip:alice@127.0.0.1:{uas.port};transport=tcp", tmp_path, {})
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert (record["result"], record["answered"]) == ("completed", True)
    invite = uas.received()[0]
    assert "SIP/2.0/TCP" in invite and ";transport=tcp>" in invite
    assert uas.invites_per_user() == {"alice": 1}
