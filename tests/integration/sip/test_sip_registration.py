"""A REGISTER binding kept with Kamailio as the registrar (RFC 3261 §10.2):
digest, the expiry the registrar grants, refresh before it runs out, removal
at shutdown. Kamailio's own location table (usrloc, read over jsonrpcs) says
whether the binding is there."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from peers import KamailioRegistrar

from ringcast.sip import SipEndpoint
from ringcast.sip.register import RegState
from ringcast.sip.registration import Binding, BindingConfig

pytestmark = pytest.mark.kamailio


async def _until(check: object, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {within} s: {what}")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_binding_appears_is_refreshed_and_is_removed(
    tmp_path: Path, kamailio_bin: str, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    with KamailioRegistrar(tmp_path, max_expires=3) as registrar:
        endpoint = SipEndpoint(host="127.0.0.1", port=0, t1=0.05, t2=0.4)
        await endpoint.start()
        try:
            binding = Binding(
                endpoint,
                BindingConfig(
                    name="carrier",
                    registrar=registrar.uri(),
                    username=registrar.username,
                    password=registrar.password,
                    expires=3600,  # asked; the registrar grants 3
                    retry=0.5,
                    transport=transport,
                ),
            )
            binding.start()
            assert await binding.wait_registered(10)
            assert binding.machine.granted == 3
            port = endpoint.local_port_for(transport)
            contacts = registrar.contacts()
            assert len(contacts) == 1 and f"@127.0.0.1:{port}" in contacts[0], contacts
            # refreshed before it runs out: still bound after several grants' time
            sent = binding.sent
            await asyncio.sleep(7)
            assert binding.sent >= sent + 2  # two refreshes at least (cached credentials)
            assert binding.registered and registrar.contacts() != []
            await binding.stop()
            assert binding.state is RegState.STOPPED
            assert registrar.contacts() == []
        finally:
            await endpoint.close()
        events = [kind for kind, _ in registrar.events()]
        log = registrar.output()
    assert events[:3] == ["register", "challenge", "register"], events
    assert events.count("saved") >= 4  # the first, two refreshes, the removal
    expires = [f.get("expires") for k, f in registrar.events() if k == "register"]
    assert expires[-1] == "0"  # the removal asks for expires 0
    assert registrar.password not in caplog.text
    assert registrar.password not in log


async def test_wrong_password_backs_off_and_says_why(tmp_path: Path, kamailio_bin: str) -> None:
    with KamailioRegistrar(tmp_path) as registrar:
        endpoint = SipEndpoint(host="127.0.0.1", port=0, t1=0.05, t2=0.4)
        await endpoint.start()
        try:
            binding = Binding(
                endpoint,
                BindingConfig(
                    name="carrier",
                    registrar=registrar.uri(),
                    username=registrar.username,
                    password="not-the-password",
                    retry=0.3,
                ),
            )
            binding.start()
            await _until(lambda: binding.machine.failures >= 2, 10, "two failures")
            assert not await binding.wait_registered(0.1)
            status = binding.status()
            assert status["registered"] is False
            assert "authentication failed" in status["error"]
            assert registrar.contacts() == []
            await binding.stop()
            assert binding.state is RegState.STOPPED
        finally:
            await endpoint.close()
