"""SIP passwords never rest in the database in the clear.

A request names its trunk and the dialer reads the trunk's credentials from the
config when it dials: a password rotated while calls are queued reaches them.
A password given inline is stored sealed (AES-GCM) and erased once the request
is final. The tests search the SQLite file and its WAL, and a pg_dump of the
PostgreSQL tables, for the password's bytes; SIPp checks the digest.
"""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from e2e.server import RingcastServer, post
from sipp import SippUas

from ringcast.api import create_app
from ringcast.config import Settings
from ringcast.sealing import new_key_text
from ringcast.store import Store, open_store
from ringcast.store.models import requests_table


def _db_bytes(db_file: Path) -> bytes:
    """The SQLite file and its write-ahead log, as they are on disk."""
    return b"".join(p.read_bytes() for p in (db_file, Path(f"{db_file}-wal")) if p.exists())


def _config(path: Path, proxy: str, password: str) -> Path:
    path.write_text(
        f'[trunks.carrier]\nproxy = "{proxy}"\nusername = "alice"\npassword = "{password}"\n'
    )
    return path


async def _bodies(db: str) -> list[dict[str, Any]]:
    store = open_store(db)
    try:
        async with store.engine.connect() as conn:
            return [r[0] for r in await conn.execute(sa.select(requests_table.c.body))]
    finally:
        await store.close()


@pytest.mark.sipp
async def test_rotated_trunk_password_reaches_queued_calls_and_inline_ones_are_sealed(
    tmp_path: Path, sipp_bin: str
) -> None:
    password = "Pw-" + uuid.uuid4().hex  # bytes that can only come from here
    inline_password = "In-" + uuid.uuid4().hex
    db_file = tmp_path / "ringcast.db"
    db = f"sqlite:///{db_file}"
    with (
        SippUas(
            "uas_auth.xml", tmp_path, keys={"auth_user": "alice", "auth_password": password}
        ) as uas,
        SippUas(
            "uas_auth.xml", tmp_path, keys={"auth_user": "bob", "auth_password": inline_password}
        ) as uas2,
    ):
        config = _config(tmp_path / "ringcast.toml", f"sip:{uas.uri_host}", "old-password")
        # the API alone: the requests are queued, nobody dials yet
        with RingcastServer(tmp_path, db=db, command="api", args=["--config", str(config)]) as api:
            trunked = post(
                api,
                {"to": f"sip:carol@{uas.uri_host}", "playlist": [{"pause": 0.2}],
                 "sip": {"trunk": "carrier"}},
            )  # fmt: skip
            inline = post(
                api,
                {"to": f"sip:dave@{uas2.uri_host}", "playlist": [{"pause": 0.2}],
                 "sip": {"proxy": f"sip:{uas2.uri_host}", "username": "bob",
                         "password": inline_password}},
            )  # fmt: skip
        bodies = await _bodies(db)
        assert {"trunk": "carrier"} in [b["sip"] for b in bodies]
        sealed = [b["sip"] for b in bodies if "password_sealed" in b["sip"]]
        assert len(sealed) == 1 and "password" not in sealed[0]
        key_file = Path(f"{db_file}.secret-key")
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        on_disk = _db_bytes(db_file)
        assert inline_password.encode() not in on_disk and b"old-password" not in on_disk

        _config(config, f"sip:{uas.uri_host}", password)  # the operator rotates it
        with RingcastServer(tmp_path, db=db, args=["--config", str(config)]) as rc:
            for rid in (trunked, inline):
                record = rc.wait_ready(rid, timeout=40)["record"]
                assert record["answered"] is True, (record, uas.errors(), uas2.errors())
        assert rc.stop() in (0, None)
    on_disk = _db_bytes(db_file)
    for secret in (password, inline_password):
        assert secret.encode() not in on_disk
    # the request is final: its sealed password is gone too
    assert all("password_sealed" not in (b["sip"] or {}) for b in await _bodies(db))
    assert password not in "".join(uas.received())  # only the digest went out


@pytest.fixture
async def pg_client(pg_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Store]]:
    store = open_store(pg_url)
    await store.migrate()
    settings = Settings(db=pg_url, secret_key=new_key_text())
    app = create_app(settings, store)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
        ):
            yield c, store
    finally:
        await store.close()


@pytest.mark.postgres
async def test_a_postgresql_dump_holds_no_password(
    pg_url: str, pg_client: tuple[httpx.AsyncClient, Store]
) -> None:
    client, _ = pg_client
    password = "Pg-" + uuid.uuid4().hex
    sip = {"proxy": "sip:gw.example.com", "username": "u", "password": password}
    body = {"to": "sip:alice@example.com", "playlist": [{"pause": 0.2}], "sip": sip}
    resp = await client.post("/voice/call/play", json=body)
    assert resp.status_code == 200, resp.text
    rid = resp.json()["request_id"]

    def dump() -> str:
        out = subprocess.run(
            ["pg_dump", "--data-only", "--no-owner", pg_url],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert "COPY public.requests" in out.stdout
        return out.stdout

    first = dump()
    assert password not in first
    assert "password_sealed" in first  # kept, sealed, while the call waits
    assert (await client.delete(f"/voice/call/{rid}")).status_code == 200
    assert "password_sealed" not in dump()  # final: erased


@pytest.mark.postgres
async def test_inline_passwords_need_a_key_on_postgresql(pg_url: str) -> None:
    store = open_store(pg_url)
    await store.migrate()
    app = create_app(Settings(db=pg_url), store)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
        ):
            body = {
                "to": "sip:alice@example.com",
                "playlist": [{"pause": 0.2}],
                "sip": {"username": "u", "password": "x"},
            }
            resp = await c.post("/voice/call/play", json=body)
            assert resp.status_code == 422, resp.text
            assert resp.json()["error"]["field"] == "sip.password"
            assert "RINGCAST_SECRET_KEY" in resp.json()["error"]["message"]
    finally:
        await store.close()
