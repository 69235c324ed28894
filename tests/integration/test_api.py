"""The HTTP API over real SQLite files and real PostgreSQL databases.

Every test runs on both backends. Finished call records are written straight
into the `calls` rows (a test fixture standing in for the dialer).
"""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from ringcast.api import create_app
from ringcast.config import Settings
from ringcast.sealing import Sealer, decode_key, new_key_text
from ringcast.store import Store, open_store
from ringcast.store.models import call_attempts_table, calls_table, requests_table
from ringcast.store.records import RECORD_FIELDS

SECRET_KEY = new_key_text()

# The article's multi-recipient request, with the `]` that closes `recipients` restored.
ARTICLE_REQUEST = """{
  "recipients":
    [
      {
    "to": "sip:123456@192.168.1.1:5060"
},
  {
    "to": "sip:alice@192.168.1.1:5060"
},
  {
    "to": "sip:bob@192.168.1.1:5060"
},
  {
    "to": "sip:charlie@192.168.1.1:5060"
},
  {
    "to": "sip:999777@192.168.1.1:5060"
}
    ],
  "from": "me",
  "playlist":
    [
      {
        "play": "http://server.domain.com/voices/hello.wav"
      }
    ]
}"""

# The article's report records (ids aside). Its second record prints the URI as
# "sip:alice192.168.1.1:5060", a typo for the request's "sip:alice@192.168.1.1:5060".
ARTICLE_RECORDS: list[dict[str, Any]] = [
    {
        "type": "voice",
        "result": "completed",
        "request_time": "2018-05-02 12:15:32",
        "to": "sip:123456@192.168.1.1:5060",
        "from": "me",
        "setup_time": "2018-05-02 12:15:32",
        "connect_time": "2018-05-02 12:15:45",
        "disconnect_time": "2018-05-02 12:16:02",
        "disconnect_cause_code": "200",
        "disconnect_cause_text": "OK",
        "duration": 17,
        "answered": True,
    },
    {
        "type": "voice",
        "result": "completed",
        "request_time": "2018-05-02 12:15:32",
        "to": "sip:alice@192.168.1.1:5060",
        "from": "me",
        "setup_time": "2018-05-02 12:15:32",
        "connect_time": "2018-05-02 12:15:50",
        "disconnect_time": "2018-05-02 12:16:05",
        "disconnect_cause_code": "200",
        "disconnect_cause_text": "OK",
        "duration": 15,
        "answered": True,
    },
    {
        "type": "voice",
        "result": "completed",
        "request_time": "2018-05-02 12:15:32",
        "to": "sip:bob@192.168.1.1:5060",
        "from": "me",
        "setup_time": "2018-05-02 12:15:32",
        "connect_time": "2018-05-02 12:15:40",
        "disconnect_time": "2018-05-02 12:15:50",
        "disconnect_cause_code": "200",
        "disconnect_cause_text": "OK",
        "duration": 10,
        "answered": True,
    },
    {
        "type": "voice",
        "result": "completed",
        "request_time": "2018-05-02 12:15:32",
        "to": "sip:charlie@192.168.1.1:5060",
        "from": "me",
        "setup_time": "2018-05-02 12:15:32",
        "disconnect_time": "2018-05-02 12:16:02",
        "disconnect_cause_code": "487",
        "disconnect_cause_text": "Request Terminated",
        "duration": 0,
        "answered": False,
    },
    {
        "type": "voice",
        "result": "completed",
        "request_time": "2018-05-02 12:15:32",
        "to": "sip:999777@192.168.1.1:5060",
        "from": "me",
        "setup_time": "2018-05-02 12:15:32",
        "disconnect_time": "2018-05-02 12:16:42",
        "disconnect_cause_code": "486",
        "disconnect_cause_text": "User Busy",
        "duration": 0,
        "answered": False,
    },
]
OUTCOMES = ["answered", "answered", "answered", "no-answer", "busy"]

PLAY = [{"play": "http://server.domain.com/voices/hello.wav"}]
TRUNKS = {
    "carrier": {
        "proxy": "sip:gw.carrier.example:5060",
        "username": "acct",
        "password": "trunk-secret",
        "headers": {"X-Account": "42"},
    }
}


def make_settings(store: Store, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "db": store.url,
        "max_recipients": 1000,
        "trunks": TRUNKS,
        "secret_key": SECRET_KEY,  # seals inline SIP passwords (PostgreSQL needs one given)
    }
    base.update(kw)
    return Settings(**base)


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(store), store)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ringcast.test"
        ) as c,
    ):
        yield c


async def counts(store: Store) -> tuple[int, int]:
    async with store.engine.connect() as conn:
        n_req = await conn.scalar(sa.select(sa.func.count()).select_from(requests_table))
        n_calls = await conn.scalar(sa.select(sa.func.count()).select_from(calls_table))
    return int(n_req or 0), int(n_calls or 0)


def is_uuid(value: Any) -> bool:
    try:
        return bool(str(uuid.UUID(str(value))) == value)
    except ValueError:
        return False


