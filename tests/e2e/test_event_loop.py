"""`ringcast serve` runs on uvloop by default and on asyncio's own loop when
RINGCAST_EVENT_LOOP=asyncio; either way a call to a real SIPp callee completes."""

from __future__ import annotations

from pathlib import Path

import pytest
from sipp import SippUas

from e2e.server import RingcastServer, post
from e2e.test_dialer_e2e import report


@pytest.mark.parametrize("setting,loop", [(None, "uvloop"), ("asyncio", "asyncio")])
def test_server_runs_on_the_chosen_loop(
    tmp_path: Path, sipp_bin: str, rtp_sink: str, setting: str | None, loop: str
) -> None:
    env = {"RINGCAST_EVENT_LOOP": setting} if setting else {}
    with (
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as uas,
        RingcastServer(tmp_path, env=env) as rc,
    ):
        rid = post(rc, {"recipients": [{"to": uas.uri("a")}], "playlist": [{"pause": 0.3}]})
        rc.wait_ready(rid, timeout=30)
        records = report(rc, rid)
        log = rc.output()
    assert f" loop={loop})" in log, log
    assert [(r["result"], r["answered"]) for r in records] == [("completed", True)], records
    assert uas.invites_per_user() == {"a": 1}
