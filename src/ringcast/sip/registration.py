"""Keeping REGISTER bindings with registrars (RFC 3261 §10.2): the owner of
:class:`~ringcast.sip.register.Registration`.

:class:`Binding` builds and sends the REGISTER requests the machine asks for
through the endpoint's transaction layer (non-INVITE client transactions,
Timer F → 408), answers 401/407 with the existing digest code
(:class:`DigestSession`, one :class:`AuthAttempt` per REGISTER), reads the
expiry granted to our Contact (§10.2.4), and runs the machine's one timer.
The same Call-ID serves every REGISTER of a binding, with CSeq increasing
(§10.2.4). The password is only handed to the digest code, never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiosipua.headers import CaseInsensitiveDict, parse_address, parse_uri
from aiosipua.message import SipRequest, SipResponse

from ringcast.sip.digest import AuthAttempt, AuthFailure, DigestSession
from ringcast.sip.endpoint import SipEndpoint
from ringcast.sip.message import Destination, new_tag
from ringcast.sip.register import Action, Arm, Registration, RegState, Send
from ringcast.sip.transaction import SyntheticResponse

log = logging.getLogger(__name__)

UNREGISTER_TIMEOUT = 5.0  # seconds a clean shutdown waits for the expires-0 REGISTER


@dataclass(frozen=True)
class BindingConfig:
    """Where and as whom to register. `registrar` is a sip:/sips: URI (its
    host names the domain of the address-of-record, §10.2)."""

    name: str
    registrar: str
    username: str
    password: str
    expires: int = 3600
    retry: float = 30.0
    retry_max: float = 1800.0
    transport: str | None = None

    def __repr__(self) -> str:  # never show the password
        return (
            f"BindingConfig(name={self.name!r}, registrar={self.registrar!r}, "
            f"user={self.username!r})"
        )


class Binding:
    """One REGISTER binding, kept until :meth:`stop`."""

    def __init__(self, endpoint: SipEndpoint, config: BindingConfig) -> None:
        self.endpoint = endpoint
        self.config = config
        self.machine = Registration(
            config.name, expires=config.expires, retry=config.retry, retry_max=config.retry_max
        )
        uri = parse_uri(config.registrar)
        self._scheme = "sips" if config.registrar.lower().startswith("sips:") else "sip"
        hostport = uri.host if uri.port is None else f"{uri.host}:{uri.port}"
        self._request_uri = f"{self._scheme}:{hostport}"
        self._aor = f"{self._scheme}:{config.username}@{uri.host}"
        self._digest = DigestSession(config.username, config.password)
        self._call_id = endpoint.new_call_id()
        self._tag = new_tag()
        self._cseq = 0
        self._dest: Destination | None = None
        self._contact = ""
        self._current = 0  # the CSeq whose responses the machine hears
        self._expires_sent = config.expires
        self._auth: AuthAttempt | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._changed = asyncio.Event()
        self.registered_at: float | None = None  # time.time() of the last grant
        self.sent = 0  # REGISTER requests sent (also digest retries)
        self.on_change: Callable[[], None] | None = None  # after every machine step

    # --- what others read ----------------------------------------------------

    @property
    def state(self) -> RegState:
        return self.machine.state

    @property
    def registered(self) -> bool:
        return self.machine.state.bound

    def status(self) -> dict[str, Any]:
        """For /health, /metrics and the dashboard (no secrets)."""
        expires_at = None
        if self.registered and self.registered_at and self.machine.granted:
            expires_at = self.registered_at + self.machine.granted
        return {
            "state": self.machine.state.value,
            "registered": self.registered,
            "registrar": self._request_uri,
            "aor": self._aor,
            "expires": self.machine.granted,
            "expires_at": expires_at,
            "failures": self.machine.failures,
            "error": self.machine.last_error,
        }

    async def wait_registered(self, seconds: float) -> bool:
        """Whether the binding is (or becomes within `seconds`) up."""
        deadline = time.monotonic() + seconds
        while not self.registered:
            left = deadline - time.monotonic()
            if left <= 0 or self.machine.state is RegState.STOPPED:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    # --- life ------------------------------------------------------------------

    def start(self) -> None:
        self._apply(self.machine.start())

    async def stop(self) -> None:
        """Remove the binding (expires 0) and wait a moment for the answer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._apply(self.machine.stop())
        deadline = time.monotonic() + UNREGISTER_TIMEOUT
        while self.machine.state is RegState.UNREGISTERING and time.monotonic() < deadline:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), deadline - time.monotonic())

    # --- applying the machine's actions ----------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._send(action.expires, fresh=True)
            elif isinstance(action, Arm):
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = self.endpoint.loop.call_later(action.seconds, self._on_timer)
        self._changed.set()
        if self.on_change is not None:
            self.on_change()

    def _on_timer(self) -> None:
        self._timer = None
        self._apply(self.machine.on_timer())

    async def _resolve_and_send(self, expires: int) -> None:
        try:
            self._dest = await self.endpoint.resolve(self.config.registrar, self.config.transport)
        except Exception as exc:  # noqa: BLE001 - any lookup failure: back off, try again
            self._apply(self.machine.on_failure(503, f"cannot resolve the registrar: {exc}"))
            return
        self._contact = self.endpoint.contact_for(self._dest, self.config.username)
        self._send(expires, fresh=True)

    def _send(self, expires: int, *, fresh: bool) -> None:
        if self._dest is None:
            self.endpoint.spawn(
                self._resolve_and_send(expires), name=f"register-resolve-{self.config.name}"
            )
            return
        if fresh:
            self._auth = self._digest.attempt()
        self._expires_sent = expires
        self._cseq += 1
        self._current = self._cseq
        h = CaseInsensitiveDict()
        h.append("Via", "")  # stamp_via fills it
        h.append("Max-Forwards", "70")
        h.append("From", f"<{self._aor}>;tag={self._tag}")
        h.append("To", f"<{self._aor}>")
        h.append("Call-ID", self._call_id)
        h.append("CSeq", f"{self._cseq} REGISTER")
        h.append("Contact", self._contact)
        h.append("Expires", str(expires))
        h.append("User-Agent", self.endpoint.user_agent)
        for name, value in self._digest.headers("REGISTER", self._request_uri):
            h.append(name, value)
        h.append("Content-Length", "0")
        request = SipRequest(headers=h, body=b"", method="REGISTER", uri=self._request_uri)
        cseq = self._cseq
        self.sent += 1
        self.endpoint.send_request(request, self._dest, lambda r: self._on_response(cseq, r))

    def _on_response(self, cseq: int, response: SipResponse) -> None:
        status = response.status_code
        if cseq != self._current or status < 200:
            return  # a superseded REGISTER's, or provisional
        if status in (401, 407) and not isinstance(response, SyntheticResponse):
            assert self._auth is not None
            if not self._auth.exhausted:
                try:
                    realms = self._auth.on_challenge(response)
                except AuthFailure as exc:
                    self._apply(self.machine.on_failure(status, str(exc)))
                    return
                log.info("registration %s: answering %s for %s", self.config.name, status, realms)
                self._send(self._expires_sent, fresh=False)
                return
        if 200 <= status < 300:
            granted = self._granted(response)
            if self.machine.state is not RegState.UNREGISTERING:
                self.registered_at = time.time()
            log.info("registration %s: %d, %s s granted", self.config.name, status, granted)
            self._apply(self.machine.on_success(granted))
            return
        log.warning(
            "registration %s: REGISTER failed: %d %s",
            self.config.name,
            status,
            response.reason_phrase,
        )
        self._apply(
            self.machine.on_failure(
                status,
                response.reason_phrase or "",
                min_expires=_int(response.headers.get_first("min-expires")),
                retry_after=_int(response.headers.get_first("retry-after")),
                jitter=random.uniform(0.5, 1.0),
            )
        )

    def _granted(self, response: SipResponse) -> int | None:
        """The expiry of our Contact in a 2xx (§10.2.4), else its Expires header."""
        ours = parse_address(self._contact).uri
        for value in response.headers.get("contact"):
            for item in _split_contacts(value):
                try:
                    addr = parse_address(item)
                except (ValueError, IndexError):
                    continue
                uri = addr.uri
                if (uri.user, uri.host, uri.port) == (ours.user, ours.host, ours.port):
                    expires = _int(addr.params.get("expires"))
                    if expires is not None:
                        return expires
        return _int(response.headers.get_first("expires"))


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip().split(";", 1)[0].split()[0] if value.strip() else ""
    return int(text) if text.isdigit() else None


def _split_contacts(value: str) -> list[str]:
    """A Contact header value's comma-separated entries (commas inside <> or quotes kept)."""
    out, depth, quoted, start = [], 0, False, 0
    for i, c in enumerate(value):
        if c == '"':
            quoted = not quoted
        elif not quoted and c == "<":
            depth += 1
        elif not quoted and c == ">":
            depth -= 1
        elif not quoted and depth == 0 and c == ",":
            out.append(value[start:i].strip())
            start = i + 1
    out.append(value[start:].strip())
    return [v for v in out if v]
