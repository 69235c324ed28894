"""The do-not-call list: per tenant, entries are SIP URIs or user parts (numbers)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from ringcast.domain import utcnow
from ringcast.store.db import Store
from ringcast.store.models import dnc_table

dnc = dnc_table


def keys_for(to_uri: str) -> list[str]:
    """The entries that match a recipient: its full URI and its user part."""
    keys = [to_uri]
    rest = to_uri.split(":", 1)[1] if ":" in to_uri else to_uri
    user = rest.split("@", 1)[0] if "@" in rest else ""
    if user:
        keys.append(user)
    return keys


async def add(s: AsyncSession, tenant: str, entries: Sequence[str]) -> int:
    """Add entries inside an open transaction (duplicates ignored); return how many were new."""
    wanted = list(dict.fromkeys(entries))
    have = set(
        (
            await s.execute(
                sa.select(dnc.c.entry).where(dnc.c.tenant == tenant, dnc.c.entry.in_(wanted))
            )
        ).scalars()
    )
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
    """Is this recipient on the tenant's do-not-call list?"""
    return bool(await listed(store, tenant, [to_uri]))


async def listed(store: Store, tenant: str, to_uris: Sequence[str]) -> set[str]:
    """Which of these recipients are on the tenant's do-not-call list (one query)."""
    keys = {uri: keys_for(uri) for uri in to_uris}
    wanted = {k for ks in keys.values() for k in ks}
    if not wanted:
        return set()
    stmt = sa.select(dnc.c.entry).where(dnc.c.tenant == tenant, dnc.c.entry.in_(wanted))
    async with store.session(readonly=True) as s, s.begin():
        hits = set((await s.execute(stmt)).scalars())
    return {uri for uri, ks in keys.items() if hits.intersection(ks)}


async def list_entries(
    store: Store, tenant: str, *, after: str | None, limit: int
) -> list[tuple[str, str]]:
    """(entry, created_at as the article's time format) in entry order, after `after`."""
    from ringcast.domain import format_time

    stmt = sa.select(dnc.c.entry, dnc.c.created_at).where(dnc.c.tenant == tenant)
    if after is not None:
        stmt = stmt.where(dnc.c.entry > after)
    stmt = stmt.order_by(dnc.c.entry).limit(limit)
    async with store.session(readonly=True) as s, s.begin():
        rows = (await s.execute(stmt)).all()
    return [(r.entry, format_time(r.created_at) or "") for r in rows]


async def remove_entry(store: Store, tenant: str, entry: str) -> bool:
    async with store.session() as s, s.begin():
        res = await s.execute(sa.delete(dnc).where(dnc.c.tenant == tenant, dnc.c.entry == entry))
    return bool(res.rowcount)  # type: ignore[attr-defined]
