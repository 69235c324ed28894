"""Calls through carriers: numbers routed over trunks, and the trunks' REGISTER bindings.

:func:`route` turns one call's `to` and `from` into what is dialled: a SIP URI
as given, or a number (``tel:`` or E.164, or national with the request's or
trunk's ``country``) as the trunk's Request-URI (:mod:`ringcast.numbers`),
with an E.164 caller ID asserted when the trunk says so. The record keeps
`to` as given. :class:`TrunkRegistrations` keeps one binding per trunk with
``register = true`` for this dialer (each dialer holds its own) and makes a
call on such a trunk wait for it (``register_wait``), or fail with a clear error.
Given a store, it writes its bindings' state there (by node and trunk) after
every change, so an API process shows the bindings of separate dialers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ringcast import numbers
from ringcast.config import Settings
from ringcast.errors import RingcastError
from ringcast.sip.endpoint import SipEndpoint
from ringcast.sip.registration import Binding, BindingConfig
from ringcast.store import registrations as registration_rows
from ringcast.store.db import DB_ERRORS, Store
from ringcast.trunks import REGISTER_RETRY_MAX, registering

log = logging.getLogger(__name__)

PUBLISH_RETRY = 2.0  # seconds before writing the bindings' state again after a DB error


class NotRoutable(RingcastError):
    """This call cannot be dialled as its request and the config say."""


@dataclass(frozen=True)
class Route:
    """What to dial for one call."""

    request_uri: str  # the INVITE's Request-URI (and To)
    trunk: str | None  # the trunk the call goes through, if any
    headers: dict[str, str] = field(default_factory=dict)  # P-Asserted-Identity


def trunk_name(body: Mapping[str, Any], to: str, settings: Settings) -> str | None:
    """The trunk of a call: the request's, else the config's `default_trunk` for a number."""
    named = (body.get("sip") or {}).get("trunk")
    if named:
        return str(named)
    if numbers.looks_like_number(to):
        return settings.default_trunk
    return None


def region_of(body: Mapping[str, Any], settings: Settings) -> str | None:
    """The country national numbers of a request are read in: the request's, else
    its trunk's (the request's named trunk, else `default_trunk`)."""
    if body.get("country"):
        return str(body["country"])
    name = (body.get("sip") or {}).get("trunk") or settings.default_trunk
    trunk = settings.trunks.get(name) if name else None
    return str(trunk["country"]) if trunk and trunk.get("country") else None


def route(body: Mapping[str, Any], to: str, from_: str, settings: Settings) -> Route:
    """How to dial `to` (see the module doc); NotRoutable names what is missing."""
    name = trunk_name(body, to, settings)
    trunk = settings.trunks.get(name) if name else None
    if name and trunk is None:
        raise NotRoutable(f"trunk {name!r} is not in the config file any more")
    headers: dict[str, str] = {}
    if trunk is not None and trunk.get("asserted_identity"):
        caller = numbers.caller_id(from_)
        if caller is not None:
            headers["P-Asserted-Identity"] = numbers.asserted_identity(caller, trunk)
    if not numbers.looks_like_number(to):
        return Route(to, name, headers)
    if trunk is None:
        raise NotRoutable(f"{to} is a number and needs a trunk (sip.trunk or default_trunk)")
    country = body.get("country") or trunk.get("country")
    try:
        number = numbers.e164(to, country)
    except numbers.NumberError as exc:
        raise NotRoutable(str(exc)) from None
    return Route(numbers.request_uri(number, trunk), name, headers)


class TrunkRegistrations:
    """This dialer's REGISTER bindings, one per trunk with ``register = true``."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        trunks: Mapping[str, Mapping[str, Any]],
        *,
        store: Store | None = None,
        node_id: str = "",
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.bindings: dict[str, Binding] = {}
        self.waits: dict[str, float] = {}
        for options in registering(trunks):
            config = BindingConfig(
                name=options.trunk,
                registrar=options.registrar,
                username=options.username,
                password=str(trunks[options.trunk].get("password") or ""),
                expires=options.expires,
                retry=options.retry,
                retry_max=REGISTER_RETRY_MAX,
                transport=options.transport,
            )
            self.bindings[options.trunk] = Binding(endpoint, config)
            self.waits[options.trunk] = options.wait
        self._dirty = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None
        self.published = 0  # state writes that reached the database

    def start(self) -> None:
        if self.store is not None and self.bindings:
            for binding in self.bindings.values():
                binding.on_change = self._dirty.set
            self._dirty.set()
            self._publisher = asyncio.create_task(
                self._publish_loop(self.store), name=f"trunk-registrations-{self.node_id}"
            )
        for binding in self.bindings.values():
            binding.start()

    async def stop(self) -> None:
        """Unregister every binding (expires 0), together; then forget this node's rows."""
        if self.bindings:
            await asyncio.gather(*(b.stop() for b in self.bindings.values()))
        if self._publisher is not None and self.store is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
            self._publisher = None
            try:
                await registration_rows.remove(self.store, self.node_id)
            except DB_ERRORS as exc:
                log.warning("trunk registrations: cannot remove this node's rows: %s", exc)

    async def _publish_loop(self, store: Store) -> None:
        """Write the bindings' state after each change; the latest state wins, so
        changes that come while a write is under way are written together next."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await registration_rows.publish(store, self.node_id, self.status())
                self.published += 1
            except DB_ERRORS as exc:
                log.warning("trunk registrations: cannot write their state: %s", exc)
                self._dirty.set()
                await asyncio.sleep(PUBLISH_RETRY)

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: b.status() for name, b in sorted(self.bindings.items())}

    async def ready(self, trunk: str | None) -> None:
        """Return once a call may go out on `trunk`; NotRoutable when its binding
        stays down for the trunk's ``register_wait`` seconds."""
        binding = self.bindings.get(trunk) if trunk else None
        if binding is None or binding.registered:
            return
        wait = self.waits[binding.config.name]
        if wait > 0 and await binding.wait_registered(wait):
            return
        error = binding.machine.last_error or binding.state.value
        raise NotRoutable(
            f"trunk {binding.config.name!r} is not registered with its registrar "
            f"(waited {wait:g} s; last: {error})"
        )
