"""Recipients given as numbers at the API (issue 15 part 1): accepted with a
trunk, refused with a 422 naming the recipient when the number is invalid or
has no trunk to go through; stored and reported as given."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from ringcast.api import create_app
from ringcast.config import Settings
from ringcast.store import Store

PLAY = [{"pause": 1}]
TRUNKS = {
    "carrier": {"proxy": "sip:gw.carrier.example:5060"},
    "us": {"proxy": "sip:gw.carrier.example:5060", "country": "US"},
}


def _app(store: Store, **kw: Any) -> Any:
    return create_app(Settings(db=store.url, trunks=TRUNKS, **kw), store)


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = _app(store, default_trunk="carrier")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        yield c


@pytest.fixture
async def no_default(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = _app(store)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        yield c


def _error(resp: httpx.Response, field: str) -> str:
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert (body["status"], body["data"], body["error"]["field"]) == (422, "error", field), body
    return str(body["error"]["message"])


async def test_numbers_are_accepted_and_kept_as_given(client: httpx.AsyncClient) -> None:
    given = ["+15550100001", "tel:+1-555-010-0002", "sip:alice@example.com", "(201) 555-0123"]
    resp = await client.post(
        "/voice/call/play",
        json={
            "recipients": [{"to": t} for t in given],
            "country": "US",
            "from": "+15550100099",
            "playlist": PLAY,
        },
    )
    assert resp.status_code == 200, resp.text
    status = (await client.get(f"/voice/call/status/{resp.json()['request_id']}")).json()
    report = (await client.get(status["report"]["location"])).json()
    assert [r["to"] for r in report["records"]] == given
    assert {r["from"] for r in report["records"]} == {"+15550100099"}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"to": "+123"}, "to", "'+123' is not a possible phone number"),
        ({"to": "tel:+1-555"}, "to", "is not a possible phone number"),
        ({"to": "555 0100"}, "to", "recipient '555 0100' is not in E.164 (+CC...)"),
        (
            {"recipients": [{"to": "sip:a@b.example"}, {"to": "12"}], "country": "US"},
            "recipients[1].to",
            "recipient '12' is not a possible phone number in US",
        ),
        ({"to": "+15550100001", "country": "XX"}, "country", "is not a country code"),
        ({"to": "call me"}, "to", "a tel: URI or a phone number like +15550100001"),
    ],
)
async def test_an_invalid_number_is_a_422_naming_the_recipient(
    client: httpx.AsyncClient, body: dict[str, Any], field: str, message: str
) -> None:
    resp = await client.post("/voice/call/play", json={**body, "playlist": PLAY})
    assert message in _error(resp, field)


async def test_the_trunks_country_reads_national_numbers(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/voice/call/play",
        json={"to": "(201) 555-0123", "sip": {"trunk": "us"}, "playlist": PLAY},
    )
    assert resp.status_code == 200, resp.text


async def test_a_number_without_a_trunk_is_a_422(no_default: httpx.AsyncClient) -> None:
    resp = await no_default.post(
        "/voice/call/play",
        json={"recipients": [{"to": "sip:a@b.example"}, {"to": "+15550100001"}], "playlist": PLAY},
    )
    message = _error(resp, "recipients[1].to")
    assert message.startswith("recipient +15550100001 is a phone number: it needs a trunk")
    ok = await no_default.post(
        "/voice/call/play",
        json={"to": "+15550100001", "sip": {"trunk": "carrier"}, "playlist": PLAY},
    )
    assert ok.status_code == 200, ok.text
