"""API keys: create, list, revoke, look up. Only a key's SHA-256 is stored.

A key is ``rc_`` + 32 random bytes in URL-safe base64 (no padding). It is shown
once, by :func:`create_key`; the database keeps its SHA-256 (hex) and its first
characters (``key_prefix``) for display. Each key also gets a webhook signing
secret, ``whsec_`` + base64 of 24 random bytes (the Standard Webhooks format),
kept in the clear because HMAC needs it; it is never returned by the API.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ringcast.domain import utcnow
from ringcast.errors import ValidationFailed
from ringcast.store.db import Store, wrap_errors
from ringcast.store.models import api_keys_table

logger = logging.getLogger(__name__)

KEY_PREFIX = "rc_"
KEY_BYTES = 32  # random bytes in a key
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24  # random bytes in a webhook signing secret
DISPLAY_CHARS = 8  # leading characters of a key kept for display
ALLOW_KINDS = ("hosts", "domains", "prefixes")
MAX_NAME = 128
MAX_TENANT = 64


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def new_webhook_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def hash_key(key: str) -> str:
    """SHA-256 hex of the key's UTF-8 bytes (keys are high-entropy: no salt needed)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What the API knows about a key: never the key itself nor its webhook secret."""

    id: str
    name: str
    tenant: str
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None = None
    rate_limit: float | None = None  # POSTs per minute
    allow: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    operator: bool = False  # may edit the install-wide do-not-call list

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """The result of :func:`create_key`: the only time the key and secret are visible."""

    key: str
    webhook_secret: str
    info: ApiKey = field(repr=False)

    def __repr__(self) -> str:  # never print the key or the secret by accident
        return f"CreatedKey(id={self.info.id!r}, prefix={self.info.key_prefix!r})"


def normalize_allow(allow: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]] | None:
    """The stored allowlist: lowercase hosts and domains, stripped prefixes, no empties."""
    if not allow:
        return None
    out: dict[str, list[str]] = {}
    for kind, values in allow.items():
        if kind not in ALLOW_KINDS:
            raise ValidationFailed(f"unknown allowlist kind {kind!r}", field="allow")
        cleaned = []
        for value in values:
            text = str(value).strip()
            if kind != "prefixes":
                text = text.lower().rstrip(".").lstrip(".")
            if text:
                cleaned.append(text)
        if cleaned:
            out[kind] = list(dict.fromkeys(cleaned))
    return out or None


def _info(row: Any) -> ApiKey:
    allow = row.allow or {}
    return ApiKey(
        id=row.id,
        name=row.name,
        tenant=row.tenant,
        key_prefix=row.key_prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        rate_limit=row.rate_limit,
        allow={k: tuple(allow.get(k) or ()) for k in ALLOW_KINDS if allow.get(k)},
        operator=bool(row.operator),
    )


_PUBLIC_COLUMNS = [c for c in api_keys_table.c if c.name not in ("key_hash", "webhook_secret")]


