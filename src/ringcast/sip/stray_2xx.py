"""A 2xx to one of our INVITEs after its transaction ended (RFC 3261 §13.2.2.4).

A live call (:mod:`.call_invite`) and what the endpoint keeps of an ended one
(:mod:`.ended`) answer it the same way: a retransmitted 2xx of our dialog gets
the ACK of the INVITE it answers again (a late 2xx to a session-refresh
re-INVITE, after Timer M of RFC 6026, gets that re-INVITE's ACK, never the
initial INVITE's); a 2xx from another fork gets an ACK and a BYE once, and
only the ACK again when it is retransmitted. :func:`resend_for` decides,
:func:`answer` applies.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from aiosipua.message import SipResponse

from ringcast.sip.dialog import Dialog
from ringcast.sip.message import Destination, new_branch

if TYPE_CHECKING:
    from ringcast.sip.endpoint import SipEndpoint

logger = logging.getLogger(__name__)

Ack = tuple[bytes, Destination]  # an ACK as sent, and where it went
FORK: Literal["fork"] = "fork"


def to_tag(response: SipResponse) -> str:
    to = response.to_addr
    return (to.tag if to is not None else None) or ""


def resend_for(
    response: SipResponse,
    *,
    remote_tag: str | None,
    initial_seq: int | None,
    ack: Ack | None,
    reinvite_acks: Mapping[int, Ack],
    forks: Mapping[str, Ack],
) -> Ack | Literal["fork"] | None:
    """What answers a stray 2xx: the ACK to send again, :data:`FORK` (a fork not
    seen yet: ACK and BYE it), or None (nothing to resend: no ACK was sent yet,
    or its CSeq names no INVITE of ours)."""
    tag = to_tag(response)
    if remote_tag is None or tag != remote_tag:
        return forks.get(tag, FORK)
    seq = response.cseq.seq if response.cseq else None
    if seq is None or seq == initial_seq:
        return ack
    return reinvite_acks.get(seq)


def answer(
    endpoint: SipEndpoint,
    call_id: str,
    response: SipResponse,
    what: Ack | Literal["fork"] | None,
) -> bool:
    """Apply :func:`resend_for`'s answer `what` to `response`; False for a fork not
    seen yet (the caller ACKs and BYEs it once it knows where: :func:`ack_and_bye`)."""
    if what == FORK:
        return False
    if what is not None:
        endpoint.send_raw(*what)
    elif response.cseq is not None:
        logger.info(
            "call %s: late 2xx for INVITE CSeq %s: no ACK to send", call_id, response.cseq.seq
        )
    return True


def ack_and_bye(
    endpoint: SipEndpoint,
    call_id: str,
    fork: Dialog,
    dest: Destination,
    forks: dict[str, Ack],
) -> None:
    """ACK a fork's 2xx (kept in `forks` for its retransmissions), then BYE it."""
    tag = fork.remote_tag or ""
    ack = fork.create_request("ACK", cseq=fork.local_seq)
    endpoint.stamp_via(ack, dest, new_branch())
    forks[tag] = (bytes(ack), dest)
    endpoint.send_raw(forks[tag][0], dest)
    endpoint.send_request(fork.create_request("BYE"), dest, None)
    logger.info("call %s: 2xx from fork %s: ACKed, BYE sent", call_id, tag)
