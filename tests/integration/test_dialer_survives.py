"""One call that cannot be placed fails alone: the dialer's claim loop goes on
to place the next call (to a real SIPp callee), on SQLite and PostgreSQL.

The request below carries a `max_concurrent` far past what the API accepts
(validation refuses it now); it stands for any input or bug nobody foresaw.
Before, the exception it raised in the fleet limiter ended the claim loop: the
call stayed `dialing`, nothing else was ever dialed, and after a restart the
rescued call stopped the next dialer the same way."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import free_port
from sipp import SippUas

from ringcast.config import Settings
from ringcast.dialer.service import Dialer
from ringcast.store import requests as rq
from ringcast.store.db import Store
from ringcast.store.models import calls_table


async def _results(store: Store, request_id: str) -> list[tuple[str, str | None]]:
    async with store.session(readonly=True) as s, s.begin():
        rows = await s.execute(
            sa.select(calls_table.c.result, calls_table.c.error).where(
                calls_table.c.request_id == request_id
            )
        )
        return [(r.result, r.error) for r in rows]


async def test_a_call_that_cannot_be_placed_fails_alone(
    store: Store, db_url: str, tmp_path: Path, sipp_bin: str, rtp_sink: str
) -> None:
    settings = Settings.from_sources(
        {"db": db_url, "sip": f"127.0.0.1:{free_port()}", "rtp_ports": "47100-47119"}, env={}
    )
    with SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as uas:
        bad = await rq.create_request(
            store,
            body={"playlist": [{"pause": 0.2}], "max_concurrent": 10**30},
            calls=[rq.NewCall(uas.uri("bad"), "me")],
            body_hash="bad",
        )
        good = await rq.create_request(
            store,
            body={"playlist": [{"pause": 0.2}]},
            calls=[rq.NewCall(uas.uri("good"), "me")],
            body_hash="good",
        )
        dialer = Dialer(settings, store)
        await dialer.start()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                done = await _results(store, good.request_id)
                if done and done[0][0] == "completed":
                    break
                await asyncio.sleep(0.1)
            assert await _results(store, good.request_id) == [("completed", None)]
            [(result, error)] = await _results(store, bad.request_id)
            assert result == "failed"
            assert error is not None and error.startswith("could not be placed: "), error
            assert "SELECT" not in error and "INSERT" not in error  # no SQL in a record
        finally:
            await dialer.stop(grace=1)
    assert uas.invites_per_user() == {"good": 1}


async def test_a_dialer_loop_that_died_does_not_stop_the_shutdown(
    store: Store, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """stop() still drains calls, stops the writer and unregisters the node when one
    of the dialer's loops had ended with an error (as the LISTEN loop did on
    asyncpg's "connection is closed" after a database cut)."""
    caplog.set_level(logging.INFO, logger="ringcast.dialer.service")
    settings = Settings.from_sources(
        {"db": db_url, "sip": f"127.0.0.1:{free_port()}", "rtp_ports": "47120-47139"}, env={}
    )
    dialer = Dialer(settings, store)
    await dialer.start()

    async def dies() -> None:
        raise RuntimeError("connection is closed")

    broken = asyncio.create_task(dies(), name="dialer-broken")
    await asyncio.sleep(0)
    dialer._tasks.append(broken)
    await asyncio.wait_for(dialer.stop(grace=1), 20)
    assert "dialer task dialer-broken had failed" in caplog.text
    assert f"dialer {dialer.node_id} stopped" in caplog.text  # the shutdown ran to its end
