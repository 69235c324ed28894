"""The fast paths of the store write and read exactly what the SQLAlchemy paths do."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from ringcast.domain import Result, utcnow
from ringcast.store import Store, accept, record_dict
from ringcast.store import requests as q
from ringcast.store.models import calls_table, requests_table
from ringcast.store.records import RECORD_FIELDS, record_csv_sql, record_json_sql

CALLS = [
    q.NewCall(to_uri="sip:a@example.com", from_uri="me"),
    q.NewCall(to_uri="sip:b@example.com:5070", from_uri="sip:other@example.com"),
    q.NewCall(
        to_uri="sip:c@example.com",
        from_uri='"Zoë" <sip:z@example.com>',
        variables={"name": "Zoë", "quote": 'say "hi"\\'},
    ),
    q.NewCall(to_uri="sip:d@example.com", from_uri="me", timezone="Europe/Riga"),
    q.NewCall(to_uri="sip:e@example.com", from_uri="me", variables={}, timezone="UTC"),
]
_COLUMNS = [c.name for c in calls_table.c if c.name not in ("id", "request_id")]


async def _stored(store: Store, request_id: str) -> list[tuple[Any, ...]]:
    """Every column but the ids, as the database holds it (text, with its type)."""
    if store.dialect == "sqlite":
        cols = ", ".join(f"typeof({c}) || ':' || quote({c})" for c in _COLUMNS)
    else:
        cols = ", ".join(
            f"pg_typeof({c})::text || ':' || coalesce({c}::text, 'NULL')" for c in _COLUMNS
        )
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            sa.text(f"SELECT {cols} FROM calls WHERE request_id = :r ORDER BY seq"),
            {"r": request_id},
        )
        return [tuple(r) for r in rows]


# with a timezone column; without one (it is then not sent); more than one COPY chunk
CALL_SETS = {
    "mixed": CALLS,
    "no_timezone": [c for c in CALLS if c.timezone is None],
    "chunks": [
        q.NewCall(f"sip:{i}@example.com", "me" if i % 3 else "sip:x@y.org", {"i": str(i)})
        for i in range(q._COPY_ROWS + 3)
    ],
}


@pytest.mark.parametrize("calls", CALL_SETS.values(), ids=CALL_SETS.keys())
async def test_create_request_stores_what_a_core_insert_stores(
    store: Store, calls: list[q.NewCall]
) -> None:
    due = utcnow().replace(year=2099)
    accepted = await q.create_request(store, body={}, calls=calls, body_hash="h", not_before=due)
    async with store.engine.connect() as conn:
        created = (
            await conn.execute(
                sa.select(requests_table.c.created_at).where(
                    requests_table.c.id == accepted.request_id
                )
            )
        ).scalar_one()
    # The same calls through SQLAlchemy Core, as create_request inserted them before.
    async with store.session() as s, s.begin():
        await s.execute(
            sa.insert(requests_table).values(
                id="core",
                created_at=created,
                body={},
                total=len(calls),
                report_id="rep",
                body_hash="h2",
            )
        )
        await s.execute(
            sa.insert(calls_table),
            [
                {
                    "id": str(uuid.uuid4()),
                    "request_id": "core",
                    "seq": i,
                    "to_uri": c.to_uri,
                    "from_uri": c.from_uri,
                    "variables": c.variables,
                    "timezone": c.timezone,
                    "result": Result.QUEUED.value,
                    "attempt": 1,
                    "request_time": created,
                    "duration": 0,
                    "answered": False,
                    "not_before": due,
                    "claim_epoch": 0,
                    "updated_at": created,
                }
                for i, c in enumerate(calls)
            ],
        )
    fast = await _stored(store, accepted.request_id)
    assert fast == await _stored(store, "core")
    assert len(fast) == len(calls)
    # and read back through the models
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(calls_table)
                .where(calls_table.c.request_id == accepted.request_id)
                .order_by(calls_table.c.seq)
            )
        ).all()
    assert [(r.to_uri, r.from_uri, r.variables, r.timezone) for r in rows] == [
        tuple(c) for c in calls
    ]
    assert all(r.request_time == created and r.not_before == due for r in rows)
    assert len({r.id for r in rows}) == len(calls)


def test_new_ids_are_uuid4_strings() -> None:
    ids = q.new_ids(2000)
    assert len(set(ids)) == 2000
    assert ids == sorted(ids)  # the primary key takes them in order
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
    assert q.new_ids(0) == []
    # made in chunks: in order across them too, and all different
    chunks = list(q.new_id_chunks(2 * accept._ID_CHUNK + 7))
    assert [len(c) for c in chunks] == [accept._ID_CHUNK, accept._ID_CHUNK, 7]
    joined = [i for c in chunks for i in c]
    assert joined == sorted(joined) and len(set(joined)) == len(joined)
    assert all(uuid.UUID(i).version == 4 for i in joined)


_OPTIONAL = (
    "setup_time",
    "connect_time",
    "disconnect_time",
    "disconnect_cause_code",
    "disconnect_cause_text",
    "outcome",
    "codec",
    "error",
    "dtmf",
)
_SAMPLES: dict[str, Any] = {
    "setup_time": datetime(2026, 5, 2, 12, 15, 32, 999_999, tzinfo=UTC),
    "connect_time": datetime(2026, 5, 2, 15, 15, 45, tzinfo=timezone(timedelta(hours=3))),
    "disconnect_time": datetime(2026, 5, 2, 12, 16, 2, 500_000, tzinfo=UTC),
    "disconnect_cause_code": "486",
    "disconnect_cause_text": 'Busy "Here" \\ ünï \u2028',
    "outcome": "busy",
    "codec": "PCMA",
    "error": "line one\nline two\ttab \x01 \x7f </script>",
    "dtmf": "1#*",
}

_RECORDINGS = '[{"url":"/recordings/5f1c","duration":2.5},{"url":"/recordings/a\\"b","duration":1}]'

_TRANSFER = (
    '{"to":"sip:agent@127.0.0.1:5090","mode":"bridge","result":"answered",'
    '"connect_time":"2026-05-02 12:16:00","duration":95,"cause":"200","error":"\\"x\\", ü"}'
)
_EARLIER = (
    '{"attempt":1,"setup_time":"2026-05-02 12:00:00","disconnect_time":"2026-05-02 12:00:30",'
    '"disconnect_cause_code":"486","disconnect_cause_text":"Busy \\"Here\\"","outcome":"busy"}',
    '{"attempt":2,"outcome":"failed"}',
)


async def _finished_calls(store: Store) -> str:
    """A request of 512 calls covering every combination of the optional fields."""
    n = 1 << len(_OPTIONAL)
    accepted = await q.create_request(
        store,
        body={},
        calls=[
            q.NewCall(to_uri=f"sip:{i}@example.com", from_uri='"Zoë" <sip:z@x.org>')
            for i in range(n)
        ],
        body_hash="h",
    )
    async with store.session() as s, s.begin():
        await s.execute(
            sa.update(calls_table)
            .where(
                calls_table.c.request_id == accepted.request_id,
                calls_table.c.seq == sa.bindparam("s"),
            )
            .values(
                {
                    **{name: sa.bindparam(f"v_{name}") for name in _OPTIONAL},
                    "result": sa.bindparam("v_result"),
                    "duration": sa.bindparam("v_duration"),
                    "answered": sa.bindparam("v_answered"),
                    "attempt": sa.bindparam("v_attempt"),
                    "attempts_log": sa.bindparam("v_log"),
                    "recordings": sa.bindparam("v_recordings"),
                }
            ),
            [
                {
                    "s": i,
                    **{
                        f"v_{name}": _SAMPLES[name] if i >> bit & 1 else None
                        for bit, name in enumerate(_OPTIONAL)
                    },
                    "v_result": "queued" if i % 5 == 0 else "completed" if i % 3 else "failed",
                    # attempt - 1 earlier attempts, one of them with every optional field
                    "v_log": ",".join(_EARLIER[: i % 3]) or None,
                    "v_duration": i % 7 * 1000,
                    "v_answered": i % 2 == 0,
                    "v_attempt": 1 + i % 3,
                    "v_recordings": _RECORDINGS if i % 4 == 1 else None,
                }
                for i in range(n)
            ],
        )
        # a gather's transfer (JSON text the dialer writes) on every fourth call
        await s.execute(
            sa.update(calls_table)
            .where(calls_table.c.request_id == accepted.request_id, calls_table.c.seq % 4 == 1)
            .values(transfer=_TRANSFER)
        )
    return accepted.request_id


async def test_report_json_equals_record_dict(store: Store) -> None:
    request_id = await _finished_calls(store)
    expected = [record_dict(row) async for row in q.iter_report(store, request_id)]
    assert len(expected) == 512
    for sep in ("\n", ","):
        chunks = [
            chunk async for chunk in q.iter_report_lines(store, request_id, sep=sep, batch=100)
        ]
        assert len(chunks) == 6
        text = sep.join(chunks)
        records = (
            json.loads(f"[{text}]") if sep == "," else [json.loads(x) for x in text.split("\n")]
        )
        # same fields, same order, same values
        assert [list(r.items()) for r in records] == [list(r.items()) for r in expected]
    # keyset paging: after a seq, with a limit
    page = [
        chunk
        async for chunk in q.iter_report_lines(
            store, request_id, sep="\n", after_seq=99, limit=150, batch=64
        )
    ]
    assert [json.loads(x) for x in "\n".join(page).split("\n")] == expected[100:250]
    assert [c async for c in q.iter_report_lines(store, request_id, after_seq=511)] == []
    assert [c async for c in q.iter_report_lines(store, "nope")] == []


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):  # the transfer: its JSON text, as the dialer wrote it
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


async def test_report_csv_equals_csv_writer_of_record_dict(store: Store) -> None:
    request_id = await _finished_calls(store)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    async for row in q.iter_report(store, request_id):
        record = record_dict(row)
        record["attempts"] = len(record["attempts"])  # CSV: how many
        if "recordings" in record:  # CSV: the JSON text as stored
            record["recordings"] = json.dumps(record["recordings"], separators=(",", ":"))
        writer.writerow([_csv_value(record.get(f)) for f in RECORD_FIELDS])
    chunks = [
        chunk
        async for chunk in q.iter_report_lines(store, request_id, fmt="csv", sep="\r\n", batch=100)
    ]
    assert len(chunks) == 6
    assert "".join(chunk + "\r\n" for chunk in chunks) == buf.getvalue()


async def test_report_lines_page_over_gaps_in_seq(store: Store) -> None:
    request_id = await _finished_calls(store)
    async with store.session() as s, s.begin():
        await s.execute(
            sa.delete(calls_table).where(
                calls_table.c.request_id == request_id, calls_table.c.seq.in_([3, 4, 5, 200])
            )
        )
    expected = [record_dict(row) async for row in q.iter_report(store, request_id)]
    text = "\n".join([c async for c in q.iter_report_lines(store, request_id, batch=7)])
    assert [json.loads(x) for x in text.split("\n")] == expected
    page = [c async for c in q.iter_report_lines(store, request_id, limit=10, batch=4)]
    assert [json.loads(x) for x in "\n".join(page).split("\n")] == expected[:10]


def test_record_sources_follow_record_fields() -> None:
    from ringcast.store.records import _RECORD_SOURCES

    assert ("type", *(field for field, _, _ in _RECORD_SOURCES), "attempts") == RECORD_FIELDS
    for build in (record_json_sql, record_csv_sql):
        with pytest.raises(ValueError, match="unsupported dialect"):
            build("mysql")  # type: ignore[arg-type]


async def _old_next_cursor(store: Store, request_id: str, after: int, limit: int) -> int | None:
    rows = await q.report_page(store, request_id, after_seq=after, limit=limit + 1)
    return int(rows[limit - 1].seq) if len(rows) > limit else None


async def test_next_cursor_equals_limit_plus_one_paging(store: Store) -> None:
    request_id = await _finished_calls(store)
    cases = [(-1, 1), (-1, 100), (-1, 511), (-1, 512), (-1, 600), (100, 411), (100, 412), (510, 1)]
    for after, limit in cases:
        got = await q.next_cursor(store, request_id, after_seq=after, limit=limit)
        assert got == await _old_next_cursor(store, request_id, after, limit), (after, limit)
    async with store.session() as s, s.begin():
        await s.execute(
            sa.delete(calls_table).where(
                calls_table.c.request_id == request_id, calls_table.c.seq.in_([3, 4, 5, 511])
            )
        )
    for after, limit in [*cases, (2, 3), (0, 5), (505, 5), (505, 6)]:
        got = await q.next_cursor(store, request_id, after_seq=after, limit=limit)
        assert got == await _old_next_cursor(store, request_id, after, limit), (after, limit)
    assert await q.next_cursor(store, "nope", after_seq=-1, limit=10) is None
