"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis):
no 5xx, and every response matches the documented status codes, content types and
schemas. Runs against a real `ringcast api` process (no dialer: nothing is ever
dialed) on a free 127.0.0.1 port, with a bounded number of examples per operation.

Not collected by the suite itself: tests/integration/test_schemathesis.py runs this
module in a pytest process of its own. Its cases are derandomized, yet schemathesis
and Hypothesis keep process-wide strategy caches, so in a worker that had run other
tests first the same seed drew a different case and hit a schemathesis generator
error ("Cannot generate an array with 1 demanded elements", in a negative mutation
of the playlist; CI, three runs of three). In a fresh process it is the same run
every time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from conftest import free_port
from hypothesis import HealthCheck, settings
from schemathesis import checks

RINGCAST = str(Path(sys.executable).parent / "ringcast")
MAX_EXAMPLES = int(os.environ.get("RINGCAST_FUZZ_EXAMPLES", "30"))  # per operation


@pytest.fixture(scope="module")
def api_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("fuzz")
    port = free_port(socket.SOCK_STREAM)
    log = open(workdir / "ringcast-api.log", "wb")  # noqa: SIM115 - closed below
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGCAST_")}
    proc = subprocess.Popen(
        [RINGCAST, "api", "--db", f"sqlite:///{workdir / 'rc.db'}", "--http", f"127.0.0.1:{port}"],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((workdir / "ringcast-api.log").read_text(errors="replace"))
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
        text = (workdir / "ringcast-api.log").read_text(errors="replace")
        assert "Traceback" not in text, text[-4000:]


def _openapi() -> dict[str, Any]:
    """The document the server serves at /openapi.json (built without a database)."""
    from ringcast.api import create_app
    from ringcast.config import Settings

    return dict(create_app(Settings()).openapi())


schema = schemathesis.openapi.from_dict(_openapi())


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_api_conforms_to_its_schema(case: Any, api_base: str) -> None:
    # positive_data_acceptance is left out: the schema cannot say everything the
    # validators check (`to` xor `recipients`, SIP URI grammar, cursors), so a
    # schema-valid body may rightly get 422. Every other check runs, including
    # not_a_server_error, status codes, content types, headers and body schemas.
    case.call_and_validate(
        base_url=api_base, timeout=10, excluded_checks=[checks.positive_data_acceptance]
    )
