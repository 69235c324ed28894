"""Standard Webhooks signing against the spec's published vector, and verification."""

from __future__ import annotations

import base64

import pytest

from ringcast.webhooks.sign import (
    SignatureError,
    decode_secret,
    generate_secret,
    sign,
    signed_headers,
    verify,
)

# The vector of the Standard Webhooks reference libraries (test_sign_function).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_matches_the_spec_vector() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_secret_prefix_is_optional_and_bytes_are_accepted() -> None:
    key = decode_secret(SPEC_SECRET)
    assert len(key) == 24
    assert decode_secret(SPEC_SECRET.removeprefix("whsec_")) == key
    assert sign(key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_verify_accepts_the_spec_vector_among_other_signatures() -> None:
    headers = {
        "Webhook-Id": SPEC_ID,
        "Webhook-Timestamp": str(SPEC_TIMESTAMP),
        "Webhook-Signature": "v1a,AAAA v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= "
        + SPEC_SIGNATURE,
    }
    assert verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TIMESTAMP + 10) == SPEC_ID


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"webhook-id": ""}, "missing webhook-id, webhook-timestamp or webhook-signature"),
        ({"webhook-timestamp": "soon"}, "webhook-timestamp is not an integer"),
        ({"webhook-timestamp": str(SPEC_TIMESTAMP - 301)}, "outside the tolerance"),
        ({"webhook-timestamp": str(SPEC_TIMESTAMP + 301)}, "outside the tolerance"),
        ({"webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="}, "no matching"),
        ({"webhook-signature": "v2," + SPEC_SIGNATURE[3:]}, "no matching signature"),
        ({"webhook-id": "msg_other"}, "no matching signature"),
    ],
)
def test_verify_refuses(change: dict[str, str], reason: str) -> None:
    headers = {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
        **change,
    }
    with pytest.raises(SignatureError, match=reason):
        verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TIMESTAMP)


def test_verify_refuses_a_changed_body() -> None:
    headers = signed_headers(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    with pytest.raises(SignatureError, match="no matching signature"):
        verify(SPEC_SECRET, headers, b'{"test":2432232314}', now=SPEC_TIMESTAMP)


def test_generated_secrets_round_trip() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(decode_secret(secret)) == 32
    assert secret != generate_secret()
    headers = signed_headers(secret, "msg_1", 1_700_000_000, b"{}")
    assert headers["webhook-timestamp"] == "1700000000"
    assert verify(secret, headers, b"{}", now=1_700_000_000) == "msg_1"
    assert verify(secret.removeprefix("whsec_"), headers, b"{}", now=1_700_000_000) == "msg_1"


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("whsec_not base64!", "webhook secret is not whsec_ followed by base64"),
        ("whsec_" + base64.b64encode(b"x" * 23).decode(), "shorter than 24 bytes"),
    ],
)
def test_bad_secrets(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_secret(secret)


@pytest.mark.parametrize("webhook_id", ["", "msg.1", "msg_\u00e9"])
def test_ids_with_dots_or_non_ascii_are_refused(webhook_id: str) -> None:
    with pytest.raises(ValueError, match="webhook id must be non-empty ASCII without '.'"):
        sign(SPEC_SECRET, webhook_id, SPEC_TIMESTAMP, SPEC_BODY)


def test_generate_secret_bounds() -> None:
    with pytest.raises(ValueError, match="a secret has 24 to 64 bytes"):
        generate_secret(16)
