"""Trunk registration end to end (issue 15 part 2): `ringcast serve` keeps a
REGISTER binding with Kamailio (registrar/usrloc, digest) for a trunk with
`register = true`, shows it in /health and /metrics, lets calls on the trunk
go once it is up, fails calls on a trunk whose registration stays down with a
clear error, and removes its binding (expires 0) when stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from peers import KamailioRegistrar
from sipp import SippUas

from e2e.server import RingcastServer, post, wait_for


def registrar_config(path: Path, registrar: KamailioRegistrar, callee: SippUas) -> Path:
    path.write_text(
        "[trunks.carrier]\n"
        f'proxy = "sip:{callee.uri_host}"\n'
        f'registrar = "{registrar.uri()}"\n'
        f'username = "{registrar.username}"\n'
        f'password = "{registrar.password}"\n'
        "register = true\n"
        "register_expires = 600\n"
        "register_wait = 10\n"
        "[trunks.refused]\n"
        f'proxy = "sip:{callee.uri_host}"\n'
        f'registrar = "{registrar.uri()}"\n'
        f'username = "{registrar.username}"\n'
        'password = "not-the-password"\n'
        "register = true\n"
        "register_retry = 0.5\n"
        "register_wait = 1\n"
    )
    return path


def test_trunk_registers_serves_calls_and_unregisters_at_shutdown(
    tmp_path: Path, sipp_bin: str, kamailio_bin: str, rtp_sink: str
) -> None:
    with (
        KamailioRegistrar(tmp_path, max_expires=60) as registrar,
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as callee,
    ):
        config = registrar_config(tmp_path / "ringcast.toml", registrar, callee)
        rc = RingcastServer(tmp_path, args=["--config", str(config)]).start()
        try:
            wait_for(lambda: registrar.contacts() != [], 15, "a binding at the registrar")
            contacts = registrar.contacts()
            assert len(contacts) == 1 and f"127.0.0.1:{rc.sip_port}" in contacts[0], contacts

            def trunks() -> dict[str, dict[str, Any]]:
                return dict(httpx.get(f"{rc.base}/health", timeout=5).json()["trunks"])

            wait_for(lambda: trunks()["refused"]["failures"] >= 1, 15, "a refused binding")
            health = trunks()
            assert health["carrier"]["state"] == "registered", health
            assert health["carrier"]["expires"] == 60  # the registrar's grant, not the 600 asked
            assert health["refused"]["registered"] is False
            assert "authentication failed" in str(health["refused"]["error"])
            metrics = httpx.get(f"{rc.base}/metrics", timeout=5).text
            assert 'ringcast_trunk_registered{trunk="carrier"} 1.0' in metrics
            assert 'ringcast_trunk_registered{trunk="refused"} 0.0' in metrics

            ok = post(
                rc,
                {"to": "+15550100001", "playlist": [{"pause": 0.2}], "sip": {"trunk": "carrier"}},
            )
            refused = post(
                rc,
                {"to": "+15550100002", "playlist": [{"pause": 0.2}], "sip": {"trunk": "refused"}},
            )
            record = rc.wait_ready(ok, timeout=60)["record"]
            assert record["result"] == "completed", record
            failed = rc.wait_ready(refused, timeout=60)["record"]
            assert failed["result"] == "failed", failed
            assert failed["error"].startswith(
                "trunk 'refused' is not registered with its registrar (waited 1 s; last: "
                "401 authentication failed"
            ), failed
            assert rc.stop() == 0
            log = rc.output()
        finally:
            rc.stop()
        # a clean shutdown removed the binding (REGISTER with expires 0)
        assert registrar.contacts() == []
        expires = [f.get("expires") for k, f in registrar.events() if k == "saved"]
        assert expires[-1] == "0", expires
        invites = [m for m in callee.received() if m.startswith("INVITE ")]
    assert [m.split()[1] for m in invites] == [f"sip:+15550100001@{callee.uri_host}"]
    assert registrar.password not in log
    assert registrar.password not in str(health) + metrics
