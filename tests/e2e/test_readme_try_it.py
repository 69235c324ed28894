"""The README's "Try it" runs as written: its shell block, pasted into bash in an
empty directory (only the ports changed to free ones, so it can run beside
other tests), gets two answered calls from SIPp and one from `ringcast call`."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.sipp


def _try_it_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Try it", 1)[1]
    match = re.search(r"```sh\n(.*?)\n```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_try_it_block_works_as_written(tmp_path: Path, sipp_bin: str) -> None:
    script = _try_it_block()
    ports = {
        "8080": free_port(socket.SOCK_STREAM),
        "8000": free_port(socket.SOCK_STREAM),
        "5060": free_port(),
        "5062": free_port(),
        "5070": free_port(),
    }
    for old, new in ports.items():
        script = re.sub(rf"(?<=[:\s]){old}\b", str(new), script)
    script = script.replace(".venv/bin/ringcast", str(Path(sys.executable).parent / "ringcast"))
    wrapped = script + f'\necho "REPORT_JSON $(curl -s 127.0.0.1:{ports["8080"]}/report/$REPORT)"\n'
    log = tmp_path / "out.log"
    with log.open("w") as sink:  # a file: background jobs keep their stdout open
        # as a user pastes it (no set -e: sipp -bg exits 99 once detached), in a
        # process group of its own so that its background jobs end with the test
        proc = subprocess.Popen(
            ["bash", "-c", wrapped],
            cwd=tmp_path,
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        proc.wait(timeout=120)
        out = log.read_text()
        assert "REPORT_JSON {" in out, out
        report = json.loads(out.split("REPORT_JSON ", 1)[1].splitlines()[0])
        assert [r["answered"] for r in report["records"]] == [True, True], report
        assert report["records"][0]["to"] == f"sip:alice@127.0.0.1:{ports['5070']}"
        single = json.loads(out[out.rindex('{\n  "type"') :].split("\n}", 1)[0] + "\n}")
        assert single["answered"] is True and single["outcome"] == "answered", out
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # ringcast serve, http.server: our group
        for pid in re.findall(r"PID=\[(\d+)\]", log.read_text()):  # sipp -bg left it
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)
