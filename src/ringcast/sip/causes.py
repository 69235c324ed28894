"""One table from the final SIP status of an INVITE to a call outcome.

Modelled on FreeSWITCH's sofia cause table (``sofia_glue_sip_cause_to_freeswitch``):
each status carries its Q.850 cause name for logs and an operator outcome.

- 2xx -> ``answered`` (an answered call keeps ``disconnect_cause_code`` "200").
- 486, 600 -> ``busy``; 480, 408 and the 487 our own CANCEL caused -> ``no-answer``.
- 603 -> ``declined``.
- Other 3xx-6xx: the destination said no -> ``rejected``; the path or a server
  failed (5xx, loops, transport) -> ``failed``.
- A 200 that crossed our CANCEL is ACKed and BYEd at once: still ``no-answer``.
"""

from __future__ import annotations

from ringcast.domain import Outcome

# status -> (Q.850 cause name, outcome)
CAUSES: dict[int, tuple[str, Outcome]] = {
    200: ("NORMAL_CLEARING", Outcome.ANSWERED),
    300: ("UNALLOCATED_NUMBER", Outcome.REJECTED),
    301: ("UNALLOCATED_NUMBER", Outcome.REJECTED),
    302: ("UNALLOCATED_NUMBER", Outcome.REJECTED),
    305: ("UNALLOCATED_NUMBER", Outcome.REJECTED),
    380: ("UNALLOCATED_NUMBER", Outcome.REJECTED),
    400: ("NORMAL_TEMPORARY_FAILURE", Outcome.FAILED),
    401: ("CALL_REJECTED", Outcome.REJECTED),
    402: ("CALL_REJECTED", Outcome.REJECTED),
    403: ("CALL_REJECTED", Outcome.REJECTED),
    404: ("UNALLOCATED_NUMBER", Outcome.REJECTED),
    405: ("SERVICE_UNAVAILABLE", Outcome.REJECTED),
    406: ("SERVICE_NOT_IMPLEMENTED", Outcome.REJECTED),
    407: ("CALL_REJECTED", Outcome.REJECTED),
    408: ("RECOVERY_ON_TIMER_EXPIRE", Outcome.NO_ANSWER),
    410: ("NUMBER_CHANGED", Outcome.REJECTED),
    413: ("INTERWORKING", Outcome.FAILED),
    414: ("INTERWORKING", Outcome.FAILED),
    415: ("SERVICE_NOT_IMPLEMENTED", Outcome.REJECTED),
    416: ("INTERWORKING", Outcome.FAILED),
    420: ("INTERWORKING", Outcome.FAILED),
    421: ("INTERWORKING", Outcome.FAILED),
    422: ("INTERWORKING", Outcome.FAILED),
    423: ("INTERWORKING", Outcome.FAILED),
    428: ("INVALID_IDENTITY", Outcome.REJECTED),
    429: ("BAD_IDENTITY_INFO", Outcome.REJECTED),
    480: ("NO_USER_RESPONSE", Outcome.NO_ANSWER),
    481: ("NORMAL_TEMPORARY_FAILURE", Outcome.FAILED),
    482: ("EXCHANGE_ROUTING_ERROR", Outcome.FAILED),
    483: ("EXCHANGE_ROUTING_ERROR", Outcome.FAILED),
    484: ("INVALID_NUMBER_FORMAT", Outcome.REJECTED),
    485: ("NO_ROUTE_DESTINATION", Outcome.REJECTED),
    486: ("USER_BUSY", Outcome.BUSY),
    487: ("ORIGINATOR_CANCEL", Outcome.FAILED),
    488: ("INCOMPATIBLE_DESTINATION", Outcome.REJECTED),
    491: ("NORMAL_TEMPORARY_FAILURE", Outcome.FAILED),
    500: ("NORMAL_TEMPORARY_FAILURE", Outcome.FAILED),
    501: ("SERVICE_NOT_IMPLEMENTED", Outcome.FAILED),
    502: ("NETWORK_OUT_OF_ORDER", Outcome.FAILED),
    503: ("NORMAL_TEMPORARY_FAILURE", Outcome.FAILED),
    504: ("RECOVERY_ON_TIMER_EXPIRE", Outcome.FAILED),
    505: ("INTERWORKING", Outcome.FAILED),
    513: ("INTERWORKING", Outcome.FAILED),
    600: ("USER_BUSY", Outcome.BUSY),
    603: ("CALL_REJECTED", Outcome.DECLINED),
    604: ("NO_ROUTE_DESTINATION", Outcome.REJECTED),
    606: ("INCOMPATIBLE_DESTINATION", Outcome.REJECTED),
    607: ("CALL_REJECTED", Outcome.REJECTED),
    608: ("CALL_REJECTED", Outcome.REJECTED),
}

# RFC 3261 §21 reason phrases (plus the later registrations we may meet).
REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}


def reason_phrase(status: int) -> str:
    """The RFC 3261 §21 reason phrase for ``status`` (class default when unknown)."""
    phrase = REASON_PHRASES.get(status)
    if phrase is not None:
        return phrase
    return REASON_PHRASES.get((status // 100) * 100, "Unknown")


def q850_cause(status: int) -> str:
    """The Q.850 cause name FreeSWITCH would give this SIP status."""
    entry = CAUSES.get(status)
    return entry[0] if entry is not None else "NORMAL_UNSPECIFIED"


def outcome_for(status: int, *, canceled_by_us: bool) -> Outcome:
    """The call outcome for the final status of our INVITE.

    ``canceled_by_us`` is True when ringcast sent CANCEL (ring timeout or an
    operator's cancel): the 487 that follows, or a 200 that crossed the CANCEL
    (ACKed and BYEd at once), is ``no-answer``. The dialer maps an operator's
    cancel to ``canceled`` itself.
    """
    if canceled_by_us and status in (200, 487):
        return Outcome.NO_ANSWER
    if 200 <= status < 300:
        return Outcome.ANSWERED
    entry = CAUSES.get(status)
    if entry is not None:
        return entry[1]
    if 300 <= status < 500:
        return Outcome.REJECTED
    if 600 <= status < 700:
        return Outcome.REJECTED
    return Outcome.FAILED


# The call record's `disconnect_cause_text` uses the article's wording where it
# differs from RFC 3261's phrase ("486" / "User Busy"); a peer's own reason
# phrase (often localized or odd) never reaches the record.
RECORD_TEXTS: dict[int, str] = {486: "User Busy"}


def record_text(status: int) -> str:
    """The `disconnect_cause_text` of a call record for a final status."""
    return RECORD_TEXTS.get(status) or reason_phrase(status)
