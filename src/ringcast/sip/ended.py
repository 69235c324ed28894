"""What the endpoint keeps of an ended call for 64*T1: :class:`EndedCall`.

After a call ends, its Call-ID stays in the endpoint's dialog index for a
while, so that a 2xx retransmitted after the INVITE transaction ended (our
ACK was lost) is ACKed again, a 2xx from another fork is ACKed and BYEd
(RFC 3261 §13.2.2.4), and the callee's requests for it still pass the flood
gate. Keeping the whole call for that (its transactions, dialog, digest,
offer/answer, spec: ~80 tracked objects) made every ended call survive the
young collections of the cycle collector and be scanned again and again
(issue 14, bench/RESULTS.md). This keeps only the few values those answers
need: the ACKs already sent, the INVITE, and where the dialog's requests go.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiosipua.message import SipRequest, SipResponse

from ringcast.sip import stray_2xx
from ringcast.sip.dialog import Dialog
from ringcast.sip.hops import Hops
from ringcast.sip.message import Destination

if TYPE_CHECKING:
    from ringcast.sip.endpoint import SipEndpoint

logger = logging.getLogger(__name__)

_ENDED: asyncio.Event | None = None


def _ended_event() -> asyncio.Event:
    """One set Event shared by every :class:`EndedCall` (no waiter ever waits on it)."""
    global _ENDED
    if _ENDED is None:
        _ENDED = asyncio.Event()
        _ENDED.set()
    return _ENDED


class EndedCall:
    """An ended call as the endpoint's dialog index holds it (a ``DialogUser``)."""

    __slots__ = (
        "endpoint",
        "call_id",
        "local_tag",
        "remote_tag",
        "invite",
        "transport",
        "ack",
        "reinvite_acks",
        "forks",
        "hops",
    )

    def __init__(
        self,
        endpoint: SipEndpoint,
        call_id: str,
        local_tag: str,
        *,
        remote_tag: str | None,
        invite: SipRequest | None,
        transport: str,
        ack: tuple[bytes, Destination] | None,
        reinvite_acks: dict[int, tuple[bytes, Destination]],
        forks: dict[str, tuple[bytes, Destination]],
        hops: Hops,
    ) -> None:
        self.endpoint = endpoint
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag  # None: no dialog was confirmed
        self.invite = invite
        self.transport = transport
        self.ack = ack
        self.reinvite_acks = reinvite_acks
        self.forks = forks
        self.hops = hops

    def __repr__(self) -> str:
        return f"<EndedCall {self.call_id}>"

    @property
    def dialog(self) -> Dialog | None:
        return None  # no request is in a dialog of an ended call: strangers' answers

    @property
    def ended(self) -> asyncio.Event:
        return _ended_event()

    async def hangup(self, reason: str = "normal") -> None:
        return None

    def abort(self, why: str) -> None:
        return None

    def uses_tcp_peer(self, addr: tuple[str, int]) -> bool:
        return False

    def on_request(self, request: SipRequest, source: Destination) -> SipResponse:
        raise RuntimeError(f"call {self.call_id} has ended")  # the endpoint never asks

    def on_ack(self, request: SipRequest) -> None:
        return None  # an ended call applies no SDP answer

    def on_stray_2xx(self, response: SipResponse) -> None:
        """A 2xx to one of our INVITEs after the call ended: the same ACK again, or
        an ACK and a BYE for a fork (what the live call does, :mod:`.stray_2xx`)."""
        invite = self.invite  # its CSeq is parsed here, not for every call that ends
        what = stray_2xx.resend_for(
            response,
            remote_tag=self.remote_tag,
            initial_seq=cseq.seq if invite is not None and (cseq := invite.cseq) else None,
            ack=self.ack,
            reinvite_acks=self.reinvite_acks,
            forks=self.forks,
        )
        if not stray_2xx.answer(self.endpoint, self.call_id, response, what):
            self._ack_and_bye_fork(response)

    def _ack_and_bye_fork(self, response: SipResponse) -> None:
        if self.invite is None:
            return
        try:
            fork = Dialog.from_response(self.invite, response)
        except ValueError:
            return
        dest = self.hops.known(fork, self.transport)
        if dest is None:
            self.endpoint.spawn(self._after_hop(fork, response), name=f"sip-hop-{self.call_id}")
            return
        stray_2xx.ack_and_bye(self.endpoint, self.call_id, fork, dest, self.forks)

    async def _after_hop(self, fork: Dialog, response: SipResponse) -> None:
        try:
            await self.hops.resolve(fork.next_hop_uri(), self.transport)
        except OSError:
            return  # Hops logged why
        self.on_stray_2xx(response)  # the fork's ACK may have been sent meanwhile
