"""Trunk registration rows (issue 15): a dialer's bindings written by node and
trunk, read back for the fleet (live nodes only, worst binding first), on
SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import timedelta

import sqlalchemy as sa

from ringcast.domain import utcnow
from ringcast.store import Store
from ringcast.store import registrations as rows
from ringcast.store.models import nodes_table, trunk_registrations_table
from ringcast.store.queue import register_node


def binding(state: str, *, failures: int = 0, error: str | None = None) -> dict[str, object]:
    up = state in ("registered", "refreshing")
    return {
        "state": state,
        "registered": up,
        "registrar": "sip:127.0.0.1:5060",
        "aor": "sip:acct@127.0.0.1",
        "expires": 60 if up else None,
        "expires_at": time.time() + 60 if up else None,
        "failures": failures,
        "error": error,
    }


async def test_bindings_of_live_dialers_by_trunk(store: Store) -> None:
    for node in ("a", "b", "dead"):
        await register_node(store, node)
    await rows.publish(store, "a", {"carrier": binding("registered")})
    await rows.publish(
        store,
        "b",
        {
            "carrier": binding("backoff", failures=2, error="401 authentication failed"),
            "other": binding("registered"),
        },
    )
    await rows.publish(store, "dead", {"carrier": binding("registered")})
    async with store.session() as s, s.begin():  # "dead" stopped beating a minute ago
        await s.execute(
            sa.update(nodes_table)
            .where(nodes_table.c.id == "dead")
            .values(heartbeat_at=utcnow() - timedelta(seconds=60))
        )
    fleet = await rows.fleet(store, stale_after=15)
    assert sorted(fleet) == ["carrier", "other"]
    carrier = fleet["carrier"]
    assert sorted(carrier["nodes"]) == ["a", "b"]  # not the dead node's
    assert (carrier["registered"], carrier["nodes_registered"], carrier["nodes_total"]) == (
        False,
        1,
        2,
    )
    assert (carrier["state"], carrier["failures"], carrier["error"]) == (
        "backoff",
        2,
        "401 authentication failed",
    )  # the worst binding's
    assert carrier["nodes"]["a"]["registered"] is True
    assert carrier["nodes"]["a"]["expires"] == 60
    assert abs(carrier["nodes"]["a"]["expires_at"] - (time.time() + 60)) < 30
    assert fleet["other"]["registered"] is True

    # a new state replaces the node's rows; a clean stop removes them
    await rows.publish(store, "b", {"carrier": binding("registered")})
    fleet = await rows.fleet(store, stale_after=15)
    assert fleet["carrier"]["registered"] is True and "other" not in fleet
    await rows.remove(store, "a")
    await rows.remove(store, "b")
    assert await rows.fleet(store, stale_after=15) == {}
    async with store.session() as s:
        left = (await s.execute(sa.select(trunk_registrations_table.c.node_id))).scalars().all()
    assert left == ["dead"]
