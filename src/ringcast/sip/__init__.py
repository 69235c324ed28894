"""SIP signalling for outbound calls: no audio, no database (RFC 3261 on aiosipua).

The dialer codes against :class:`SipEndpoint` (one per process), :class:`CallSpec`,
:class:`OutboundCall` and :class:`CallState`; media against :class:`MediaOffer`
and :class:`MediaAnswer`.
"""

from ringcast.sip.call import CallSpec, CallState, OutboundCall
from ringcast.sip.causes import outcome_for, reason_phrase
from ringcast.sip.endpoint import SipEndpoint
from ringcast.sip.sdp import MediaAnswer, MediaOffer, build_offer, parse_answer

__all__ = [
    "CallSpec",
    "CallState",
    "MediaAnswer",
    "MediaOffer",
    "OutboundCall",
    "SipEndpoint",
    "build_offer",
    "outcome_for",
    "parse_answer",
    "reason_phrase",
]
