"""API keys, tenants, rate limits and destination allowlists over real SQLite files
and real PostgreSQL databases (through the ASGI app), plus `ringcast keys` and
`ringcast serve`'s refusal to listen beyond loopback without a key, as real processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import free_port

from ringcast.api import create_app
from ringcast.api.auth import check_bind_policy
from ringcast.config import Settings
from ringcast.errors import ConfigError
from ringcast.store import Store, dnc
from ringcast.store import keys as store_keys
from ringcast.store.models import api_keys_table, requests_table

RINGCAST = str(Path(sys.executable).parent / "ringcast")
BODY: dict[str, Any] = {
    "recipients": [{"to": "sip:5551000@gw.example.com"}, {"to": "sip:5551001@gw.example.com"}],
    "from": "me",
    "playlist": [{"say": "hello"}],
}
ONE: dict[str, Any] = {"to": "sip:5551000@gw.example.com", "playlist": [{"pause": 1}]}


def client_for(store: Store, **settings: Any) -> httpx.AsyncClient:
    app = create_app(Settings(db=store.url, **settings), store)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rc.test")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(resp: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert (body["status"], body["code"], body["data"]) == (status, code, "error")
    assert isinstance(body["request_id"], str) and body["error"]["message"]
    return dict(body["error"])


async def test_the_api_reference_is_open_and_declares_the_bearer_scheme(store: Store) -> None:
    await store_keys.create_key(store, "ops")
    async with client_for(store) as c:
        docs = await c.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        spec = await c.get("/openapi.json")
        assert spec.status_code == 200, spec.text
        doc = spec.json()
        assert doc["components"]["securitySchemes"]["bearer"] == {
            "type": "http",
            "scheme": "bearer",
            "description": "ringcast keys create",
        }
        assert doc["security"] == [{"bearer": []}, {}]  # {}: open while no key exists
        assert doc["paths"]["/health"]["get"]["security"] == []
        assert "/voices" in doc["paths"] and "/dnc" in doc["paths"]
        # a key-less 401 reads like every other error: the same envelope, the same JSON
        denied = await c.get("/report/x")
        not_found = await c.get("/report/x", headers=bearer((await _key(store)).key))
        assert denied.status_code == 401 and not_found.status_code == 404
        for resp in (denied, not_found):
            assert resp.headers["content-type"] == "application/json"
            assert set(resp.json()) == {"code", "status", "data", "request_id", "error"}
            assert resp.content == json.dumps(resp.json(), separators=(",", ":")).encode()


async def _key(store: Store) -> store_keys.CreatedKey:
    return await store_keys.create_key(store, "reader")


async def test_open_on_loopback_while_no_key_exists(store: Store) -> None:
    async with client_for(store) as c:
        resp = await c.post("/voice/call/play", json=BODY)
        assert resp.status_code == 200, resp.text
        assert (await c.get("/dnc")).status_code == 200
        assert (await c.get("/metrics")).status_code == 200
    async with store.engine.connect() as conn:
        row = (
            await conn.execute(sa.select(requests_table.c.tenant, requests_table.c.api_key_id))
        ).one()
    assert (row.tenant, row.api_key_id) == ("default", None)


async def test_every_endpoint_but_health_needs_a_key_once_one_exists(store: Store) -> None:
    made = await store_keys.create_key(store, "ops")
    async with client_for(store) as c:
        for method, path in [
            ("POST", "/voice/call/play"),
            ("GET", "/voice/call/status/x"),
            ("GET", "/report/x"),
            ("DELETE", "/voice/call/x"),
            ("GET", "/dnc"),
            ("GET", "/metrics"),
            ("GET", "/no/such/path"),
        ]:
            resp = await c.request(method, path, json=BODY if method == "POST" else None)
            assert_error(resp, 401, 1007)
            assert resp.headers["www-authenticate"].startswith("Bearer")
        assert (await c.get("/health")).status_code == 200
        wrong = await c.get("/dnc", headers=bearer(made.key + "x"))
        assert wrong.content == json.dumps(wrong.json(), separators=(",", ":")).encode()
        assert "not valid" in assert_error(wrong, 401, 1007)["message"]
        assert_error(await c.get("/dnc", headers={"Authorization": made.key}), 401, 1007)
        assert_error(await c.get("/dnc", headers=bearer("x" * 5000)), 401, 1007)
        ok = await c.post("/voice/call/play", json=BODY, headers=bearer(made.key))
        assert ok.status_code == 200, ok.text
        assert (await c.get("/metrics", headers=bearer(made.key))).status_code == 200
    async with store.engine.connect() as conn:
        row = (
            await conn.execute(sa.select(requests_table.c.tenant, requests_table.c.api_key_id))
        ).one()
    # without --tenant a key is its own tenant
    assert (row.tenant, row.api_key_id) == (made.info.id, made.info.id)
    async with store.engine.connect() as conn:
        stored = (await conn.execute(sa.select(api_keys_table))).one()
    assert stored.key_hash == store_keys.hash_key(made.key)
    assert made.key not in json.dumps([str(v) for v in stored])  # only the hash is kept


async def test_tenants_see_only_their_own_requests_calls_reports_and_dnc(store: Store) -> None:
    a1 = await store_keys.create_key(store, "a1", tenant="acme")
    a2 = await store_keys.create_key(store, "a2", tenant="acme")
    other = await store_keys.create_key(store, "globex")
    async with client_for(store) as c:
        many = (await c.post("/voice/call/play", json=BODY, headers=bearer(a1.key))).json()
        single = (await c.post("/voice/call/play", json=ONE, headers=bearer(a1.key))).json()
        rid, sid = many["request_id"], single["request_id"]
        status = (await c.get(f"/voice/call/status/{rid}", headers=bearer(a1.key))).json()
        report_id = status["report"]["id"]
        record = (await c.get(f"/voice/call/status/{sid}", headers=bearer(a1.key))).json()
        call_id = record["record"]["id"]

        for path in [
            f"/voice/call/status/{rid}",
            f"/voice/call/status/{call_id}",
            f"/report/{report_id}",
        ]:
            assert (await c.get(path, headers=bearer(a2.key))).status_code == 200, path
            assert_error(await c.get(path, headers=bearer(other.key)), 404, 1004)
        for fmt in ("csv", "ndjson"):
            resp = await c.get(f"/report/{report_id}?format={fmt}", headers=bearer(other.key))
            assert_error(resp, 404, 1004)
        assert_error(await c.delete(f"/voice/call/{rid}", headers=bearer(other.key)), 404, 1004)
        still = (await c.get(f"/voice/call/status/{rid}", headers=bearer(a1.key))).json()
        assert still["report"]["total"] == 2
        assert (await c.delete(f"/voice/call/{rid}", headers=bearer(a2.key))).status_code == 200

        added = await c.post("/dnc", json={"entries": ["5551000"]}, headers=bearer(a1.key))
        assert added.json()["added"] == 1
        assert (await c.get("/dnc", headers=bearer(other.key))).json()["entries"] == []
        assert [
            e["entry"] for e in (await c.get("/dnc", headers=bearer(a2.key))).json()["entries"]
        ] == ["5551000"]
        assert_error(await c.delete("/dnc/5551000", headers=bearer(other.key)), 404, 1004)
        # the same Idempotency-Key in two tenants is two requests
        h = {"Idempotency-Key": "k-1"}
        r1 = await c.post("/voice/call/play", json=ONE, headers={**h, **bearer(a1.key)})
        r2 = await c.post("/voice/call/play", json=ONE, headers={**h, **bearer(other.key)})
        assert r1.json()["request_id"] != r2.json()["request_id"]


async def test_per_key_post_rate_limit(store: Store) -> None:
    slow = await store_keys.create_key(store, "slow", rate_limit=2)
    free = await store_keys.create_key(store, "free")
    async with client_for(store) as c:
        for _ in range(2):
            assert (
                await c.post("/voice/call/play", json=ONE, headers=bearer(slow.key))
            ).status_code == 200
        limited = await c.post("/voice/call/play", json=ONE, headers=bearer(slow.key))
        error = assert_error(limited, 429, 1008)
        assert "2 POST requests per minute" in error["message"]
        assert 1 <= int(limited.headers["retry-after"]) <= 30
        # GETs are not limited, other keys are not affected
        assert (await c.get("/dnc", headers=bearer(slow.key))).status_code == 200
        assert (
            await c.post("/voice/call/play", json=ONE, headers=bearer(free.key))
        ).status_code == 200
    async with store.engine.connect() as conn:
        n = await conn.scalar(sa.select(sa.func.count()).select_from(requests_table))
    assert n == 3


async def test_destination_allowlist(store: Store) -> None:
    key = await store_keys.create_key(
        store, "narrow", allow={"domains": ["example.com"], "prefixes": ["555"]}
    )
    async with client_for(store) as c:
        ok = await c.post("/voice/call/play", json=BODY, headers=bearer(key.key))
        assert ok.status_code == 200, ok.text
        premium = {
            **BODY,
            "recipients": [*BODY["recipients"], {"to": "sip:1900777@gw.example.com"}],
        }
        error = assert_error(
            await c.post("/voice/call/play", json=premium, headers=bearer(key.key)), 422, 1009
        )
        assert error["field"] == "recipients[2].to"
        assert "sip:1900777@gw.example.com" in error["message"]
        elsewhere = {**ONE, "to": "sip:5551000@gw.other.net"}
        error = assert_error(
            await c.post("/voice/call/play", json=elsewhere, headers=bearer(key.key)), 422, 1009
        )
        assert error["field"] == "to"
        via = {**ONE, "sip": {"proxy": "sip:premium.other.net"}}
        error = assert_error(
            await c.post("/voice/call/play", json=via, headers=bearer(key.key)), 422, 1009
        )
        assert error["field"] == "sip.proxy"
    async with store.engine.connect() as conn:
        n = await conn.scalar(sa.select(sa.func.count()).select_from(requests_table))
    assert n == 1


async def test_revoked_key_is_refused(store: Store) -> None:
    keep = await store_keys.create_key(store, "keep")
    gone = await store_keys.create_key(store, "gone")
    revoked = await store_keys.revoke_key(store, gone.info.id)
    assert revoked is not None and revoked.revoked_at is not None
    async with client_for(store) as c:
        assert_error(await c.get("/dnc", headers=bearer(gone.key)), 401, 1007)
        assert (await c.get("/dnc", headers=bearer(keep.key))).status_code == 200
    listed = {k.name: k for k in await store_keys.list_keys(store)}
    assert listed["gone"].revoked_at is not None and listed["keep"].active
    assert await store_keys.revoke_key(store, "no-such-key") is None
    # with every key revoked the loopback server is open again
    await store_keys.revoke_key(store, "keep")
    async with client_for(store) as c:
        assert (await c.get("/dnc")).status_code == 200


async def test_beyond_loopback_without_a_key(store: Store) -> None:
    wide = Settings(db=store.url, http_host="0.0.0.0")
    with pytest.raises(ConfigError) as err:
        await check_bind_policy(wide, store)
    assert "--insecure-no-auth" in err.value.message
    async with client_for(store, http_host="0.0.0.0") as c:
        assert_error(await c.get("/dnc"), 401, 1007)
        assert (await c.get("/health")).status_code == 200
    async with client_for(store, http_host="0.0.0.0", insecure_no_auth=True) as c:
        assert (await c.get("/dnc")).status_code == 200
    await check_bind_policy(Settings(db=store.url, insecure_no_auth=True, http_host="::"), store)
    await store_keys.create_key(store, "k")
    await check_bind_policy(wide, store)


# --- real processes ------------------------------------------------------------------------


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RINGCAST, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def test_keys_cli_and_serve_refusal(tmp_path: Path, db_url: str) -> None:
    made = run("keys", "create", "--name", "ops", "--tenant", "acme", "--rate", "30",
               "--allow-domain", "Example.com", "--allow-prefix", "555",
               "--db", db_url, "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["key"].startswith("rc_") and created["webhook_secret"].startswith("whsec_")
    assert created["tenant"] == "acme" and created["rate_limit"] == 30
    assert created["allow"] == {"domains": ["example.com"], "prefixes": ["555"]}
    text = run("keys", "create", "--name", "plain", "--db", db_url)
    assert text.returncode == 0, text.stderr
    assert "rc_" in text.stdout and "whsec_" in text.stdout

    listed = run("keys", "list", "--db", db_url, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert sorted(r["name"] for r in rows) == ["ops", "plain"]  # created in the same second
    dumped = listed.stdout + run("keys", "list", "--db", db_url).stdout
    assert created["key"] not in dumped and created["webhook_secret"] not in dumped
    assert created["key"][:8] in dumped  # the display prefix

    revoked = run("keys", "revoke", created["id"], "--db", db_url)
    assert revoked.returncode == 0, revoked.stderr
    assert run("keys", "revoke", "nope", "--db", db_url).returncode == 1
    assert run("keys", "create", "--name", "x").returncode == 2  # --db is required

    # a fresh database with no key: serve refuses a non-loopback address
    empty = f"sqlite:///{tmp_path}/empty.db"
    port = free_port(socket.SOCK_STREAM)
    sip = free_port()
    refused = run("serve", "--db", empty, "--http", f"0.0.0.0:{port}", "--sip", f"127.0.0.1:{sip}")
    assert refused.returncode != 0
    assert "--insecure-no-auth" in refused.stderr
    assert "refusing to serve" in refused.stderr


async def test_the_install_wide_list_needs_an_operator_key(store: Store) -> None:
    plain = await store_keys.create_key(store, "shop", tenant="acme")
    operator = await store_keys.create_key(store, "ops", tenant="acme", operator=True)
    async with client_for(store) as c:
        install = {"list": "install"}
        body = {"entries": ["+1 555 010 0009"]}
        denied = await c.post("/dnc", params=install, json=body, headers=bearer(plain.key))
        assert assert_error(denied, 403, 1010)["field"] == "list"
        assert_error(await c.get("/dnc", params=install, headers=bearer(plain.key)), 403, 1010)
        ok = await c.post("/dnc", params=install, json=body, headers=bearer(operator.key))
        assert ok.status_code == 200 and ok.json()["added"] == 1
        listed = await c.get("/dnc", params=install, headers=bearer(operator.key))
        assert [e["entry"] for e in listed.json()["entries"]] == ["+15550100009"]
        # the tenant's own list is apart
        assert (await c.get("/dnc", headers=bearer(plain.key))).json()["entries"] == []
    assert await dnc.listed(store, "anyone", ["sip:+15550100009@127.0.0.1"])


async def test_data_from_before_the_first_key_belongs_to_the_default_tenant(
    store: Store,
) -> None:
    async with client_for(store) as c:  # no key yet: open on loopback, tenant default
        assert (await c.post("/dnc", json={"entries": ["optme"]})).status_code == 200
        made = await c.post("/voice/call/play", json=BODY)
        rid = made.json()["request_id"]
    acme = await store_keys.create_key(store, "acme", tenant="acme")
    default = await store_keys.create_key(store, "ops", tenant="default")
    async with client_for(store) as c:
        hidden = await c.get(f"/voice/call/status/{rid}", headers=bearer(acme.key))
        assert hidden.status_code == 404
        assert (await c.get("/dnc", headers=bearer(acme.key))).json()["entries"] == []
        seen = await c.get(f"/voice/call/status/{rid}", headers=bearer(default.key))
        assert seen.status_code == 200, seen.text
        entries = (await c.get("/dnc", headers=bearer(default.key))).json()["entries"]
        assert [e["entry"] for e in entries] == ["optme"]
    # and the default tenant's list still stops its calls
    assert await dnc.listed(store, "default", ["sip:optme@127.0.0.1:5071"])
