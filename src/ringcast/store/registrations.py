"""Trunk registration state in the database (issue 15): each dialer writes its
REGISTER bindings (RFC 3261 §10) by node and trunk; every API node reads them
for ``/health``, ``/metrics`` and the dashboard.

A row holds what :meth:`ringcast.sip.registration.Binding.status` shows (state,
registrar, address-of-record, granted expiry, failures in a row, last error),
never a password. Rows of nodes whose heartbeat is older than the node timeout
are not shown: a dead dialer holds no binding worth reporting.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ringcast.store.db import Store, db_now, wrap_errors
from ringcast.store.models import nodes_table, trunk_registrations_table

_t = trunk_registrations_table.c
BOUND_STATES = frozenset({"registered", "refreshing"})  # RegState.bound


async def publish(store: Store, node_id: str, status: Mapping[str, Mapping[str, Any]]) -> None:
    """Replace this node's rows with `status` ({trunk: Binding.status()}), at once."""
    async with wrap_errors(), store.session() as s, s.begin():
        now = await db_now(s)
        await s.execute(sa.delete(trunk_registrations_table).where(_t.node_id == node_id))
        rows = [_row(node_id, trunk, info, now) for trunk, info in status.items()]
        if rows:
            await s.execute(sa.insert(trunk_registrations_table), rows)


async def remove(store: Store, node_id: str) -> None:
    """Forget this node's bindings (at a clean shutdown, after unregistering)."""
    async with wrap_errors(), store.session() as s, s.begin():
        await s.execute(sa.delete(trunk_registrations_table).where(_t.node_id == node_id))


def _row(node_id: str, trunk: str, info: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    expires_at = info.get("expires_at")
    return {
        "node_id": node_id,
        "trunk": trunk,
        "state": str(info["state"]),
        "registrar": str(info.get("registrar") or ""),
        "aor": str(info.get("aor") or ""),
        "expires": info.get("expires"),
        "expires_at": datetime.fromtimestamp(expires_at, UTC) if expires_at else None,
        "failures": int(info.get("failures") or 0),
        "error": info.get("error"),
        "updated_at": now,
    }


async def fleet(store: Store, stale_after: float) -> dict[str, dict[str, Any]]:
    """The bindings of live dialers by trunk: ``{trunk: summary}``.

    A summary is registered when every live dialer holding a binding for the
    trunk is registered (each dialer sends its calls on its own binding); it
    carries the state, expiry and error of the worst one and every node's own
    under ``nodes``. Empty when no live dialer registers a trunk."""
    n = nodes_table.c
    async with wrap_errors(), store.session(readonly=True) as s:
        now = await db_now(s)
        rows = (
            await s.execute(
                sa.select(trunk_registrations_table)
                .join(nodes_table, n.id == _t.node_id)
                .where(n.heartbeat_at >= now - timedelta(seconds=stale_after))
                .order_by(_t.trunk, _t.node_id)
            )
        ).all()
    by_trunk: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_trunk.setdefault(row.trunk, {})[row.node_id] = _status(row)
    return {trunk: summary(nodes) for trunk, nodes in by_trunk.items()}


def _status(row: Any) -> dict[str, Any]:
    return {
        "state": row.state,
        "registered": row.state in BOUND_STATES,
        "registrar": row.registrar,
        "aor": row.aor,
        "expires": row.expires,
        "expires_at": row.expires_at.timestamp() if row.expires_at else None,
        "failures": row.failures,
        "error": row.error,
        "updated_at": row.updated_at.timestamp(),
    }


def summary(nodes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One trunk's line from its nodes' bindings (see :func:`fleet`): the worst
    binding first (down before up, then more failures, then the earliest expiry)."""

    def badness(item: tuple[str, Mapping[str, Any]]) -> tuple[bool, int, float, str]:
        node, info = item
        return (bool(info["registered"]), -int(info["failures"]), info["expires_at"] or 0, node)

    _, worst = min(nodes.items(), key=badness)
    up = sum(1 for info in nodes.values() if info["registered"])
    return {
        "state": worst["state"],
        "registered": up == len(nodes),
        "registrar": worst["registrar"],
        "aor": worst["aor"],
        "expires": worst["expires"],
        "expires_at": worst["expires_at"],
        "failures": worst["failures"],
        "error": worst["error"],
        "nodes_registered": up,
        "nodes_total": len(nodes),
        "nodes": {node: dict(info) for node, info in nodes.items()},
    }
