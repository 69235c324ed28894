"""Webhooks: call and request events POSTed to a request's `callback_url`.

Events are written to a durable outbox in the same transaction as the state
change they report (:mod:`ringcast.store.outbox`), signed per Standard
Webhooks (:mod:`ringcast.webhooks.sign`) and delivered with retries by
:class:`~ringcast.webhooks.deliver.WebhookDeliverer` (one attempt: :mod:`ringcast.webhooks.attempt`;
retry policy: :mod:`ringcast.webhooks.backoff`; install secret: :mod:`ringcast.webhooks.secret`).
"""

from ringcast.store.outbox import (
    CALL_ANSWERED,
    CALL_CANCELED,
    CALL_COMPLETED,
    CALL_DIGITS,
    CALL_FAILED,
    CALL_MACHINE_DETECTED,
    CALL_RECORDED,
    CALL_RINGING,
    CALL_TRANSFERRED,
    EVENT_TYPES,
    REQUEST_COMPLETED,
    build_payload,
    call_event_id,
    enqueue,
    notify_call,
    notify_request_completed,
    request_completed_id,
    request_finished,
    request_summary,
)
from ringcast.webhooks.backoff import Backoff
from ringcast.webhooks.deliver import WebhookDeliverer, deliverer_lifespan
from ringcast.webhooks.secret import install_secret
from ringcast.webhooks.sign import SignatureError, generate_secret, sign, signed_headers, verify

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
    "EVENT_TYPES",
    "REQUEST_COMPLETED",
    "Backoff",
    "SignatureError",
    "WebhookDeliverer",
    "build_payload",
    "call_event_id",
    "deliverer_lifespan",
    "enqueue",
    "generate_secret",
    "install_secret",
    "notify_call",
    "notify_request_completed",
    "request_completed_id",
    "request_finished",
    "request_summary",
    "sign",
    "signed_headers",
    "verify",
]
