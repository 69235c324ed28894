"""The do-not-call lists: one install-wide (operators), one per tenant.

An entry is a number or a user, never a URI (DESIGN.md, "Do-not-call"):
``sip:+1 (555) 010-0001@gw:5070``, ``tel:+15550100001`` and ``+15550100001``
are one entry, ``+15550100001``. :func:`normalize` makes entries and
recipients comparable: the user part of a ``sip:``/``sips:`` URI or the
number of a ``tel:`` URI; a number with a ``+`` is parsed by `phonenumbers`
and written in E.164, a number without one (no country known) keeps its
digits; a user part with letters (``alice``) matches itself; a URI with no
user part is its host (:func:`ringcast.numbers.dnc_entry`: numbers are dialled
with the same parser). A recipient is suppressed when its entry is on its
tenant's list or on the install-wide one.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from ringcast.domain import format_time, utcnow
from ringcast.numbers import dnc_entry
from ringcast.store.db import Store
from ringcast.store.models import dnc_table

dnc = dnc_table

INSTALL_WIDE = ""  # the tenant value of the operators' list (no API key's tenant is blank)
MAX_ENTRY = 512  # characters

normalize = dnc_entry  # one normalisation for entries, recipients and dialled numbers


def keys_for(to_uri: str) -> list[str]:
    """The entries that match a recipient (its normalized number or user)."""
    key = normalize(to_uri)
    return [key] if key else []


# Built once: a statement with IN lists built per call leaves its bind parameters
# in reference cycles (the collector's work on every call placed).
_LISTED = sa.select(dnc.c.entry).where(
    dnc.c.tenant.in_(sa.bindparam("tenants", expanding=True)),
    dnc.c.entry.in_(sa.bindparam("entries", expanding=True)),
)


async def add(s: AsyncSession, tenant: str, entries: Sequence[str]) -> int:
    """Add entries (normalized; duplicates ignored) inside an open transaction;
    return how many were new."""
    wanted = list(dict.fromkeys(e for e in map(normalize, entries) if e))
    if not wanted:
        return 0
    have = set((await s.execute(_LISTED, {"tenants": [tenant], "entries": wanted})).scalars())
    new = [e for e in wanted if e not in have]
    if new:
        now = utcnow()
        await s.execute(
            sa.insert(dnc), [{"tenant": tenant, "entry": e, "created_at": now} for e in new]
        )
    return len(new)


async def add_entries(store: Store, tenant: str, entries: Sequence[str]) -> int:
    async with store.session() as s, s.begin():
        return await add(s, tenant, entries)


async def matches(store: Store, tenant: str, to_uri: str) -> bool:
    """Is this recipient on the tenant's or the install-wide do-not-call list?"""
    return bool(await listed(store, tenant, [to_uri]))


async def listed(
    store: Store,
    tenant: str,
    to_uris: Sequence[str],
    regions: Sequence[str | None] | None = None,
) -> set[str]:
    """Which of these recipients are on the tenant's or the install-wide list (one query).

    `regions` (one per recipient) is the country a national number is read in
    (the request's or its trunk's), so ``(201) 555-0123`` meets ``+12015550123``."""
    zones = regions if regions is not None else [None] * len(to_uris)
    keys = {
        (uri, region): normalize(uri, region) for uri, region in zip(to_uris, zones, strict=True)
    }
    wanted = {k for k in keys.values() if k}
    if not wanted:
        return set()
    values = {"tenants": list({tenant, INSTALL_WIDE}), "entries": list(wanted)}
    async with store.session(readonly=True) as s, s.begin():
        hits = set((await s.execute(_LISTED, values)).scalars())
    return {uri for (uri, _), key in keys.items() if key in hits}


async def list_entries(
    store: Store, tenant: str, *, after: str | None, limit: int
) -> list[tuple[str, str]]:
    """(entry, created_at as the article's time format) in entry order, after `after`."""
    stmt = sa.select(dnc.c.entry, dnc.c.created_at).where(dnc.c.tenant == tenant)
    if after is not None:
        stmt = stmt.where(dnc.c.entry > after)
    stmt = stmt.order_by(dnc.c.entry).limit(limit)
    async with store.session(readonly=True) as s, s.begin():
        rows = (await s.execute(stmt)).all()
    return [(r.entry, format_time(r.created_at) or "") for r in rows]


async def remove_entry(store: Store, tenant: str, entry: str) -> bool:
    """Remove the entry `entry` normalizes to; False when it was not listed."""
    key = normalize(entry)
    async with store.session() as s, s.begin():
        res = await s.execute(sa.delete(dnc).where(dnc.c.tenant == tenant, dnc.c.entry == key))
    return bool(res.rowcount)  # type: ignore[attr-defined]
