"""SDES keys in SDP (RFC 4568 ``a=crypto``) for SRTP (RFC 3711), pure: no I/O.

``a=crypto:<tag> <crypto-suite> inline:<base64 key||salt>[|lifetime][|MKI:len]``.
We offer one attribute per suite in :data:`OFFERED_SUITES` (preference
order), each with a fresh master key and salt from :mod:`secrets`; the
answerer picks one, echoing its tag and suite with its own key (§5.1.2).
:func:`negotiate` checks that answer against the offer.

The policy (``"srtp"`` on a trunk or request): ``off`` offers plain RTP;
``optional`` offers ``RTP/AVP`` *with* ``a=crypto`` (best-effort SRTP: a callee
that knows SDES answers with a key, one that does not ignores the attribute
and answers plain RTP; one INVITE, no 488 and re-dial); ``required`` offers
``RTP/SAVP`` and fails a callee whose answer carries no acceptable key.

Keys are secrets: :func:`redact_sdp` masks every ``inline:`` key of a text
(used on every logged SIP message), and the ``repr`` of a
:class:`CryptoAttribute` never shows its key.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass, field

SRTP_MODES = ("off", "optional", "required")
SRTP_STRENGTH = {"off": 0, "optional": 1, "required": 2}
PROTO_PLAIN = "RTP/AVP"
PROTO_SECURE = "RTP/SAVP"
REDACTED = "inline:[redacted]"


@dataclass(frozen=True)
class CryptoSuite:
    """One SDES crypto-suite: its name and master key / salt lengths in bytes."""

    name: str
    key_len: int
    salt_len: int

    @property
    def key_salt_len(self) -> int:
        return self.key_len + self.salt_len


# RFC 4568 §6.2 (AES_CM_128_HMAC_SHA1_80 is mandatory to implement) and RFC 7714 §14.2.
SUITES: dict[str, CryptoSuite] = {
    s.name: s
    for s in (
        CryptoSuite("AES_CM_128_HMAC_SHA1_80", 16, 14),
        CryptoSuite("AES_CM_128_HMAC_SHA1_32", 16, 14),
        CryptoSuite("AEAD_AES_256_GCM", 32, 12),
    )
}
OFFERED_SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_256_GCM")

_INLINE = re.compile(r"inline:[^\s|]+", re.IGNORECASE)


@dataclass(frozen=True)
class CryptoAttribute:
    """One ``a=crypto`` line: tag, suite and the master key || salt it carries."""

    tag: int
    suite: str
    key: bytes = field(repr=False)  # master key || master salt: never logged
    params: str = ""  # everything after the key: |lifetime|MKI:len (kept, not used)

    def value(self) -> str:
        """The attribute value (after ``a=crypto:``)."""
        inline = base64.b64encode(self.key).decode("ascii")
        return f"{self.tag} {self.suite} inline:{inline}{self.params}"


@dataclass(frozen=True)
class SrtpParams:
    """What one call's SRTP uses: the suite, our key (we send) and the callee's (we receive)."""

    suite: str
    local_key: bytes = field(repr=False)
    remote_key: bytes = field(repr=False)


def parse_crypto(value: str) -> CryptoAttribute:
    """Parse an ``a=crypto`` value (RFC 4568 §9.1); ``ValueError`` with an exact message.

    Only the first key parameter is read; an unknown suite is returned as is
    (the answer to an offer never carries one we did not offer: :func:`negotiate`
    checks), session parameters (``UNENCRYPTED_SRTP`` ...) are refused.
    """
    parts = value.split()
    if len(parts) < 3:
        raise ValueError("a=crypto needs a tag, a crypto-suite and key parameters")
    tag, suite, keyparams = parts[0], parts[1], parts[2]
    if not tag.isdigit() or len(tag) > 9:
        raise ValueError("a=crypto tag must be 1 to 9 digits")
    if len(parts) > 3:
        raise ValueError("a=crypto session parameters are not supported")
    first = keyparams.split(";", 1)[0]
    if not first.lower().startswith("inline:"):
        raise ValueError("a=crypto key method must be inline")
    material, sep, rest = first[len("inline:") :].partition("|")
    try:
        key = base64.b64decode(material + "=" * (-len(material) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a=crypto key is not base64") from None
    known = SUITES.get(suite)
    if known is not None and len(key) != known.key_salt_len:
        raise ValueError(
            f"a=crypto key for {suite} must be {known.key_salt_len} bytes, not {len(key)}"
        )
    return CryptoAttribute(int(tag), suite, key, sep + rest)


def new_offer(suites: tuple[str, ...] = OFFERED_SUITES) -> tuple[CryptoAttribute, ...]:
    """One attribute per suite, tags 1.., each with a fresh key and salt (``secrets``)."""
    return tuple(
        CryptoAttribute(tag, name, secrets.token_bytes(SUITES[name].key_salt_len))
        for tag, name in enumerate(suites, start=1)
    )


def negotiate(offered: tuple[CryptoAttribute, ...], answered: list[str]) -> SrtpParams | None:
    """The SRTP of a call from our offered attributes and the answer's ``a=crypto`` values.

    RFC 4568 §5.1.2: the answer holds one attribute whose tag and suite are one
    we offered, with the answerer's own key. None when the answer has no
    ``a=crypto``; ``ValueError`` when it has one we cannot use.
    """
    if not answered:
        return None
    by_tag = {a.tag: a for a in offered}
    problems: list[str] = []
    for value in answered:
        try:
            remote = parse_crypto(value)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        ours = by_tag.get(remote.tag)
        if ours is None or ours.suite != remote.suite:
            problems.append(f"a=crypto tag {remote.tag} {remote.suite} was not offered")
            continue
        if ":" in remote.params:  # |MKI:length (RFC 4568 §6.1)
            problems.append("a=crypto with an MKI is not supported")
            continue
        return SrtpParams(ours.suite, ours.key, remote.key)
    raise ValueError(f"SDP answer has no usable a=crypto: {problems[0]}")


def stricter(a: str | None, b: str | None) -> str:
    """The stronger of two SRTP policies (a trunk's ``required`` holds over a request)."""
    x, y = a or "off", b or "off"
    return x if SRTP_STRENGTH.get(x, 0) >= SRTP_STRENGTH.get(y, 0) else y


def redact_sdp(text: str) -> str:
    """``text`` with every SDES key (``inline:...``) masked: for logs."""
    return _INLINE.sub(REDACTED, text)
