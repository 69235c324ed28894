"""The dashboard in real headless Chromium (Debian's `chromium`, driven by
Playwright through `executable_path`: no browser download) against a real
`ringcast serve` dialing real SIPp callees on 127.0.0.1.

Screenshots of the page are saved to `artifacts/dashboard-running.png` (while
a broadcast runs) and `artifacts/dashboard.png` (at the end; also in tmp_path).
With CI=true a missing Chromium or Playwright fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import missing
from sipp import SippUas

from e2e.server import RingcastServer, post

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
UI_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = os.environ.get("RINGCAST_TEST_CHROMIUM") or shutil.which("chromium")
    if path is None:
        missing("Chromium (Debian package chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("playwright (pip, the test extra)")
    return path


def api_records(rc: RingcastServer, request_id: str) -> list[dict[str, Any]]:
    """The records as the public API reports them (status -> report)."""
    status = httpx.get(f"{rc.base}/voice/call/status/{request_id}", timeout=10).json()
    report = httpx.get(f"{rc.base}{status['report']['location']}", timeout=10).json()
    assert report["report_status"] == "ready", report
    return list(report["records"])


def test_dashboard_live_counts_cancel_and_filter(
    tmp_path: Path, sipp_bin: str, rtp_sink: str, chromium_path: str
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with (
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as answer,
        SippUas("e2e_busy.xml", tmp_path) as busy,
        SippUas("e2e_ring.xml", tmp_path) as ring,
        RingcastServer(tmp_path) as rc,
        sync_playwright() as pw,
    ):
        finished = post(
            rc,
            {
                "recipients": [
                    *({"to": answer.uri(f"a{i}")} for i in range(4)),
                    *({"to": busy.uri(f"b{i}")} for i in range(2)),
                    *({"to": ring.uri(f"n{i}")} for i in range(2)),
                ],
                "from": "dashboard",
                "playlist": [{"pause": 1.0}],
                "ring_timeout": 2,
            },
        )
        running = post(
            rc,
            {
                "recipients": [{"to": ring.uri(f"r{i}")} for i in range(3)],
                "from": "dashboard",
                "playlist": [{"pause": 1.0}],
                "ring_timeout": 120,
            },
        )
        browser = pw.chromium.launch(
            executable_path=chromium_path,
            headless=True,
            args=CHROMIUM_ARGS,  # Playwright gives it a fresh, empty --user-data-dir
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(rc.base + "/", wait_until="domcontentloaded")

            # The running broadcast shows live: its three calls ring (in progress).
            run_row = page.locator(f'#requests tr[data-request-id="{running}"]')
            expect(run_row.locator('[data-count="in-progress"]')).to_have_text(
                "3", timeout=UI_TIMEOUT_MS
            )
            expect(run_row).to_have_attribute("data-status", "running")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-running.png"))

            # The finished broadcast reaches the final counts the API reports.
            rc.wait_ready(finished, timeout=40)
            outcomes = Counter(r["outcome"] for r in api_records(rc, finished))
            assert outcomes == {"answered": 4, "busy": 2, "no-answer": 2}, outcomes
            done_row = page.locator(f'#requests tr[data-request-id="{finished}"]')
            expect(done_row).to_have_attribute("data-status", "done", timeout=UI_TIMEOUT_MS)
            for state in ("answered", "busy", "no-answer", "failed", "in-progress", "queued"):
                expect(done_row.locator(f'[data-count="{state}"]')).to_have_text(
                    str(outcomes.get(state, 0))
                )
            expect(done_row.locator('[data-field="done"]')).to_have_text("8 / 8")
            # calls per minute and time left: the API's figures, as the page shows them
            progress = httpx.get(f"{rc.base}/requests/{finished}", timeout=10).json()["request"]
            assert progress["calls_per_minute"] > 0
            expect(done_row.locator('[data-field="cpm"]')).to_have_text(
                f"{progress['calls_per_minute']:.1f}"
            )
            expect(done_row.locator('[data-field="eta"]')).to_have_text("—")  # done: none left
            expect(run_row.locator('[data-field="eta"]')).not_to_have_text("—")

            # Cancel the running one from the page; the API then reports it canceled.
            run_row.locator("button.cancel").click()
            expect(run_row).to_have_attribute("data-status", "canceled", timeout=UI_TIMEOUT_MS)
            expect(run_row.locator('[data-count="canceled"]')).to_have_text("3")
            final = rc.wait_ready(running, timeout=20)["report"]
            assert (final["status"], final["done"]) == ("ready", 3)
            assert {r["result"] for r in api_records(rc, running)} == {"canceled"}
            assert sum(m.startswith("CANCEL ") for m in ring.received()) >= 3 + 2

            # One request's calls, filtered by outcome, and its chart.
            done_row.click()
            expect(page.locator("#detail-status")).to_have_text("done", timeout=UI_TIMEOUT_MS)
            expect(page.locator("#calls tbody tr")).to_have_count(8, timeout=UI_TIMEOUT_MS)
            page.locator('#filters button[data-state="busy"]').click()
            expect(page.locator("#calls tbody tr")).to_have_count(2, timeout=UI_TIMEOUT_MS)
            expect(page.locator('#calls tbody tr[data-state="busy"]')).to_have_count(2)
            expect(page.locator("#calls tbody")).to_contain_text("486")
            expect(page.locator("#chart rect")).not_to_have_count(0)
            page.locator('#filters button[data-state="answered"]').click()
            expect(page.locator('#calls tbody tr[data-state="answered"]')).to_have_count(
                4, timeout=UI_TIMEOUT_MS
            )
            time.sleep(0.3)  # let the chart and table settle before the picture

            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            shutil.copyfile(shot, ARTIFACTS / "dashboard.png")
            assert errors == [], errors
        finally:
            browser.close()
    assert answer.invites_per_user() == {f"a{i}": 1 for i in range(4)}
    assert busy.invites_per_user() == {f"b{i}": 1 for i in range(2)}


async def make_keys(db: str, tenants: tuple[str, ...]) -> dict[str, str]:
    """One API key per tenant (as `ringcast keys create` makes them)."""
    from ringcast.store.db import open_store
    from ringcast.store.keys import create_key

    store = open_store(db)
    try:
        await store.migrate()
        return {t: (await create_key(store, t, tenant=t)).key for t in tenants}
    finally:
        await store.close()


def test_dashboard_uses_the_saved_api_key_and_its_tenant(
    tmp_path: Path, chromium_path: str
) -> None:
    """With keys configured the page asks for one, sends it as a Bearer token,
    and shows only that key's tenant's requests; the CLI's --key does the same."""
    import json
    import subprocess
    import sys
    from datetime import UTC, datetime, timedelta

    from playwright.sync_api import expect, sync_playwright

    ringcast = str(Path(sys.executable).parent / "ringcast")
    db = f"sqlite:///{tmp_path / 'keys.db'}"
    keys = asyncio.run(make_keys(db, ("north", "south")))
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with RingcastServer(tmp_path, db=db) as rc, sync_playwright() as pw:
        r = httpx.post(
            f"{rc.base}/voice/call/play",
            json={
                "recipients": [{"to": "sip:x@127.0.0.1:9"}, {"to": "sip:y@127.0.0.1:9"}],
                "playlist": [{"pause": 1}],
                "schedule": {"not_before": later},
            },
            headers={"Authorization": f"Bearer {keys['north']}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        rid = r.json()["request_id"]

        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(rc.base + "/", wait_until="domcontentloaded")
            expect(page.locator("#banner")).to_contain_text("API key", timeout=UI_TIMEOUT_MS)

            page.fill("#api-key", keys["south"])
            page.click("#key-form button[type=submit]")
            expect(page.locator("#banner")).to_be_hidden(timeout=UI_TIMEOUT_MS)
            expect(page.locator("#requests-empty")).to_be_visible(timeout=UI_TIMEOUT_MS)

            page.fill("#api-key", keys["north"])
            page.click("#key-form button[type=submit]")
            row = page.locator(f'#requests tr[data-request-id="{rid}"]')
            expect(row.locator('[data-count="queued"]')).to_have_text("2", timeout=UI_TIMEOUT_MS)
            page.reload(wait_until="domcontentloaded")  # the key is kept in localStorage
            expect(page.locator("#api-key")).to_have_value(keys["north"])
            row.locator("button.cancel").click()
            expect(row).to_have_attribute("data-status", "canceled", timeout=UI_TIMEOUT_MS)
        finally:
            browser.close()

        env = {k: v for k, v in os.environ.items() if not k.startswith("RINGCAST_")}
        cmd = [ringcast, "status", rid, "--url", rc.base]
        refused = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines()[0].startswith("ringcast: error: HTTP 401: ")
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        ok = subprocess.run(
            [*cmd, "--key", keys["north"]], capture_output=True, text=True, timeout=30, env=env
        )
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["report"] == {
            **json.loads(ok.stdout)["report"],
            "status": "ready",
            "done": 2,
        }


def test_dashboard_shows_trunk_registrations(
    tmp_path: Path, sipp_bin: str, kamailio_bin: str, chromium_path: str
) -> None:
    """The header's trunk cells: one binding up (with its time left), one refused
    (its state and the registrar's reason), as /health reports them."""
    from peers import KamailioRegistrar
    from playwright.sync_api import expect, sync_playwright

    from e2e.test_trunk_registration_e2e import registrar_config

    with (
        KamailioRegistrar(tmp_path, max_expires=60) as registrar,
        SippUas("uas_answer.xml", tmp_path) as callee,
    ):
        config = registrar_config(tmp_path / "ringcast.toml", registrar, callee)
        with (
            RingcastServer(tmp_path, args=["--config", str(config)]) as rc,
            sync_playwright() as pw,
        ):
            browser = pw.chromium.launch(
                executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 600})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(rc.base + "/", wait_until="domcontentloaded")
                up = page.locator('#trunks .trunk[data-trunk="carrier"]')
                expect(up).to_have_attribute("data-state", "registered", timeout=UI_TIMEOUT_MS)
                expect(up).to_have_class("trunk up")
                expect(up).to_contain_text("carrier: registered (")
                down = page.locator('#trunks .trunk[data-trunk="refused"]')
                expect(down).to_have_class("trunk down", timeout=UI_TIMEOUT_MS)
                expect(down).to_contain_text("authentication failed", timeout=UI_TIMEOUT_MS)
                page.screenshot(path=str(tmp_path / "dashboard-trunks.png"))
                assert errors == []
                assert registrar.password not in page.content()
            finally:
                browser.close()
