"""Trunk registration in a fleet (issue 15 part 2): each `ringcast dialer`
process keeps its own REGISTER binding with Kamailio (registrar/usrloc, digest)
and writes its state to the shared database, so a separate `ringcast api`
shows every live dialer's binding in /health, /metrics and (through /health)
the dashboard; a dialer that stops cleanly unregisters and drops out."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
from peers import KamailioRegistrar
from sipp import SippUas

from e2e.server import RingcastServer, post, wait_for
from e2e.test_trunk_registration_e2e import registrar_config


def test_separate_dialers_bindings_show_in_the_api(
    tmp_path: Path, sipp_bin: str, kamailio_bin: str, rtp_sink: str
) -> None:
    db_file = tmp_path / "fleet.db"
    db = f"sqlite:///{db_file}"
    with (
        KamailioRegistrar(tmp_path, max_expires=60) as registrar,
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as callee,
    ):
        config = registrar_config(tmp_path / "ringcast.toml", registrar, callee)
        args = ["--config", str(config)]
        api = RingcastServer(tmp_path, db=db, command="api", args=args).start()
        dialers: list[RingcastServer] = []
        try:
            for _ in range(2):
                dialers.append(RingcastServer(tmp_path, db=db, command="dialer", args=args).start())

            def trunks() -> dict[str, Any]:
                return dict(httpx.get(f"{api.base}/health", timeout=5).json().get("trunks") or {})

            def both_up() -> bool:
                t = trunks()
                return (
                    t.get("carrier", {}).get("nodes_registered") == 2
                    and t.get("refused", {}).get("nodes_total") == 2
                    and all(n["failures"] >= 1 for n in t["refused"]["nodes"].values())
                )

            wait_for(both_up, 20, "both dialers' bindings in the API's /health")
            assert len(registrar.contacts()) == 2, registrar.contacts()
            ports = {f"127.0.0.1:{d.sip_port}" for d in dialers}
            assert {c.split("@")[-1].split(";")[0].rstrip(">") for c in registrar.contacts()} == (
                ports
            ), registrar.contacts()
            health = trunks()
            carrier, refused = health["carrier"], health["refused"]
            assert carrier["registered"] is True and carrier["state"] == "registered", carrier
            assert carrier["expires"] == 60  # the registrar's grant, not the 600 asked
            assert len(carrier["nodes"]) == 2
            assert all(n["state"] == "registered" for n in carrier["nodes"].values()), carrier
            assert refused["registered"] is False and refused["nodes_registered"] == 0
            assert "authentication failed" in str(refused["error"]), refused
            metrics = httpx.get(f"{api.base}/metrics", timeout=5).text
            assert 'ringcast_trunk_registered{trunk="carrier"} 1.0' in metrics
            assert 'ringcast_trunk_registered{trunk="refused"} 0.0' in metrics
            per_node = [
                line
                for line in metrics.splitlines()
                if line.startswith("ringcast_trunk_node_registered{") and 'trunk="carrier"' in line
            ]
            assert len(per_node) == 2 and all(line.endswith(" 1.0") for line in per_node), per_node

            # a call through the API goes out on a dialer's registered trunk
            ok = post(
                api,
                {"to": "+15550100001", "playlist": [{"pause": 0.2}], "sip": {"trunk": "carrier"}},
            )
            record = api.wait_ready(ok, timeout=60)["record"]
            assert record["result"] == "completed", record

            # one dialer stops cleanly: its binding is removed at the registrar and in the API
            assert dialers[0].stop() == 0
            assert len(registrar.contacts()) == 1, registrar.contacts()
            wait_for(lambda: trunks()["carrier"]["nodes_total"] == 1, 10, "one dialer left")
            assert trunks()["carrier"]["registered"] is True
            with sqlite3.connect(db_file) as conn:
                rows = conn.execute("SELECT * FROM trunk_registrations").fetchall()
            assert rows and len({r[0] for r in rows}) == 1, rows  # only the live node's
            assert dialers[1].stop() == 0
            wait_for(lambda: trunks() == {}, 10, "no trunk registrations once no dialer runs")
            logs = api.output() + "".join(d.output() for d in dialers)
        finally:
            for d in dialers:
                d.stop()
            api.stop()
        assert registrar.contacts() == []
    assert registrar.password not in logs
    assert registrar.password not in str(health) + metrics + str(rows)