async def create_key(
    store: Store,
    name: str,
    *,
    tenant: str | None = None,
    rate_limit: float | None = None,
    allow: Mapping[str, Sequence[str]] | None = None,
    operator: bool = False,
) -> CreatedKey:
    """Create a key; without `tenant` the key is its own tenant (its id).

    What was made while the server had no key belongs to the tenant ``default``:
    a key created with ``tenant="default"`` sees it. An `operator` key may also
    edit the install-wide do-not-call list."""
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise ValidationFailed(f"name must be 1..{MAX_NAME} characters", field="name")
    if tenant is not None and (not tenant.strip() or len(tenant) > MAX_TENANT):
        raise ValidationFailed(f"tenant must be 1..{MAX_TENANT} characters", field="tenant")
    if rate_limit is not None and rate_limit <= 0:
        raise ValidationFailed("rate must be above 0 (POSTs per minute)", field="rate")
    key_id = str(uuid.uuid4())
    key = new_key()
    secret = new_webhook_secret()
    stored_allow = normalize_allow(allow)
    now = utcnow()
    owner = tenant.strip() if tenant is not None else key_id
    values: dict[str, Any] = {
        "id": key_id,
        "name": name,
        "tenant": owner,
        "key_hash": hash_key(key),
        "key_prefix": key[:DISPLAY_CHARS],
        "webhook_secret": secret,
        "created_at": now,
        "revoked_at": None,
        "rate_limit": rate_limit,
        "allow": stored_allow,
        "operator": operator,
    }
    async with wrap_errors(), store.session() as s, s.begin():
        await s.execute(sa.insert(api_keys_table).values(**values))
    logger.info("API key %s (%s) created for tenant %s", key_id, name, owner)
    info = ApiKey(
        id=key_id,
        name=name,
        tenant=owner,
        key_prefix=key[:DISPLAY_CHARS],
        created_at=now,
        rate_limit=rate_limit,
        allow={k: tuple(v) for k, v in (stored_allow or {}).items()},
        operator=operator,
    )
    return CreatedKey(key, secret, info)


async def list_keys(store: Store, *, include_revoked: bool = True) -> list[ApiKey]:
    stmt = sa.select(*_PUBLIC_COLUMNS).order_by(api_keys_table.c.created_at, api_keys_table.c.id)
    if not include_revoked:
        stmt = stmt.where(api_keys_table.c.revoked_at.is_(None))
    async with wrap_errors(), store.session(readonly=True) as s:
        return [_info(r) for r in await s.execute(stmt)]


async def revoke_key(store: Store, ident: str) -> ApiKey | None:
    """Revoke the key with this id (or this unique id prefix, or this name when it is
    unique). Returns it, or None when nothing matches; ValidationFailed when ambiguous."""
    ident = ident.strip()
    if not ident:
        return None
    c = api_keys_table.c
    async with wrap_errors(), store.session() as s, s.begin():
        rows = list(
            await s.execute(
                sa.select(*_PUBLIC_COLUMNS).where(
                    sa.or_(c.id == ident, c.id.startswith(ident, autoescape=True), c.name == ident)
                )
            )
        )
        exact = [r for r in rows if r.id == ident]
        if exact:
            rows = exact
        if not rows:
            return None
        if len(rows) > 1:
            raise ValidationFailed(f"{ident!r} matches {len(rows)} keys: give the id", field="id")
        row = rows[0]
        now = utcnow()
        if row.revoked_at is None:
            await s.execute(sa.update(api_keys_table).where(c.id == row.id).values(revoked_at=now))
    logger.info("API key %s revoked", row.id)
    info = _info(row)
    return info if info.revoked_at is not None else dataclasses.replace(info, revoked_at=now)


async def lookup_key(store: Store, key: str) -> ApiKey | None:
    """The active key whose hash matches, else None."""
    digest = hash_key(key)
    async with wrap_errors(), store.session(readonly=True) as s:
        row = (
            await s.execute(
                sa.select(*_PUBLIC_COLUMNS).where(
                    api_keys_table.c.key_hash == digest, api_keys_table.c.revoked_at.is_(None)
                )
            )
        ).first()
    return None if row is None else _info(row)


async def any_active_key(store: Store) -> bool:
    async with wrap_errors(), store.session(readonly=True) as s:
        found = await s.scalar(
            sa.select(api_keys_table.c.id).where(api_keys_table.c.revoked_at.is_(None)).limit(1)
        )
    return found is not None


async def webhook_secret(store: Store, key_id: str) -> str | None:
    """The signing secret of a key (for the webhook sender; never for the API)."""
    async with wrap_errors(), store.session(readonly=True) as s:
        secret = await s.scalar(
            sa.select(api_keys_table.c.webhook_secret).where(api_keys_table.c.id == key_id)
        )
    return None if secret is None else str(secret)
