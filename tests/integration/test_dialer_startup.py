"""What a dialer says when it starts with settings that cannot all hold."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import free_port

from ringcast.config import Settings
from ringcast.dialer.service import Dialer
from ringcast.store.db import open_store


@pytest.mark.parametrize(("max_calls", "warned"), [(10, True), (5, False)])
async def test_more_calls_than_rtp_ports_is_warned_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, max_calls: int, warned: bool
) -> None:
    db = f"sqlite:///{tmp_path / 'start.db'}"
    store = open_store(db)
    await store.migrate()
    settings = Settings.from_sources(
        {
            "db": db,
            "sip": f"127.0.0.1:{free_port()}",
            "rtp_ports": "47000-47009",  # 5 pairs
            "max_calls": max_calls,
        },
        env={},
    )
    dialer = Dialer(settings, store)
    try:
        with caplog.at_level(logging.WARNING, logger="ringcast.dialer.service"):
            await dialer.start()
    finally:
        await dialer.stop(grace=0)
        await store.close()
    messages = [r.getMessage() for r in caplog.records if "RTP port pairs" in r.getMessage()]
    expected = [f"--max-calls {max_calls} is more than the 5 RTP port pairs"] if warned else []
    assert [m.split(" of --rtp-ports")[0] for m in messages] == expected
