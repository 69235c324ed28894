"""Do-not-call entries stored as URIs before migration 0004 become numbers or users,
and `ringcast dnc add|remove|list|import` edits the lists, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from ringcast.domain import utcnow
from ringcast.store import dnc, open_store
from ringcast.store.models import dnc_table

RINGCAST = str(Path(sys.executable).parent / "ringcast")


async def test_migration_0004_rewrites_uri_entries(db_url: str) -> None:
    store = open_store(db_url)
    try:
        await store.migrate("0003")
        now = utcnow()
        rows = [
            ("default", "sip:optme@127.0.0.1:34066"),
            ("default", "optme"),  # already final: this row stays
            ("default", "sip:+1 (555) 010-0001@gw:5070"),
            ("default", "tel:+15550100001"),
            ("acme", "sip:optme@127.0.0.1:34061"),
        ]
        async with store.engine.begin() as conn:
            await conn.execute(
                sa.insert(dnc_table),
                [{"tenant": t, "entry": e, "created_at": now} for t, e in rows],
            )
        await store.migrate()
        async with store.engine.connect() as conn:
            got = sorted(
                (r.tenant, r.entry)
                for r in await conn.execute(sa.select(dnc_table.c.tenant, dnc_table.c.entry))
            )
        assert got == [("acme", "optme"), ("default", "+15550100001"), ("default", "optme")]
        assert await dnc.matches(store, "default", "sip:optme@127.0.0.1:34061")
    finally:
        await store.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RINGCAST, "dnc", *args], capture_output=True, text=True, timeout=60, check=False
    )


async def test_the_dnc_commands(db_url: str, tmp_path: Path) -> None:
    added = _cli("add", "sip:+1 (555) 010-0001@gw:5070", "alice", "--db", db_url)
    assert added.returncode == 0, added.stderr
    assert "added 2 of 2 (+15550100001, alice)" in added.stdout
    again = _cli("add", "tel:+15550100001", "--db", db_url)
    assert "added 0 of 1" in again.stdout
    assert _cli("add", "+15550100003", "--tenant", "acme", "--db", db_url).returncode == 0
    csv = tmp_path / "optouts.csv"
    csv.write_text("name,number\nBob,+1 555 010 0002\nCarol,tel:+15550100004\n")
    imported = _cli("import", str(csv), "--db", db_url)
    assert imported.returncode == 0, imported.stderr
    assert "imported 2 rows: 2 new entries" in imported.stdout
    listed = _cli("list", "--db", db_url)
    entries = [line.split("\t")[0] for line in listed.stdout.splitlines()]
    assert entries == ["+15550100001", "+15550100002", "+15550100004", "alice"]
    assert _cli("list", "--tenant", "acme", "--db", db_url).stdout.startswith("+15550100003\t")
    assert _cli("remove", "alice", "--db", db_url).returncode == 0
    missing = _cli("remove", "alice", "--db", db_url)
    assert missing.returncode == 1 and "not on the list: alice" in missing.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("number\n+\n")
    assert _cli("import", str(bad), "--db", db_url).returncode != 0
    # the install-wide list stops every tenant's calls; acme's only acme's
    store = open_store(db_url)
    try:
        uris = ["sip:+15550100002@127.0.0.1", "sip:+15550100003@127.0.0.1"]
        assert await dnc.listed(store, "someone", uris) == {uris[0]}
        assert await dnc.listed(store, "acme", uris) == set(uris)
    finally:
        await store.close()
