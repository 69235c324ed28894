"""LISTEN/NOTIFY on PostgreSQL: an idle dialer claims a new request's calls when
the request is accepted, not at its next poll."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa
from conftest import free_port

from ringcast.config import Settings
from ringcast.dialer import service
from ringcast.dialer.service import Dialer
from ringcast.store import requests as rq
from ringcast.store.db import open_store
from ringcast.store.models import calls_table


async def test_notify_wakes_an_idle_dialer_long_before_its_next_poll(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "POLL_INTERVAL", 60.0)  # polling cannot explain a claim
    store = open_store(pg_url)
    await store.migrate()
    settings = Settings.from_sources(
        {"db": pg_url, "sip": f"127.0.0.1:{free_port()}", "rtp_ports": "47000-47019"}, env={}
    )
    dialer = Dialer(settings, store)
    try:
        await dialer.start()
        listening = False
        started = time.monotonic()
        while not listening and time.monotonic() - started < 20:
            await asyncio.sleep(0.05)
            async with store.session(readonly=True) as s, s.begin():
                listening = bool(
                    await s.scalar(
                        sa.text(
                            "SELECT count(*) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
                        )
                    )
                )
        assert listening, "the dialer never issued LISTEN"
        await asyncio.sleep(0.3)  # its first (empty) claim is over; it waits on its wake event
        dead = free_port()  # nobody answers there: the call itself fails, once claimed
        accepted = await rq.create_request(
            store,
            body={"from": "me", "playlist": [{"pause": 0.2}]},
            calls=[rq.NewCall(f"sip:idle@127.0.0.1:{dead}", "me")],
            body_hash="h",
        )
        asked = time.monotonic()
        result = "queued"
        while result == "queued" and time.monotonic() - asked < 10:
            await asyncio.sleep(0.05)
            async with store.session(readonly=True) as s, s.begin():
                result = (
                    await s.execute(
                        sa.select(calls_table.c.result).where(
                            calls_table.c.request_id == accepted.request_id
                        )
                    )
                ).scalar_one()
        assert result != "queued"  # claimed within 10 s, with the next poll 60 s away
        assert dialer.calls_placed + (result == "dialing") >= 1
    finally:
        await dialer.stop(grace=1)
        await store.close()
