"""GET/DELETE /recordings/{id} over real SQLite and PostgreSQL through the ASGI app:
tenants, Range (206, 416), the record's `recordings` list, the retention sweep."""

from __future__ import annotations

import io
import wave
from datetime import datetime, timedelta

import numpy as np
import pytest
from integration.test_auth import assert_error, bearer, client_for

from ringcast.domain import utcnow
from ringcast.media.recorder import wav_bytes
from ringcast.store import Store
from ringcast.store import keys as store_keys
from ringcast.store import recordings as store_recordings
from ringcast.store import requests as q
from ringcast.store.models import calls_table
from ringcast.store.recordings import NewRecording
from ringcast.store.records import record_dict

PCM = (np.arange(40_000) % 251 - 125).astype(np.int16) * 100  # 5 s, every byte distinct-ish


async def _recorded_call(
    store: Store, tenant: str, *, when: datetime | None = None
) -> tuple[str, str]:
    """A call of `tenant` with one 5 s recording; (call id, recording id)."""
    accepted = await q.create_request(
        store,
        body={},
        calls=[q.NewCall(to_uri="sip:5551000@gw.example.com", from_uri="me")],
        body_hash="h",
        tenant=tenant,
    )
    call = (await q.report_page(store, accepted.request_id, after_seq=-1, limit=1))[0]
    item = NewRecording(store_recordings.new_id(), wav_bytes(PCM), 5.0, "silence")
    async with store.session() as s, s.begin():
        await store_recordings.add(
            s, tenant=tenant, call_id=call.id, attempt=1, items=[item], now=when
        )
        await s.execute(
            calls_table.update()
            .where(calls_table.c.id == call.id)
            .values(recordings=store_recordings.record_list_json([item]))
        )
    return call.id, item.id


async def test_get_range_delete_and_tenants(store: Store) -> None:
    mine = await store_keys.create_key(store, "a", tenant="acme")
    other = await store_keys.create_key(store, "b", tenant="globex")
    call_id, rid = await _recorded_call(store, "acme")
    wav = wav_bytes(PCM)
    async with client_for(store) as c:
        status = (await c.get(f"/voice/call/status/{call_id}", headers=bearer(mine.key))).json()
        assert status["record"]["recordings"] == [{"url": f"/recordings/{rid}", "duration": 5.0}]

        whole = await c.get(f"/recordings/{rid}", headers=bearer(mine.key))
        assert whole.status_code == 200, whole.text
        assert whole.headers["content-type"] == "audio/wav"
        assert whole.headers["accept-ranges"] == "bytes"
        assert int(whole.headers["content-length"]) == len(wav) == 44 + 80_000
        assert whole.content == wav
        with wave.open(io.BytesIO(whole.content)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (8000, 1, 40_000)

        for header, first, last in [
            ("bytes=0-43", 0, 43),
            ("bytes=70000-", 70000, len(wav) - 1),
            ("bytes=-100", len(wav) - 100, len(wav) - 1),
            ("bytes=100-999999", 100, len(wav) - 1),
        ]:
            part = await c.get(f"/recordings/{rid}", headers={**bearer(mine.key), "Range": header})
            assert part.status_code == 206, (header, part.text)
            assert part.headers["content-range"] == f"bytes {first}-{last}/{len(wav)}"
            assert part.content == wav[first : last + 1], header
        # several ranges or a malformed one: the whole file
        for header in ("bytes=0-1,5-9", "items=0-1", "bytes=9-3"):
            resp = await c.get(f"/recordings/{rid}", headers={**bearer(mine.key), "Range": header})
            assert resp.status_code == 200 and resp.content == wav, header
        bad = await c.get(
            f"/recordings/{rid}", headers={**bearer(mine.key), "Range": "bytes=90000-"}
        )
        assert_error(bad, 416, 1021)
        assert bad.headers["content-range"] == f"bytes */{len(wav)}"

        # another tenant: as if it did not exist, for GET and DELETE
        assert_error(await c.get(f"/recordings/{rid}", headers=bearer(other.key)), 404, 1004)
        assert_error(await c.delete(f"/recordings/{rid}", headers=bearer(other.key)), 404, 1004)
        assert_error(await c.get(f"/recordings/{rid}"), 401, 1007)
        assert_error(await c.get("/recordings/nope", headers=bearer(mine.key)), 404, 1004)

        metrics = (await c.get("/metrics", headers=bearer(mine.key))).text
        assert "ringcast_recordings 1.0" in metrics
        assert f"ringcast_recording_bytes {float(len(wav))}" in metrics

        gone = await c.delete(f"/recordings/{rid}", headers=bearer(mine.key))
        assert gone.status_code == 200 and gone.json()["data"] == "deleted"
        assert_error(await c.get(f"/recordings/{rid}", headers=bearer(mine.key)), 404, 1004)
        assert_error(await c.delete(f"/recordings/{rid}", headers=bearer(mine.key)), 404, 1004)
        status = (await c.get(f"/voice/call/status/{call_id}", headers=bearer(mine.key))).json()
        assert "recordings" not in status["record"]
        assert "ringcast_recordings 0.0" in (await c.get("/metrics", headers=bearer(mine.key))).text


async def test_retention_sweep_deletes_only_expired(store: Store) -> None:
    old_call, old = await _recorded_call(store, "default", when=utcnow() - timedelta(days=31))
    new_call, new = await _recorded_call(store, "default")
    assert await store_recordings.sweep(store, before=utcnow() - timedelta(days=30), batch=1) == 1
    assert await store_recordings.info(store, old, tenant=None) is None
    kept = await store_recordings.info(store, new, tenant=None)
    assert kept is not None and kept.size == 44 + 80_000 and kept.reason == "silence"
    old_row = await q.get_call(store, old_call, tenant="default")
    new_row = await q.get_call(store, new_call, tenant="default")
    assert old_row is not None and new_row is not None
    assert "recordings" not in record_dict(old_row)
    assert record_dict(new_row)["recordings"] == [{"url": f"/recordings/{new}", "duration": 5.0}]


@pytest.mark.parametrize("size", [0, 1])
def test_parse_range_edges(size: int) -> None:
    from ringcast.api.recordings import RangeNotSatisfiable, parse_range

    assert isinstance(parse_range("bytes=-0", size), RangeNotSatisfiable)
    assert isinstance(parse_range(f"bytes={size}-", size), RangeNotSatisfiable)
    assert parse_range(None, size) is None
    if size:
        assert parse_range("bytes=0-", size) == (0, 0)


async def test_the_dialers_retention_sweep_runs_every_interval(store: Store) -> None:
    from ringcast.dialer.recordings import RetentionSweep

    _, old = await _recorded_call(store, "default", when=utcnow() - timedelta(days=8))
    kept_forever = RetentionSweep(retention_days=0, interval=5)
    assert await kept_forever.tick(store, 5) == 0
    sweep = RetentionSweep(retention_days=7, interval=10)
    assert await sweep.tick(store, 5) == 1  # the first tick sweeps at once
    _, older = await _recorded_call(store, "default", when=utcnow() - timedelta(days=9))
    assert await sweep.tick(store, 5) == 0  # 5 s of 10: not yet
    assert await store_recordings.info(store, older, tenant=None) is not None
    assert await sweep.tick(store, 5) == 1
    assert sweep.deleted == 2
    assert await store_recordings.info(store, old, tenant=None) is None
