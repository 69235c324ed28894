"""The durable webhook outbox: events are rows, written in the same transaction
as the call-state change they report (the outbox pattern), and delivered later
by :class:`ringcast.webhooks.deliver.WebhookDeliverer`.

- :mod:`.events`: event types, ids, payloads, :func:`enqueue` and the
  same-process commit wakeup (:func:`on_commit`);
- :mod:`.notify`: call events from a call's row (:func:`notify_call`) and the
  request's one ``request.completed``;
- :mod:`.claims`: the deliverer's side: :func:`claim_due` (leased, ``SKIP
  LOCKED`` on PostgreSQL), :func:`settle`, :func:`give_up_expired`, :func:`prune`;
  :func:`settle_and_claim_in` in a transaction the caller owns (the dialer's
  group writer).
"""

from ringcast.store.outbox.claims import (
    MAX_EXCLUDED,
    Due,
    Settlement,
    any_due,
    claim_due,
    give_up_expired,
    origin_of,
    prune,
    settle,
    settle_and_claim,
    settle_and_claim_in,
)
from ringcast.store.outbox.events import (
    CALL_ANSWERED,
    CALL_CANCELED,
    CALL_COMPLETED,
    CALL_DIGITS,
    CALL_FAILED,
    CALL_MACHINE_DETECTED,
    CALL_RECORDED,
    CALL_RINGING,
    CALL_TRANSFERRED,
    EVENT_OF_RESULT,
    EVENT_TYPES,
    FINAL_CALL_EVENTS,
    REQUEST_COMPLETED,
    REQUEST_COMPLETED_DELAY,
    WEBHOOK_ID_MAX,
    build_payload,
    call_event_id,
    enqueue,
    iso_timestamp,
    new_webhook_id,
    on_commit,
    outbox,
    request_completed_id,
)
from ringcast.store.outbox.notify import (
    CallEvent,
    notify_call,
    notify_calls,
    notify_request_completed,
    request_finished,
    request_summary,
)

__all__ = [
    "CALL_ANSWERED",
    "CALL_CANCELED",
    "CALL_COMPLETED",
    "CALL_DIGITS",
    "CALL_FAILED",
    "CALL_MACHINE_DETECTED",
    "CALL_RECORDED",
    "CALL_RINGING",
    "CALL_TRANSFERRED",
    "EVENT_OF_RESULT",
    "EVENT_TYPES",
    "FINAL_CALL_EVENTS",
    "MAX_EXCLUDED",
    "REQUEST_COMPLETED",
    "REQUEST_COMPLETED_DELAY",
    "WEBHOOK_ID_MAX",
    "CallEvent",
    "Due",
    "Settlement",
    "any_due",
    "build_payload",
    "call_event_id",
    "claim_due",
    "enqueue",
    "give_up_expired",
    "iso_timestamp",
    "new_webhook_id",
    "notify_call",
    "notify_calls",
    "notify_request_completed",
    "on_commit",
    "origin_of",
    "outbox",
    "prune",
    "request_completed_id",
    "request_finished",
    "request_summary",
    "settle",
    "settle_and_claim",
    "settle_and_claim_in",
]
