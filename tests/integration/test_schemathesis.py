"""The schemathesis fuzzing of the HTTP API (tests/integration/fuzz/api_schema.py),
run in a pytest process of its own so that its derandomized cases are the same on
every run, whatever else ran before in this worker (see that module's docstring)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FUZZ = Path(__file__).parent / "fuzz" / "api_schema.py"


def test_api_conforms_to_its_schema() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "-p", "no:cov", "--rootdir", str(ROOT), str(FUZZ)],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-20000:]
    assert " passed" in output and "failed" not in output, output[-4000:]