def t(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


async def finish_calls(store: Store, request_id: str, records: list[dict[str, Any]]) -> list[str]:
    """Test fixture in place of the dialer: write final results into the call rows."""
    async with store.session() as s, s.begin():
        rows = (
            await s.execute(
                sa.select(calls_table.c.id, calls_table.c.seq)
                .where(calls_table.c.request_id == request_id)
                .order_by(calls_table.c.seq)
            )
        ).all()
        for (call_id, _seq), rec, outcome in zip(rows, records, OUTCOMES, strict=False):
            await s.execute(
                sa.update(calls_table)
                .where(calls_table.c.id == call_id)
                .values(
                    result=rec["result"],
                    outcome=outcome,
                    request_time=t(rec["request_time"]),
                    setup_time=t(rec["setup_time"]),
                    connect_time=t(rec["connect_time"]) if "connect_time" in rec else None,
                    disconnect_time=t(rec["disconnect_time"]),
                    disconnect_cause_code=rec["disconnect_cause_code"],
                    disconnect_cause_text=rec["disconnect_cause_text"],
                    duration=rec["duration"],
                    answered=rec["answered"],
                    codec="PCMU",
                )
            )
    return [r[0] for r in rows]


def assert_error(resp: httpx.Response, status: int, field: str | None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["code"] != 0 and isinstance(body["code"], int)
    assert body["status"] == status
    assert body["data"] == "error"
    assert isinstance(body["request_id"], str) and body["request_id"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["error"]["field"] == field, body["error"]
    return dict(body)


# --- the article, replayed --------------------------------------------------------------


async def test_article_exchanges(client: httpx.AsyncClient, store: Store) -> None:
    # POST /voice/call/play with the article's (corrected) JSON, sent as raw bytes.
    resp = await client.post(
        "/voice/call/play",
        content=ARTICLE_REQUEST.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 200
    answer = resp.json()
    assert list(answer) == ["code", "status", "data", "request_id"]
    assert answer["code"] == 0
    assert answer["status"] == 200
    assert answer["data"] == "accepted"
    assert is_uuid(answer["request_id"])
    request_id = answer["request_id"]
    assert await counts(store) == (1, 5)

    # GET /voice/call/status/<request id> -> a report reference, pending for now.
    resp = await client.get(f"/voice/call/status/{request_id}")
    assert resp.status_code == 200
    status = resp.json()
    assert status["code"] == 0 and status["status"] == 200 and status["data"] == "accepted"
    assert status["request_id"] == request_id
    report = status["report"]
    assert is_uuid(report["id"])
    assert report["location"] == f"/report/{report['id']}"
    assert report["status"] == "pending"
    assert (report["total"], report["done"]) == (5, 0)

    call_ids = await finish_calls(store, request_id, ARTICLE_RECORDS)
    resp = await client.get(f"/voice/call/status/{request_id}")
    assert resp.json()["report"]["status"] == "ready"
    assert resp.json()["report"]["done"] == 5

    # GET /report/<report id> -> every record with the article's fields and values.
    resp = await client.get(f"/report/{report['id']}")
    assert resp.status_code == 200
    full = resp.json()
    assert full["code"] == 0 and full["status"] == 200 and full["data"] == "accepted"
    assert full["request_id"] == report["id"]
    assert full["report_status"] == "ready"
    assert full["next_cursor"] is None
    assert len(full["records"]) == 5
    for record, expected, call_id, outcome in zip(
        full["records"], ARTICLE_RECORDS, call_ids, OUTCOMES, strict=True
    ):
        assert record["id"] == call_id
        for key, value in expected.items():
            assert record[key] == value, (key, record)
        assert record["outcome"] == outcome
        assert record["attempt"] == 1
        # the article's fields first, in the article's order
        article_keys = [k for k in record if k in expected or k == "id"]
        assert article_keys == [k for k in RECORD_FIELDS if k in expected or k == "id"]
        assert list(record)[:2] == ["type", "id"]
    assert "connect_time" not in full["records"][4]

    # GET /voice/call/status/<call id> -> that call's record.
    busy = call_ids[4]
    resp = await client.get(f"/voice/call/status/{busy}")
    assert resp.status_code == 200
    one = resp.json()
    assert one["code"] == 0 and one["status"] == 200 and one["data"] == "accepted"
    assert one["request_id"] == busy
    for key, value in ARTICLE_RECORDS[4].items():
        assert one["record"][key] == value
    assert one["record"]["id"] == busy


async def test_single_recipient_status_gives_record(
    client: httpx.AsyncClient, store: Store
) -> None:
    resp = await client.post(
        "/voice/call/play",
        json={"to": "sip:bob@example.com", "from": "me", "playlist": PLAY},
    )
    rid = resp.json()["request_id"]
    resp = await client.get(f"/voice/call/status/{rid}")
    assert resp.status_code == 200
    body = resp.json()
    assert body["request_id"] == rid
    record = body["record"]
    assert record["type"] == "voice" and record["result"] == "queued"
    assert record["to"] == "sip:bob@example.com" and record["from"] == "me"
    assert record["duration"] == 0 and record["answered"] is False
    assert "setup_time" not in record and "disconnect_time" not in record
    assert "report" not in body


async def test_design_example_is_stored_normalized(client: httpx.AsyncClient, store: Store) -> None:
    body = {
        "recipients": [
            {"to": "sip:alice@192.168.1.1:5060", "variables": {"name": "Alice"}},
            {"to": "sip:bob@example.com", "from": '"Bob Line" <sip:bobline@example.com>'},
        ],
        "from": "me",
        "playlist": [
            {"play": "http://server.domain.com/voices/hello.wav", "loop": 1},
            {"say": "Hello {name}, your appointment is at nine.", "voice": "en-us", "rate": 160},
            {"pause": 1.5},
            {"dtmf": "1#"},
            {"gather": {"digits": 1, "timeout": 5, "optout": "9"}},
        ],
        "ring_timeout": 30,
        "max_duration": 600,
        "retry": {"attempts": 1, "delay": 60, "on": ["busy", "no-answer"]},
        "sip": {
            "proxy": "sip:gw.example.com:5060",
            "username": "u",
            "password": "p-secret",
            "transport": "udp",
            "codecs": ["PCMU", "PCMA"],
            "headers": {"X-Campaign": "spring"},
        },
        "schedule": {
            "not_before": "2030-01-02T09:00:00",
            "window": {"start": "09:00", "end": "20:00", "days": ["mon", "tue"]},
            "timezone": "Europe/Riga",
        },
        "callback_url": "https://app.example.com/hooks/ringcast",
        "max_concurrent": 5,
        "cps": 2.5,
    }
    resp = await client.post("/voice/call/play", json=body)
    assert resp.status_code == 200, resp.text
    assert "p-secret" not in resp.text
    rid = resp.json()["request_id"]
    async with store.engine.connect() as conn:
        req = (await conn.execute(sa.select(requests_table))).one()
        calls = (await conn.execute(sa.select(calls_table).order_by(calls_table.c.seq))).all()
    stored = req.body
    assert req.id == rid and req.total == 2 and req.tenant == "default"
    assert stored["from"] == "me"
    # the dialer needs it: sealed with the install's key, never in the clear
    assert "password" not in stored["sip"]
    assert Sealer(decode_key(SECRET_KEY)).unseal(stored["sip"]["password_sealed"]) == "p-secret"
    assert stored["retry"] == {"attempts": 1, "delay": 60.0, "on": ["busy", "no-answer"]}
    assert stored["playlist"][2] == {"pause": 1.5, "loop": 1}
    assert stored["playlist"][4] == {
        "gather": {"digits": 1, "timeout": 5.0, "optout": "9", "barge_in": True}
    }
    assert stored["schedule"]["timezone"] == "Europe/Riga"
    assert (stored["max_concurrent"], stored["cps"]) == (5, 2.5)
    assert "recipients" not in stored
    assert [c.seq for c in calls] == [0, 1]
    assert calls[0].variables == {"name": "Alice"} and calls[0].from_uri == "me"
    assert calls[1].from_uri == '"Bob Line" <sip:bobline@example.com>'
    # 09:00 in Riga on 2 Jan 2030 is 07:00 UTC
    assert calls[0].not_before == datetime(2030, 1, 2, 7, 0, tzinfo=UTC)
    assert all(c.result == "queued" and c.attempt == 1 for c in calls)
    # the secret never comes back through the API
    status = await client.get(f"/voice/call/status/{rid}")
    assert "p-secret" not in status.text


async def test_not_before_without_offset_is_due_in_each_recipients_zone(
    client: httpx.AsyncClient, store: Store
) -> None:
    """09:00 is 14:00 UTC in New York (the request's zone) and 00:00 UTC in Tokyo
    (one recipient's own): the calls may be claimed from the earliest of the two,
    and each is then held to its own 09:00 by the dialer's policy."""
    from ringcast.dialer.policy import earliest_dial_time

    schedule = {"not_before": "2030-01-02T09:00:00", "timezone": "America/New_York"}
    body = {
        "recipients": [
            {"to": "sip:ny@example.com"},
            {"to": "sip:tokyo@example.com", "timezone": "Asia/Tokyo"},
        ],
        "from": "me",
        "playlist": [{"pause": 1}],
        "schedule": schedule,
    }
    resp = await client.post("/voice/call/play", json=body)
    assert resp.status_code == 200, resp.text
    async with store.engine.connect() as conn:
        calls = (await conn.execute(sa.select(calls_table).order_by(calls_table.c.seq))).all()
    tokyo_nine = datetime(2030, 1, 2, 0, 0, tzinfo=UTC)
    assert [c.not_before for c in calls] == [tokyo_nine, tokyo_nine]
    claimed_at = tokyo_nine
    assert [earliest_dial_time(claimed_at, schedule, c.timezone) for c in calls] == [
        datetime(2030, 1, 2, 14, 0, tzinfo=UTC),
        tokyo_nine,
    ]


async def test_named_trunk_is_stored_by_name_not_resolved(
    client: httpx.AsyncClient, store: Store
) -> None:
    resp = await client.post(
        "/voice/call/play",
        json={
            "to": "sip:100@carrier",
            "playlist": PLAY,
            "sip": {"trunk": "carrier", "headers": {"X-Campaign": "c1"}},
        },
    )
    assert resp.status_code == 200, resp.text
    async with store.engine.connect() as conn:
        body = (await conn.execute(sa.select(requests_table.c.body))).scalar_one()
    # the trunk by name: its proxy and credentials are read from the config at dial time
    assert body["sip"] == {"headers": {"X-Campaign": "c1"}, "trunk": "carrier"}


# --- bad input: status, envelope, field, and nothing stored ------------------------------


async def test_machine_detection_and_voicemail_are_stored(
    client: httpx.AsyncClient, store: Store
) -> None:
    body = {
        "to": "sip:alice@example.com",
        "playlist": [{"say": "Hello"}],
        "machine_detection": {"mode": "drop", "timeout": 5},
        "voicemail": [{"say": "Sorry we missed you"}, {"pause": 0.5}],
    }
    resp = await client.post("/voice/call/play", json=body)
    assert resp.status_code == 200, resp.text
    async with store.engine.connect() as conn:
        stored = (await conn.execute(sa.select(requests_table))).one().body
    assert stored["machine_detection"] == {"mode": "drop", "timeout": 5.0}
    assert stored["voicemail"] == [
        {"say": "Sorry we missed you", "loop": 1},
        {"pause": 0.5, "loop": 1},
    ]


GOOD: dict[str, Any] = {"to": "sip:alice@example.com", "from": "me", "playlist": PLAY}


def with_(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def item(**fields: Any) -> dict[str, Any]:
    return with_(playlist=[fields])


BAD_BODIES: list[tuple[str, dict[str, Any] | list[Any], str | None]] = [
    ("to and recipients", with_(recipients=[{"to": "sip:b@example.com"}]), "to"),
    ("neither to nor recipients", with_(to=...), "to"),
    ("empty recipients", with_(to=..., recipients=[]), "recipients"),
    ("recipients not a list", with_(to=..., recipients={"to": "sip:a@b.c"}), "recipients"),
    ("recipient without to", with_(to=..., recipients=[{"from": "me"}]), "recipients[0].to"),
    (
        "bad second recipient",
        with_(to=..., recipients=[{"to": "sip:a@b.com"}, {"to": "tel:+123"}]),
        "recipients[1].to",
    ),
    (
        "recipient variable not a string",
        with_(to=..., recipients=[{"to": "sip:a@b.com", "variables": {"n": 1}}]),
        "recipients[0].variables.n",
    ),
    (
        "recipient bad timezone",
        with_(to=..., recipients=[{"to": "sip:a@b.com", "timezone": "Mars/Olympus"}]),
        "recipients[0].timezone",
    ),
    (
        "recipient unknown key",
        with_(to=..., recipients=[{"to": "sip:a@b.com", "phone": "1"}]),
        "recipients[0].phone",
    ),
    ("to not SIP", with_(to="http://example.com"), "to"),
    ("to without host", with_(to="sip:"), "to"),
    ("to with bad port", with_(to="sip:alice@example.com:99999"), "to"),
    ("to with CRLF", with_(to="sip:alice@example.com\r\nX-Evil: 1"), "to"),
    ("to with NUL", with_(to="sip:alice@example.com\x00"), "to"),
    ("to not a string", with_(to=12345), "to"),
    ("from with CRLF", with_(**{"from": "me\r\nX-Evil: 1"}), "from"),
    ("from with tab", with_(**{"from": "m\te"}), "from"),
    ("from with space", with_(**{"from": "not a user"}), "from"),
    ("from bad uri", with_(**{"from": '"Me" <http://x>'}), "from"),
    ("playlist missing", with_(playlist=...), "playlist"),
    ("playlist empty", with_(playlist=[]), "playlist"),
    ("playlist not a list", with_(playlist={"play": "http://a.b/c.wav"}), "playlist"),
    ("unknown item", item(beep=1), "playlist[0]"),
    ("item not an object", with_(playlist=["http://a.b/c.wav"]), "playlist[0]"),
    ("two kinds in one item", item(play="http://a.b/c.wav", say="hi"), "playlist[0]"),
    ("unknown key in item", item(play="http://a.b/c.wav", volume=3), "playlist[0].volume"),
    ("play not http", item(play="ftp://a.b/c.wav"), "playlist[0].play"),
    ("play not a URL", item(play="hello.wav"), "playlist[0].play"),
    ("play private", item(play="http://127.0.0.1/x.wav"), "playlist[0].play"),
    ("loop zero", item(play="http://a.b/c.wav", loop=0), "playlist[0].loop"),
    ("loop string", item(play="http://a.b/c.wav", loop="2"), "playlist[0].loop"),
    ("say empty", item(say=""), "playlist[0].say"),
    ("say rate low", item(say="hi", rate=79), "playlist[0].rate"),
    ("say rate high", item(say="hi", rate=451), "playlist[0].rate"),
    ("pause zero", item(pause=0), "playlist[0].pause"),
    ("pause too long", item(pause=301), "playlist[0].pause"),
    ("pause string", item(pause="1"), "playlist[0].pause"),
    ("dtmf bad digit", item(dtmf="1X"), "playlist[0].dtmf"),
    ("dtmf empty", item(dtmf=""), "playlist[0].dtmf"),
    ("dtmf too long", item(dtmf="1" * 33), "playlist[0].dtmf"),
    ("gather digits 0", item(gather={"digits": 0}), "playlist[0].gather.digits"),
    ("gather digits 33", item(gather={"digits": 33}), "playlist[0].gather.digits"),
    ("gather timeout", item(gather={"digits": 1, "timeout": 121}), "playlist[0].gather.timeout"),
    ("gather optout", item(gather={"digits": 1, "optout": "99"}), "playlist[0].gather.optout"),
    ("transfer outside actions", item(transfer="sip:agent@example.com"), "playlist[0]"),
    (
        "actions bad key",
        item(gather={"actions": {"x": [{"hangup": True}]}}),
        "playlist[0].gather.actions.x.[key]",
    ),
    (
        "transfer to a number (needs a trunk: not yet)",
        item(gather={"actions": {"1": [{"transfer": "+15550100001"}]}}),
        "playlist[0].gather.actions.1[0].transfer",
    ),
    (
        "transfer bad mode",
        item(gather={"actions": {"1": [{"transfer": "sip:a@b.com", "mode": "attended"}]}}),
        "playlist[0].gather.actions.1[0].mode",
    ),
    (
        "transfer timeout",
        item(gather={"actions": {"1": [{"transfer": "sip:a@b.com", "timeout": 0}]}}),
        "playlist[0].gather.actions.1[0].timeout",
    ),
    (
        "hangup false",
        item(gather={"actions": {"default": [{"hangup": False}]}}),
        "playlist[0].gather.actions.default[0].hangup",
    ),
    (
        "hold item unknown",
        item(gather={"actions": {"1": [{"transfer": "sip:a@b.com", "hold": [{"beep": 1}]}]}}),
        "playlist[0].gather.actions.1[0].hold[0]",
    ),
    ("ring_timeout 0", with_(ring_timeout=0), "ring_timeout"),
    ("ring_timeout 301", with_(ring_timeout=301), "ring_timeout"),
    ("max_duration 0", with_(max_duration=0), "max_duration"),
    ("max_duration big", with_(max_duration=86401), "max_duration"),
    ("retry attempts", with_(retry={"attempts": 11}), "retry.attempts"),
    ("retry delay", with_(retry={"attempts": 1, "delay": -1}), "retry.delay"),
    ("retry on", with_(retry={"attempts": 1, "on": ["declined"]}), "retry.on[0]"),
    ("max_concurrent 0", with_(max_concurrent=0), "max_concurrent"),
    ("cps 0", with_(cps=0), "cps"),
    ("max_concurrent huge", with_(max_concurrent=10**26), "max_concurrent"),
    ("max_concurrent past int32", with_(max_concurrent=3_000_000_000), "max_concurrent"),
    ("cps tiny", with_(cps=1e-300), "cps"),
    ("cps huge", with_(cps=1e300), "cps"),
    (
        "not_before at the calendar's end",
        with_(schedule={"not_before": "9999-12-31T23:59:59-05:00"}),
        "schedule.not_before",
    ),
    (
        "not_before at the calendar's start",
        with_(schedule={"not_before": "0001-01-01T00:00:00+05:00"}),
        "schedule.not_before",
    ),
    (
        "not_before naive at the end, in a zone",
        with_(schedule={"not_before": "9999-12-31T23:00:00", "timezone": "America/New_York"}),
        "schedule.not_before",
    ),
    ("schedule not_before", with_(schedule={"not_before": "soon"}), "schedule.not_before"),
    (
        "schedule window start",
        with_(schedule={"window": {"start": "25:00", "end": "20:00"}}),
        "schedule.window.start",
    ),
    (
        "schedule window day",
        with_(schedule={"window": {"start": "09:00", "end": "20:00", "days": ["fun"]}}),
        "schedule.window.days[0]",
    ),
    ("schedule timezone", with_(schedule={"timezone": "Europe/Atlantis"}), "schedule.timezone"),
    ("sip proxy", with_(sip={"proxy": "http://gw.example.com"}), "sip.proxy"),
    ("sip transport", with_(sip={"transport": "sctp"}), "sip.transport"),
    ("sip codec", with_(sip={"codecs": ["G729"]}), "sip.codecs[0]"),
    ("sip codecs empty", with_(sip={"codecs": []}), "sip.codecs"),
    ("sip header name", with_(sip={"headers": {"X Bad": "1"}}), "sip.headers"),
    ("sip header CRLF", with_(sip={"headers": {"X-A": "1\r\nVia: evil"}}), "sip.headers"),
    ("sip header reserved", with_(sip={"headers": {"Via": "SIP/2.0/UDP x"}}), "sip.headers"),
    ("sip username CRLF", with_(sip={"username": "u\r\n"}), "sip.username"),
    ("sip unknown trunk", with_(sip={"trunk": "nope"}), "sip.trunk"),
    ("sip unknown key", with_(sip={"outbound": "x"}), "sip.outbound"),
    ("callback not http", with_(callback_url="ftp://app.example.com/h"), "callback_url"),
    ("callback private", with_(callback_url="http://10.0.0.1/hook"), "callback_url"),
    ("unknown top-level key", with_(urgency=1), "urgency"),
    ("priority above 10", with_(priority=11), "priority"),
    ("priority below 1", with_(priority=0), "priority"),
    ("priority not an integer", with_(priority="high"), "priority"),
    ("amd unknown mode", with_(machine_detection={"mode": "x"}), "machine_detection.mode"),
    ("amd timeout", with_(machine_detection={"timeout": 99}), "machine_detection.timeout"),
    ("voicemail without drop", with_(voicemail=[{"say": "hi"}]), "voicemail"),
    (
        "voicemail bad item",
        with_(machine_detection={"mode": "drop"}, voicemail=[{"beep": 1}]),
        "voicemail[0]",
    ),
    ("body is a list", [GOOD], None),
]


@pytest.mark.parametrize(
    ("body", "field"), [(b, f) for _, b, f in BAD_BODIES], ids=[n for n, _, _ in BAD_BODIES]
)
async def test_bad_input_is_refused_and_nothing_stored(
    client: httpx.AsyncClient, store: Store, body: Any, field: str | None
) -> None:
    resp = await client.post("/voice/call/play", json=body)
    error = assert_error(resp, 422, field)
    assert error["code"] == 1001
    assert await counts(store) == (0, 0)


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'{"to": "sip:a@b.c",',
        b"\xff\xfe",
        b"",
        b"   ",
        b"[" * 100_000 + b"]" * 100_000,  # nested past the parser's recursion limit
        b'{"to": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=lambda raw: repr(raw[:20]),
)
async def test_body_not_json_is_400(client: httpx.AsyncClient, store: Store, raw: bytes) -> None:
    resp = await client.post(
        "/voice/call/play", content=raw, headers={"Content-Type": "application/json"}
    )
    error = assert_error(resp, 400, None)
    assert error["code"] == 1002
    assert await counts(store) == (0, 0)


async def test_json_without_json_content_type_is_accepted(client: httpx.AsyncClient) -> None:
    # curl -d sends application/x-www-form-urlencoded; the body is still JSON.
    resp = await client.post(
        "/voice/call/play",
        content=json.dumps(GOOD).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 200, resp.text


@pytest.fixture
async def small_client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(store, max_body_bytes=2048, max_recipients=3), store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ringcast.test") as c:
        yield c


def many(n: int) -> dict[str, Any]:
    return with_(to=..., recipients=[{"to": f"sip:u{i}@example.com"} for i in range(n)])


async def test_too_many_recipients_is_422(small_client: httpx.AsyncClient, store: Store) -> None:
    assert (await small_client.post("/voice/call/play", json=many(3))).status_code == 200
    resp = await small_client.post("/voice/call/play", json=many(4))
    assert_error(resp, 422, "recipients")
    assert await counts(store) == (1, 3)


async def test_body_too_large_by_content_length_is_413(
    small_client: httpx.AsyncClient, store: Store
) -> None:
    big = json.dumps(with_(pad="x" * 4000)).encode()
    resp = await small_client.post(
        "/voice/call/play", content=big, headers={"Content-Type": "application/json"}
    )
    error = assert_error(resp, 413, None)
    assert error["code"] == 1003
    assert await counts(store) == (0, 0)


async def test_body_too_large_when_streamed_is_413(
    small_client: httpx.AsyncClient, store: Store
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"to": "sip:a@example.com", "playlist": [{"pause": 1}], "pad": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    resp = await small_client.post(
        "/voice/call/play", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in resp.request.headers
    assert_error(resp, 413, None)
    assert await counts(store) == (0, 0)


# --- idempotency --------------------------------------------------------------------------


async def test_idempotency_key_replays_first_answer(
    client: httpx.AsyncClient, store: Store
) -> None:
    body = many(2)
    first = await client.post("/voice/call/play", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 200
    again = await client.post("/voice/call/play", json=body, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 200
    assert again.json()["request_id"] == first.json()["request_id"]
    assert await counts(store) == (1, 2)

    changed = await client.post(
        "/voice/call/play", json=many(3), headers={"Idempotency-Key": "k-1"}
    )
    error = assert_error(changed, 422, "Idempotency-Key")
    assert error["code"] == 1006
    assert "different" in error["error"]["message"]
    assert await counts(store) == (1, 2)

    too_long = await client.post(
        "/voice/call/play", json=body, headers={"Idempotency-Key": "k" * 256}
    )
    assert_error(too_long, 422, "Idempotency-Key")
    other = await client.post("/voice/call/play", json=body, headers={"Idempotency-Key": "k-2"})
    assert other.json()["request_id"] != first.json()["request_id"]
    plain = await client.post("/voice/call/play", json=body)
    assert plain.status_code == 200
    assert await counts(store) == (3, 6)


# --- not found ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/voice/call/status/{x}", "id"),
        ("GET", "/report/{x}", "report_id"),
        ("DELETE", "/voice/call/{x}", "request_id"),
    ],
)
async def test_unknown_ids_are_404(
    client: httpx.AsyncClient, method: str, path: str, field: str
) -> None:
    unknown = str(uuid.uuid4())
    resp = await client.request(method, path.format(x=unknown))
    body = assert_error(resp, 404, field)
    assert body["code"] == 1004
    assert body["request_id"] == unknown
    resp = await client.request(method, path.format(x="x" * 300))
    assert_error(resp, 404, field)


async def test_unknown_route_and_method_use_the_envelope(client: httpx.AsyncClient) -> None:
    body = assert_error(await client.get("/nowhere"), 404, None)
    assert body["code"] == 1004
    body = assert_error(await client.put("/voice/call/play"), 405, None)
    assert body["code"] == 1005


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/voice/call/play", "POST"),  # not DELETE /voice/call/{request_id}
        ("PUT", "/voice/call/status/x", "GET"),
        ("PATCH", "/dnc", "GET, POST"),
        ("POST", "/health", "GET"),
    ],
)
async def test_405_names_the_methods_the_path_serves(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    resp = await client.request(method, path)
    assert_error(resp, 405, None)
    assert resp.headers["allow"] == allow  # RFC 9110 §15.5.6


async def test_an_id_is_echoed_at_most_64_characters(client: httpx.AsyncClient) -> None:
    body = assert_error(await client.get("/voice/call/status/" + "x" * 5000), 404, "id")
    assert body["request_id"] == "x" * 64


async def test_report_id_is_not_a_request_id(client: httpx.AsyncClient) -> None:
    rid = (await client.post("/voice/call/play", json=many(2))).json()["request_id"]
    assert_error(await client.get(f"/report/{rid}"), 404, "report_id")


# --- reports: paging and streaming -----------------------------------------------------------


async def _report_id(client: httpx.AsyncClient, n: int) -> tuple[str, str]:
    rid = (await client.post("/voice/call/play", json=many(n))).json()["request_id"]
    report = (await client.get(f"/voice/call/status/{rid}")).json()["report"]
    return rid, report["id"]


async def test_report_pages_with_limit_and_cursor(client: httpx.AsyncClient) -> None:
    _, rep = await _report_id(client, 7)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "3"} if cursor is None else {"limit": "3", "cursor": cursor}
        resp = await client.get(f"/report/{rep}", params=params)
        assert resp.status_code == 200
        page = resp.json()
        assert page["code"] == 0 and page["request_id"] == rep
        assert page["report_status"] == "pending"
        seen += [r["to"] for r in page["records"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert pages == 3
    assert seen == [f"sip:u{i}@example.com" for i in range(7)]

    exact = (await client.get(f"/report/{rep}", params={"limit": "7"})).json()
    assert len(exact["records"]) == 7 and exact["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"limit": "100001"}, "limit"),
        ({"cursor": "-1"}, "cursor"),
        ({"cursor": "zz"}, "cursor"),
        ({"format": "xml"}, "format"),
    ],
)
async def test_report_bad_parameters(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    _, rep = await _report_id(client, 2)
    assert_error(await client.get(f"/report/{rep}", params=params), 422, field)


async def test_report_ndjson_and_csv(client: httpx.AsyncClient, store: Store) -> None:
    rid, rep = await _report_id(client, 5)
    await finish_calls(store, rid, ARTICLE_RECORDS)
    as_json = (await client.get(f"/report/{rep}")).json()["records"]

    resp = await client.get(f"/report/{rep}", params={"format": "ndjson"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    assert resp.headers["x-report-status"] == "ready"
    lines = resp.text.splitlines()
    assert [json.loads(line) for line in lines] == as_json

    resp = await client.get(f"/report/{rep}", params={"format": "csv"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert list(rows[0]) == list(RECORD_FIELDS)
    assert len(rows) == 5
    assert rows[0]["to"] == "sip:u0@example.com" and rows[0]["type"] == "voice"
    assert rows[0]["answered"] == "true" and rows[0]["duration"] == "17"
    assert rows[4]["connect_time"] == "" and rows[4]["disconnect_cause_code"] == "486"

    resp = await client.get(f"/report/{rep}", params={"format": "ndjson", "limit": "2"})
    assert len(resp.text.splitlines()) == 2
    cursor = resp.headers["x-next-cursor"]
    resp = await client.get(
        f"/report/{rep}", params={"format": "csv", "limit": "10", "cursor": cursor}
    )
    assert len(list(csv.DictReader(io.StringIO(resp.text)))) == 3
    assert "x-next-cursor" not in resp.headers


async def test_large_report_streams_in_batches(client: httpx.AsyncClient) -> None:
    _, rep = await _report_id(client, 1000)  # the fixture's max_recipients
    resp = await client.get(f"/report/{rep}")
    records = resp.json()["records"]
    assert len(records) == 1000
    assert [r["to"] for r in records[:2]] == ["sip:u0@example.com", "sip:u1@example.com"]
    assert records[-1]["to"] == "sip:u999@example.com"
    resp = await client.get(f"/report/{rep}", params={"format": "ndjson"})
    assert len(resp.text.splitlines()) == 1000


# --- attempts, cancel, health -------------------------------------------------------------------


async def test_status_with_all_attempts(client: httpx.AsyncClient, store: Store) -> None:
    rid = (await client.post("/voice/call/play", json=with_(retry={"attempts": 1}))).json()[
        "request_id"
    ]
    call = (await client.get(f"/voice/call/status/{rid}")).json()["record"]
    first = {**call, "result": "completed", "outcome": "busy", "disconnect_cause_code": "486"}
    async with store.session() as s, s.begin():
        await s.execute(
            sa.insert(call_attempts_table).values(call_id=call["id"], attempt=1, record=first)
        )
        await s.execute(
            sa.update(calls_table).where(calls_table.c.id == call["id"]).values(attempt=2)
        )
    resp = await client.get(f"/voice/call/status/{call['id']}", params={"attempts": "all"})
    body = resp.json()
    assert body["record"]["attempt"] == 2
    assert [a["attempt"] for a in body["attempts"]] == [1, 2]
    assert body["attempts"][0]["outcome"] == "busy"
    plain = (await client.get(f"/voice/call/status/{call['id']}")).json()
    assert "attempts" not in plain
    assert_error(
        await client.get(f"/voice/call/status/{call['id']}", params={"attempts": "some"}),
        422,
        "attempts",
    )


async def test_cancel_marks_queued_calls(client: httpx.AsyncClient, store: Store) -> None:
    rid, rep = await _report_id(client, 3)
    async with store.session() as s, s.begin():
        await s.execute(
            sa.update(calls_table)
            .where(calls_table.c.request_id == rid, calls_table.c.seq == 0)
            .values(result="in-progress")
        )
    resp = await client.delete(f"/voice/call/{rid}")
    assert resp.status_code == 200
    body = resp.json()
    assert body == {
        "code": 0,
        "status": 200,
        "data": "canceled",
        "request_id": rid,
        "canceled": 2,
        "in_progress": 1,
    }
    records = (await client.get(f"/report/{rep}")).json()["records"]
    assert [r["result"] for r in records] == ["in-progress", "canceled", "canceled"]
    assert records[1]["outcome"] == "canceled" and "disconnect_time" in records[1]
    async with store.engine.connect() as conn:
        canceled_at = await conn.scalar(
            sa.select(requests_table.c.canceled_at).where(requests_table.c.id == rid)
        )
    assert canceled_at is not None
    again = (await client.delete(f"/voice/call/{rid}")).json()
    assert (again["canceled"], again["in_progress"]) == (0, 1)


async def test_health(client: httpx.AsyncClient) -> None:
    resp = await client.get("/health")
    assert resp.status_code == 200
    body = resp.json()
    assert (body["code"], body["status"], body["data"], body["db"]) == (0, 200, "ok", "ok")
    assert is_uuid(body["request_id"])


async def test_health_503_when_db_unreachable(tmp_path: Any) -> None:
    settings = Settings(db="postgresql://nobody@127.0.0.1:1/none")
    store = open_store(settings.db)
    app = create_app(settings, store)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            resp = await c.get("/health")
    finally:
        await store.close()
    body = assert_error(resp, 503, None)
    assert body["db"] == "error" and body["code"] == 1200


async def test_openapi_documents_the_play_body(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    post = spec["paths"]["/voice/call/play"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PlayRequest"
    }
    assert "Recipient" in spec["components"]["schemas"]
    assert (await client.get("/docs")).status_code == 200


async def test_100k_recipients_through_the_api(store: Store) -> None:
    app = create_app(make_settings(store, max_recipients=100_000), store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://ringcast.test", timeout=120
    ) as c:
        started = time.perf_counter()
        resp = await c.post("/voice/call/play", json=many(100_000))
        elapsed = time.perf_counter() - started
        assert resp.status_code == 200, resp.text
        assert elapsed < 60, elapsed
        rid = resp.json()["request_id"]
        report = (await c.get(f"/voice/call/status/{rid}")).json()["report"]
        assert report["total"] == 100_000
        resp = await c.get(f"/report/{report['id']}", params={"format": "ndjson"})
        assert resp.text.count("\n") == 100_000
    assert await counts(store) == (1, 100_000)


async def test_dnc_routes_are_mounted(client: httpx.AsyncClient) -> None:
    resp = await client.post("/dnc", json={"entries": ["sip:alice@example.com", "123456"]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["code"] == 0
    listed = (await client.get("/dnc")).json()
    assert {e["entry"] for e in listed["entries"]} >= {"alice", "123456"}
    assert (await client.delete("/dnc/123456")).status_code == 200
    assert_error(await client.delete("/dnc/123456"), 404, "entry")


async def test_errors_never_echo_secrets(client: httpx.AsyncClient, store: Store) -> None:
    secret = "hunter2-" + "s" * 300  # too long: refused
    resp = await client.post("/voice/call/play", json=with_(sip={"password": secret}))
    assert_error(resp, 422, "sip.password")
    assert "hunter2" not in resp.text
    resp = await client.post(
        "/voice/call/play", json=with_(sip={"password": "hunter2", "transport": "sctp"})
    )
    assert_error(resp, 422, "sip.transport")
    assert "hunter2" not in resp.text
    assert await counts(store) == (0, 0)


async def test_lifespan_opens_store_and_runs_hooks_in_order(db_url: str) -> None:
    """create_app(settings) without a store opens and migrates settings.db; hooks are
    entered after it is open, with app.state, and exited in reverse order."""
    from contextlib import asynccontextmanager

    events: list[str] = []

    def hook(name: str) -> Any:
        @asynccontextmanager
        async def run(state: Any) -> AsyncIterator[None]:
            assert isinstance(state.store, Store)
            assert state.settings.db == db_url
            await state.store.ping()
            events.append(f"enter {name}")
            yield
            events.append(f"exit {name}")

        return run

    app = create_app(Settings(db=db_url), lifespan_hooks=[hook("a"), hook("b")])
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.post("/voice/call/play", json=GOOD)).status_code == 200
        assert events == ["enter a", "enter b"]
    assert events == ["enter a", "enter b", "exit b", "exit a"]
