"""`-m "not sipp"` leaves out every test that starts SIPp, and every test that
needs PostgreSQL carries the `postgres` marker (tests/conftest.py sets both at
collection).

The suite is collected in a child pytest with `-m "not sipp"`; a small plugin
writes down what each test uses, judged by plain rules independent of the
conftest's: a SIPp test has `sipp_bin` in its fixture closure or `SippUas(` in
the source of its function or of one of its fixtures; a PostgreSQL test has
`pg_url` / `pg_server` in its closure or a `postgresql` parameter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[2]

PLUGIN = """
import inspect, json, os

def _source(func):
    try:
        return inspect.getsource(inspect.unwrap(func))
    except (OSError, TypeError):
        return ""

def _facts(item, selected):
    info = getattr(item, "_fixtureinfo", None)
    defs = getattr(info, "name2fixturedefs", {})
    funcs = [getattr(item, "function", None)]
    funcs += [d.func for name in item.fixturenames for d in defs.get(name, ())]
    params = getattr(getattr(item, "callspec", None), "params", {})
    return {
        "id": item.nodeid,
        "selected": selected,
        "fixtures": sorted(item.fixturenames),
        "starts_sipp": any("SippUas(" in _source(f) for f in funcs if f is not None),
        "postgresql_param": "postgresql" in [v for v in params.values() if isinstance(v, str)],
        "markers": sorted({m.name for m in item.iter_markers()}),
    }

_gone = []

def pytest_deselected(items):
    _gone.extend(items)

def pytest_collection_finish(session):
    facts = [_facts(i, True) for i in session.items] + [_facts(i, False) for i in _gone]
    with open(os.environ["MARKER_FACTS"], "w") as f:
        json.dump(facts, f)
"""


def uses_sipp(t: dict[str, Any]) -> bool:
    return "sipp_bin" in t["fixtures"] or bool(t["starts_sipp"])


def uses_postgres(t: dict[str, Any]) -> bool:
    return bool({"pg_url", "pg_server"} & set(t["fixtures"])) or bool(t["postgresql_param"])


def test_not_sipp_collects_no_sipp_test_and_postgres_tests_are_marked(tmp_path: Path) -> None:
    (tmp_path / "marker_facts_plugin.py").write_text(PLUGIN)
    facts_file = tmp_path / "facts.json"
    env = {
        **os.environ,
        "MARKER_FACTS": str(facts_file),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    cmd += ["-p", "marker_facts_plugin", "-m", "not sipp", str(ROOT / "tests")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    facts = json.loads(facts_file.read_text())
    selected = [t for t in facts if t["selected"]]
    deselected = [t for t in facts if not t["selected"]]
    assert len(selected) > 500 and len(deselected) > 50

    assert [t["id"] for t in selected if uses_sipp(t)] == []
    assert all("sipp" in t["markers"] for t in deselected)
    # Both rules find SIPp tests: by fixture and by the code that starts SIPp.
    assert any("sipp_bin" in t["fixtures"] for t in deselected)
    assert any(t["starts_sipp"] for t in deselected)

    pg = [t for t in facts if uses_postgres(t)]
    assert len(pg) > 50
    assert [t["id"] for t in pg if "postgres" not in t["markers"]] == []


def test_module_code_that_starts_sipp_is_followed_through_helpers(tmp_path: Path) -> None:
    """The conftest's rule for tests without `sipp_bin`: a function that uses
    SippUas, the module's functions and classes that call it, and not a mere
    type annotation."""
    from conftest import _defs_using

    uas = "SippUas"  # in a variable: this file must not look like it starts SIPp
    module = tmp_path / "test_sample.py"
    module.write_text(
        f"from sipp import {uas}\n"
        "def start(tmp):\n"
        f"    return {uas}('uas_answer.xml', tmp).start()\n"
        "def call_one(tmp):\n"
        "    with start(tmp):\n"
        "        pass\n"
        "class Peers:\n"
        "    def up(self, tmp):\n"
        "        return call_one(tmp)\n"
        "def test_through_two_helpers(tmp_path):\n"
        "    call_one(tmp_path)\n"
        f"def test_typed_only(uas: {uas}) -> {uas}:\n"
        f"    x: {uas} | None = None\n"
        "    return uas\n"
        "def test_unrelated():\n"
        "    assert 1\n"
    )
    got = _defs_using(module, frozenset({uas}))
    assert got == {"start", "call_one", "Peers", "up", "test_through_two_helpers"}
