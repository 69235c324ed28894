"""Where a dialog's requests go: its next hop, resolved by RFC 3263 and remembered.

RFC 3261 §12.2.1.1: requests inside a dialog go to the first Route of its
route set, else to the remote target; §8.1.2 / RFC 3263 turn that URI into an
address (``maddr`` and ``;transport=`` in the URI count, else the call's own
transport). A call keeps one :class:`Hops`: IP literals and names already
resolved are known at once; names are looked up once (bounded by 64*T1), and
a name that cannot be resolved is remembered with its reason, never replaced
by a guessed address.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ringcast.sip.dialog import Dialog
from ringcast.sip.message import Destination, uri_transport
from ringcast.sip.tls import TlsOptions

if TYPE_CHECKING:
    from ringcast.sip.endpoint import SipEndpoint

logger = logging.getLogger(__name__)

MAX_HOPS = 8  # next hops one call remembers (its dialog, forks, refreshed targets)


class Hops:
    """One call's resolved next hops (URI -> Destination) and failed look-ups."""

    def __init__(
        self, endpoint: SipEndpoint, call_id: str, *, tls: TlsOptions | None = None
    ) -> None:
        self._endpoint = endpoint
        self._call_id = call_id
        self._tls = tls  # the call's TLS settings, for next hops over TLS
        self._known: dict[str, Destination] = {}
        self._failures: dict[str, str] = {}  # next-hop URI -> why it cannot be resolved

    def known(self, dialog: Dialog, transport: str) -> Destination | None:
        """The dialog's next hop if known without waiting, else None (:meth:`resolve`).

        ``transport`` is the call's (its INVITE's), used when the URI names none.
        """
        uri = dialog.next_hop_uri()
        dest = self._known.get(uri)
        if dest is not None:
            return dest
        try:
            dest = self._endpoint.resolve_now(uri, uri_transport(uri) or transport, tls=self._tls)
        except ValueError:
            return None  # resolve() reports it
        if dest is not None:
            self._remember(uri, dest)
        return dest

    async def resolve(self, uri: str, transport: str) -> Destination:
        """Look ``uri`` up (bounded by 64*T1); raise OSError with the reason."""
        known = self._known.get(uri)
        if known is not None:
            return known
        why = self._failures.get(uri)
        if why is not None:
            raise OSError(why)
        try:
            dest = await asyncio.wait_for(
                self._endpoint.resolve(uri, uri_transport(uri) or transport, tls=self._tls),
                self._endpoint.timers.b,
            )
        except (OSError, ValueError) as exc:  # TimeoutError is an OSError
            why = f"cannot resolve the dialog's next hop {uri}: {exc or type(exc).__name__}"
            if len(self._failures) < MAX_HOPS:
                self._failures[uri] = why
            logger.warning("call %s: %s", self._call_id, why)
            raise OSError(why) from exc
        self._remember(uri, dest)
        return dest

    def _remember(self, uri: str, dest: Destination) -> None:
        if len(self._known) >= MAX_HOPS:
            self._known.pop(next(iter(self._known)))
        self._known[uri] = dest
