"""Standard Webhooks signatures (symmetric, `v1`): pure functions, no I/O.

The scheme (https://www.standardwebhooks.com, spec "Signature scheme"):

- the secret is serialized as ``"whsec_" + base64(key)``; the HMAC key is the
  decoded bytes (at least 24 of them);
- the signed content is ``f"{webhook_id}.{timestamp}.{body}"`` where
  `timestamp` is the attempt's integer Unix time and `body` the exact bytes
  sent;
- the ``webhook-signature`` header is a space-separated list of
  ``"v1," + base64(HMAC-SHA256(key, content))``; a receiver accepts the
  message when any `v1` entry matches (constant-time compare) and the
  timestamp is within its tolerance of now.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24  # the spec's minimum key length (192 bits)
MAX_SECRET_BYTES = 64  # api_keys.webhook_secret holds 128 characters
DEFAULT_SECRET_BYTES = 32
DEFAULT_TOLERANCE = 300.0  # seconds a receiver accepts between webhook-timestamp and now
SIGNATURE_VERSION = "v1"

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


class SignatureError(ValueError):
    """The webhook's signature headers do not verify."""


def generate_secret(nbytes: int = DEFAULT_SECRET_BYTES) -> str:
    """A fresh random secret, serialized as ``whsec_<base64>``."""
    if not MIN_SECRET_BYTES <= nbytes <= MAX_SECRET_BYTES:
        raise ValueError(f"a secret has {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes")
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix may be left out;
    missing base64 padding is tolerated, as the reference libraries do)."""
    text = secret.strip()
    if text.startswith(SECRET_PREFIX):
        text = text[len(SECRET_PREFIX) :]
    text += "=" * (-len(text) % 4)
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret is not whsec_ followed by base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"webhook secret is shorter than {MIN_SECRET_BYTES} bytes")
    return key


def _check_id(webhook_id: str) -> None:
    # The spec: the id must not be user controlled or contain "." (it delimits
    # the signed content).
    if not webhook_id or "." in webhook_id or not webhook_id.isascii():
        raise ValueError("webhook id must be non-empty ASCII without '.'")


def sign(secret: str | bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `v1` signature of one attempt: ``"v1," + base64(HMAC-SHA256)``.

    `secret` is a ``whsec_`` string or the already decoded key bytes.
    """
    _check_id(webhook_id)
    key = decode_secret(secret) if isinstance(secret, str) else secret
    content = b"%s.%d.%s" % (webhook_id.encode("ascii"), int(timestamp), body)
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def signed_headers(
    secret: str | bytes, webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    return {
        HEADER_ID: webhook_id,
        HEADER_TIMESTAMP: str(int(timestamp)),
        HEADER_SIGNATURE: sign(secret, webhook_id, timestamp, body),
    }


def verify(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> str:
    """Check a received webhook as a receiver would; return its webhook-id.

    Header names are matched case-insensitively. Raises :class:`SignatureError`
    with the reason when a header is missing, the timestamp is outside
    `tolerance` seconds of `now`, or no `v1` signature matches.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    webhook_id = lowered.get(HEADER_ID, "")
    stamp = lowered.get(HEADER_TIMESTAMP, "")
    given = lowered.get(HEADER_SIGNATURE, "")
    if not (webhook_id and stamp and given):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SignatureError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError("webhook-timestamp is outside the tolerance")
    try:
        expected = sign(secret, webhook_id, timestamp, body).encode("ascii")
    except ValueError as exc:
        raise SignatureError(str(exc)) from None
    for candidate in given.split(" "):
        if candidate.startswith(SIGNATURE_VERSION + ",") and hmac.compare_digest(
            candidate.encode("ascii", "replace"), expected
        ):
            return webhook_id
    raise SignatureError("no matching signature")
