"""The CLI's argument handling, hook points and client commands (no server needed)."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from ringcast import __version__
from ringcast.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in list(__import__("os").environ) if n.startswith("RINGCAST_")]:
        monkeypatch.delenv(name)


def test_version() -> None:
    out = runner.invoke(app, ["version"])
    assert out.exit_code == 0 and out.stdout.strip() == __version__


def test_commands_are_listed() -> None:
    out = runner.invoke(app, ["--help"])
    for name in ("serve", "api", "dialer", "call", "status", "report"):
        assert name in out.stdout


def test_server_flags_have_env_vars() -> None:
    out = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    for env in (
        "RINGCAST_DB",
        "RINGCAST_HTTP",
        "RINGCAST_SIP",
        "RINGCAST_SIP_TRANSPORT",
        "RINGCAST_RTP_PORTS",
        "RINGCAST_PUBLIC_IP",
        "RINGCAST_MAX_CALLS",
        "RINGCAST_CPS",
        "RINGCAST_CONFIG",
    ):
        assert env in out.stdout


def test_api_and_dialer_need_db() -> None:
    for command in ("api", "dialer"):
        out = runner.invoke(app, [command])
        assert out.exit_code == 2
        assert "db is required" in out.stderr


def test_dialer_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setitem(sys.modules, "ringcast.dialer.service", None)
    out = runner.invoke(app, ["dialer", "--db", f"sqlite:///{tmp_path}/x.db"])
    assert out.exit_code == 2
    assert "dialer is not available" in out.stderr


def test_call_needs_something_to_play() -> None:
    out = runner.invoke(app, ["call", "sip:alice@127.0.0.1"])
    assert out.exit_code == 2 and "--play" in out.stderr


def test_call_missing_module_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ringcast.dialer.single", None)
    out = runner.invoke(app, ["call", "sip:alice@127.0.0.1", "--say", "hi"])
    assert out.exit_code == 2 and "single calls are not available" in out.stderr


def test_call_prints_the_record(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    seen: dict[str, Any] = {}

    async def run_single_call(settings: Any, to: str, **kw: Any) -> dict[str, Any]:
        seen.update(kw, to=to, sip_port=settings.sip_port)
        return {"type": "voice", "result": "completed", "to": to}

    fake = types.ModuleType("ringcast.dialer.single")
    fake.run_single_call = run_single_call  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ringcast.dialer.single", fake)
    out = runner.invoke(
        app, ["call", "sip:alice@127.0.0.1", "--say", "hello", "--sip", "127.0.0.1:5099"]
    )
    assert out.exit_code == 0, out.stderr
    assert json.loads(out.stdout) == {
        "type": "voice",
        "result": "completed",
        "to": "sip:alice@127.0.0.1",
    }
    assert seen["say"] == "hello" and seen["play"] is None and seen["sip_port"] == 5099


def test_report_format_is_checked() -> None:
    out = runner.invoke(app, ["report", "abc", "--format", "xml"])
    assert out.exit_code == 2 and "--format" in out.stderr


def test_client_commands_report_unreachable_server() -> None:
    from conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"
    for args in (["status", "abc"], ["report", "abc"]):
        out = runner.invoke(app, [*args, "--url", url])
        assert out.exit_code == 1
        assert "cannot reach" in out.stderr


def test_bad_log_level() -> None:
    out = runner.invoke(app, ["--log-level", "loud", "version"])
    assert out.exit_code == 2 and "--log-level" in out.stderr
