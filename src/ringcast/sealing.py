"""Credentials given inline in a request, kept sealed at rest.

A request names a trunk (``"sip": {"trunk": "carrier"}``) and the dialer reads
the trunk's credentials from the config when it dials, so they never enter
the database. A password given inline (``"sip": {"password": ...}``) has to be
stored until the request's calls are placed: it is stored as
``password_sealed``, AES-256-GCM (``cryptography``'s AESGCM, a random 96-bit
nonce per value), and erased once the request is final
(:func:`erase_if_final`).

The key (32 bytes, base64) is ``RINGCAST_SECRET_KEY`` (``Settings.secret_key``;
required, and the same on every node, when several processes share
PostgreSQL), else for SQLite a file beside the database
(``ringcast.db.secret-key``, mode 0600) created on first use. Without either
(PostgreSQL, no variable) inline passwords are refused (422); trunks work.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.ext.asyncio import AsyncSession

from ringcast.domain import Result
from ringcast.errors import ConfigError
from ringcast.store.models import calls_table, requests_table
from ringcast.store.secret_file import beside_sqlite, create_once

log = logging.getLogger(__name__)

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's 96-bit nonce
KEY_FILE_SUFFIX = ".secret-key"  # ringcast.db.secret-key
SEALED = "password_sealed"  # the stored field in a request's "sip"
_VERSION = "v1:"
_AAD = b"ringcast sip.password"
FINAL_RESULTS = (Result.COMPLETED.value, Result.FAILED.value, Result.CANCELED.value)


class Sealer:
    """Seal and unseal short secrets with one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"the key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key)

    def seal(self, secret: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode("utf-8"), _AAD)
        return _VERSION + base64.b64encode(nonce + sealed).decode("ascii")

    def unseal(self, token: str) -> str:
        """The secret; ValueError when the token was not sealed with this key."""
        if not token.startswith(_VERSION):
            raise ValueError("not a sealed value")
        try:
            raw = base64.b64decode(token[len(_VERSION) :], validate=True)
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _AAD).decode()
        except (binascii.Error, InvalidTag, UnicodeDecodeError):
            raise ValueError("sealed with another key, or damaged") from None


def decode_key(text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        key = b""
    if len(key) != KEY_BYTES:
        raise ValueError(f"must be base64 of {KEY_BYTES} random bytes")
    return key


def new_key_text() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def sealer_for(db_url: str, secret_key: str | None) -> Sealer | None:
    """The install's Sealer (see the module docstring); None when there is no key."""
    if secret_key:
        try:
            return Sealer(decode_key(secret_key))
        except ValueError as exc:
            raise ConfigError(f"RINGCAST_SECRET_KEY {exc}", field="secret_key") from None
    path = beside_sqlite(db_url, KEY_FILE_SUFFIX)
    if path is None:
        return None
    key = create_once(path, new_key_text, decode_key, what="secret key file", field="secret_key")
    return Sealer(key)


def seal_sip(sip: dict[str, Any], sealer: Sealer | None) -> dict[str, Any]:
    """A request's "sip" as stored: an inline password sealed (ValueError without a key)."""
    password = sip.pop("password", None)
    if password is None:
        return sip
    if sealer is None:
        raise ValueError(
            "inline SIP passwords need RINGCAST_SECRET_KEY on this install "
            "(or name a trunk from the config file)"
        )
    return {**sip, SEALED: sealer.seal(str(password))}


def unseal_sip(sip: Mapping[str, Any], sealer: Sealer | None) -> dict[str, Any]:
    """The stored "sip" with its sealed password opened (for the INVITE's digest).
    A password that cannot be opened is left out: the call then fails its 401."""
    out = dict(sip)
    token = out.pop(SEALED, None)
    if token is None:
        return out
    if sealer is None:
        log.error("a request has a sealed SIP password but this process has no secret key")
        return out
    try:
        out["password"] = sealer.unseal(str(token))
    except ValueError as exc:
        log.error("a request's sealed SIP password cannot be opened: %s", exc)
    return out


async def erase_if_final(s: AsyncSession, request_id: str) -> bool:
    """Erase the request's sealed password once every call of it is final (inside the
    caller's transaction); True when something was erased."""
    body: dict[str, Any] = (
        await s.scalar(sa.select(requests_table.c.body).where(requests_table.c.id == request_id))
        or {}
    )
    sip = body.get("sip") or {}
    if SEALED not in sip:
        return False
    live = await s.scalar(
        sa.select(calls_table.c.id)
        .where(calls_table.c.request_id == request_id, calls_table.c.result.not_in(FINAL_RESULTS))
        .limit(1)
    )
    if live is not None:
        return False
    body = {**body, "sip": {k: v for k, v in sip.items() if k != SEALED}}
    await s.execute(
        sa.update(requests_table).where(requests_table.c.id == request_id).values(body=body)
    )
    log.info("request %s is final: its sealed SIP password was erased", request_id)
    return True
