"""The dialog's next hop and our requests inside it, for one outbound call.

Functions of :class:`~ringcast.sip.call.OutboundCall`, its owner: where
in-dialog requests go (first Route, else the remote target, §12.2.1.1, §8.1.2,
resolved by :class:`~ringcast.sip.hops.Hops`), and :class:`InDialogRequest`,
one request of ours in the dialog (BYE, refresh, UPDATE, REFER) with its
digest rounds: the one digest path after the INVITE (§22.2, §22.3).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiosipua.message import SipRequest, SipResponse

from ringcast.sip.dialog import Dialog
from ringcast.sip.digest import AuthFailure
from ringcast.sip.message import Destination
from ringcast.sip.transaction import SyntheticResponse
from ringcast.sip.uac_logic import CallState, InDialogStep, in_dialog_step

if TYPE_CHECKING:
    from ringcast.sip.call import OutboundCall

logger = logging.getLogger(__name__)


def in_dialog_destination(call: OutboundCall) -> Destination | None:
    """Where in-dialog requests go now; None while the next hop is not resolved.

    The dialog's next hop, also with an outbound proxy (see :class:`CallSpec`):
    only requests outside the dialog go to ``_dest``.
    """
    assert call._dest is not None
    if call.dialog is None:
        return call._dest
    return dest_for_dialog(call, call.dialog)


def dest_for_dialog(call: OutboundCall, dialog: Dialog) -> Destination | None:
    """The dialog's next hop (first Route, else remote target; §12.2.1.1, §8.1.2),
    if known without waiting (:class:`~ringcast.sip.hops.Hops`); None otherwise
    (:func:`after_hop` or :func:`in_dialog_hop` look it up). Never the INVITE's
    destination instead: a dialog's requests go where the callee or its proxies
    asked, and an outbound proxy is not one of them unless it Record-Routed.
    """
    assert call._dest is not None
    return call._hops.known(dialog, call._dest.transport)


async def resolve_hop(call: OutboundCall, uri: str) -> Destination:
    assert call._dest is not None
    return await call._hops.resolve(uri, call._dest.transport)


def after_hop(
    call: OutboundCall, dialog: Dialog, *, then: Callable[[], None], failed: Callable[[str], None]
) -> None:
    """Resolve ``dialog``'s next hop in the background, then ``then()`` or ``failed(why)``."""
    call.endpoint.spawn(
        when_resolved(call, dialog.next_hop_uri(), then, failed),
        name=f"sip-hop-{call.call_id}",
    )


async def when_resolved(
    call: OutboundCall, uri: str, then: Callable[[], None], failed: Callable[[str], None]
) -> None:
    try:
        await resolve_hop(call, uri)
    except OSError as exc:
        failed(str(exc))
        return
    try:
        then()
    except Exception:  # a bug here must not pass silently in a background task
        logger.exception("call %s: handling the resolved next hop %s failed", call.call_id, uri)


async def in_dialog_hop(call: OutboundCall) -> Destination | None:
    """:func:`in_dialog_destination`, looked up if needed; None (``error`` set) on failure."""
    dest = in_dialog_destination(call)
    if dest is not None or call.dialog is None:
        return dest
    try:
        return await resolve_hop(call, call.dialog.next_hop_uri())
    except OSError as exc:
        call.error = call.error or str(exc)
        return None


def on_hop_lost(call: OutboundCall, why: str) -> None:
    """An answered call's next hop cannot be resolved: nothing more can reach the callee."""
    if call.state is CallState.ENDED:
        return
    call.error = call.error or why
    call._end("local")


def in_dialog_request(
    call: OutboundCall, method: str, *, body: bytes = b"", extra: dict[str, str] | None = None
) -> SipRequest:
    """A request inside the dialog: its Route is the dialog's route set, nothing
    pre-loaded (§12.2.1.1), exactly like the 2xx ACK's (:func:`.call_invite.send_ack`)."""
    assert call.dialog is not None
    request = call.dialog.create_request(
        method, body=body, content_type="application/sdp" if body else None, extra=extra
    )
    request.headers.append("User-Agent", call.endpoint.user_agent)
    return request


def send_in_dialog(
    call: OutboundCall,
    method: str,
    dest: Destination,
    handler: Callable[[SipRequest, SipResponse, InDialogStep], None],
    *,
    sdp: Callable[[], bytes] | None = None,
    extra: dict[str, str] | None = None,
) -> None:
    """Send ``method`` inside the dialog through :class:`InDialogRequest`: the
    one digest path of every request after the INVITE (§22.2, §22.3)."""
    InDialogRequest(call, method, dest, handler, sdp, extra).send()


class InDialogRequest:
    """One request of ours inside the dialog (BYE, refresh re-INVITE, UPDATE) and
    its digest rounds (§22.2, §22.3).

    It carries the credentials the call holds for every realm (cached from the
    INVITE, §22.3). A 401/407 is answered by the call's :class:`DigestSession`
    like the INVITE's: the same request with a new CSeq (§22.2); a realm
    refused twice or the rounds used up end the rounds. ``handler`` hears every
    other response with its :func:`in_dialog_step`. Only the transaction refers
    to this object, so nothing cycles back from the call.
    """

    def __init__(
        self,
        call: OutboundCall,
        method: str,
        dest: Destination,
        handler: Callable[[SipRequest, SipResponse, InDialogStep], None],
        sdp: Callable[[], bytes] | None,
        extra: dict[str, str] | None,
    ) -> None:
        self.call = call
        self.method = method
        self.dest = dest
        self.handler = handler
        self.sdp = sdp
        self.extra = extra
        self.auth = call._digest.attempt()
        self.request: SipRequest | None = None

    def send(self) -> None:
        call = self.call
        body = self.sdp() if self.sdp is not None else b""
        request = in_dialog_request(call, self.method, body=body, extra=self.extra)
        for name, value in call._digest.headers(self.method, request.uri):
            request.headers.append(name, value)
        self.request = request
        call.endpoint.send_request(request, self.dest, self.on_response)

    def on_response(self, response: SipResponse) -> None:
        call = self.call
        assert self.request is not None
        step = in_dialog_step(
            self.method,
            response.status_code,
            synthetic=isinstance(response, SyntheticResponse),
            can_authenticate=call._has_credentials
            and not self.auth.exhausted
            and call.dialog is not None,
        )
        if step is InDialogStep.AUTHENTICATE:
            try:
                realms = self.auth.on_challenge(response)
            except AuthFailure as exc:
                logger.warning("call %s: %s %s", call.call_id, self.method, exc)
                step = InDialogStep.FAILED
            else:
                logger.info(
                    "call %s: answering %s digest challenge to %s for %s",
                    call.call_id,
                    response.status_code,
                    self.method,
                    ", ".join(repr(r) for r in realms),
                )
                self.send()
                return
        self.handler(self.request, response, step)
