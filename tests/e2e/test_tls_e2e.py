"""SIP over TLS from the API to the record: `ringcast serve` with TLS trunks in its
config file, Kamailio's TLS module as the carrier's proxy, a SIPp callee behind it.

A trunk whose CA is right completes its call (its client certificate's key never
reaches the log); one that trusts another CA fails with `result: failed` and an
error naming the certificate check, although a connection to the same proxy,
verified for the first trunk, is still open (it is not reused under other TLS
settings); a trunk with `tls_verify = false` is logged
at start; the failed handshake is counted in /metrics. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from sipp import SippUas
from tlspeers import KamailioTls, Pki

from e2e.server import RingcastServer, post


def write_config(
    path: Path, proxy: str, pki: Pki, other: Pki, client_cert: Path, key: Path
) -> None:
    path.write_text(
        f"""
[trunks.carrier]
proxy = "{proxy}"
transport = "tls"
ca_file = "{pki.ca_file}"
cert_file = "{client_cert}"
key_file = "{key}"

[trunks.wrongca]
proxy = "{proxy}"
transport = "tls"
ca_file = "{other.ca_file}"

[trunks.lax]
proxy = "{proxy}"
transport = "tls"
tls_verify = false
"""
    )


def test_tls_trunks_from_request_to_record(
    sipp_bin: str, kamailio_bin: str, tmp_path: Path
) -> None:
    pki = Pki(tmp_path / "pki")
    other = Pki(tmp_path / "other", "another CA")
    client = pki.issue("client", names=("ringcast.test",), client=True)
    key_lines = client.key.read_text().splitlines()[1:-1]
    with (
        KamailioTls(tmp_path, pki.issue("server")) as proxy,
        SippUas("uas_answer_rr.xml", tmp_path, max_calls=1) as uas,
    ):
        config = tmp_path / "ringcast.toml"
        write_config(config, proxy.uri(), pki, other, client.cert, client.key)
        with RingcastServer(
            tmp_path, args=["--config", str(config)], env={"RINGCAST_SIP_T1": "0.1"}
        ) as rc:
            say = [{"say": "Hello."}]
            good = post(rc, {"to": uas.uri("alice"), "playlist": say, "sip": {"trunk": "carrier"}})
            good_record = rc.wait_ready(good, 60)["record"]
            bad = post(rc, {"to": uas.uri("bob"), "playlist": say, "sip": {"trunk": "wrongca"}})
            bad_record = rc.wait_ready(bad, 60)["record"]
            metrics = httpx.get(f"{rc.base}/metrics", timeout=10).text
            log = rc.output()
    assert (good_record["result"], good_record["answered"]) == ("completed", True), good_record
    assert bad_record["result"] == "failed" and bad_record["outcome"] == "failed", bad_record
    assert "certificate verify failed: unable to get local issuer certificate" in str(
        bad_record["error"]
    ), bad_record
    found = re.search(r"^ringcast_sip_tls_handshake_failures_total (\S+)$", metrics, re.M)
    assert found and float(found.group(1)) == 1.0, metrics
    assert "trunk lax: tls_verify = false" in log
    assert not any(line in log for line in key_lines)  # the client key never logged
    invites = [r for r in proxy.requests() if r["method"] == "INVITE"]
    assert [r["proto"] for r in invites] == ["tls"]  # the wrong-CA call never got there
