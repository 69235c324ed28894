"""The dashboard plays a recording: real headless Chromium against `ringcast serve`
after a SIPp callee spoke into a `record` item (see test_recording_e2e.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from e2e.server import post
from e2e.test_amd_e2e import callee, line, silence, speech
from e2e.test_dashboard import CHROMIUM_ARGS, UI_TIMEOUT_MS, chromium_path  # noqa: F401
from e2e.test_recording_e2e import serving


@pytest.mark.sipp
def test_dashboard_plays_a_recording(
    sipp_bin: str,
    tmp_path: Path,
    chromium_path: str,  # noqa: F811 - the fixture imported above
) -> None:
    from playwright.sync_api import expect, sync_playwright

    audio = line(np.concatenate([silence(0.5), speech("Call me back, please."), silence(6.0)]))
    playlist = [{"record": {"max": 10, "silence": 1.5, "beep": False}}]
    db = f"sqlite:///{tmp_path / 'rec.db'}"
    with serving(tmp_path, db) as rc:
        with callee(tmp_path, audio, telephone_event=True) as uas:
            request_id = post(rc, {"to": uas.uri("rec"), "playlist": playlist})
            record = rc.wait_ready(request_id, 180)["record"]
        (rec,) = record["recordings"]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(rc.base + "/", wait_until="domcontentloaded")
                page.locator(f'#requests tr[data-request-id="{request_id}"]').click()
                button = page.locator(f'#calls button.play[data-recording="{rec["url"]}"]')
                expect(button).to_have_text(f"▶ {rec['duration']:.1f}s", timeout=UI_TIMEOUT_MS)
                button.click()
                player = page.locator("#player")
                expect(player).to_have_attribute("data-recording", rec["url"])
                page.wait_for_function(
                    "() => document.querySelector('#player').readyState >= 1",
                    timeout=UI_TIMEOUT_MS,
                )
                src, duration = page.evaluate(
                    "() => [document.querySelector('#player').src,"
                    " document.querySelector('#player').duration]"
                )
            finally:
                browser.close()
    assert src.startswith("blob:"), src
    assert duration == pytest.approx(rec["duration"], abs=0.05)
