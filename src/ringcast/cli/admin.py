"""Commands on the database itself (`--db`), no server needed: `keys` (API keys)
and `dnc` (do-not-call lists)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ringcast.cli.common import AsJson, Db, fail, run, settings_from

# --- ringcast keys -------------------------------------------------------------------------

keys_app = typer.Typer(
    help="API keys (stored in --db): create, list, revoke.", no_args_is_help=True
)


def _keys_db(db: str | None) -> str:
    return settings_from(require=("db",), db=db).db


async def _with_store(db: str, action: Callable[[Any], Any]) -> Any:
    from ringcast.store.db import open_store

    store = open_store(db)
    try:
        await store.migrate()
        return await action(store)
    finally:
        await store.close()


def _key_json(info: Any) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.name,
        "tenant": info.tenant,
        "key_prefix": info.key_prefix,
        "created_at": info.created_at.isoformat(),
        "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
        "rate_limit": info.rate_limit,
        "allow": {k: list(v) for k, v in info.allow.items()},
        "operator": info.operator,
    }


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="a label for the key")],
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="tenant (default: the key is its own tenant)")
    ] = None,
    rate: Annotated[
        float | None, typer.Option("--rate", help="POST requests per minute (default: no limit)")
    ] = None,
    allow_host: Annotated[
        list[str] | None, typer.Option("--allow-host", help="recipient host it may call")
    ] = None,
    allow_domain: Annotated[
        list[str] | None, typer.Option("--allow-domain", help="recipient domain (and subdomains)")
    ] = None,
    allow_prefix: Annotated[
        list[str] | None, typer.Option("--allow-prefix", help="recipient user-part prefix")
    ] = None,
    operator: Annotated[
        bool, typer.Option("--operator", help="may edit the install-wide do-not-call list")
    ] = False,
    db: Db = None,
    as_json: AsJson = False,
) -> None:
    """Create a key; prints the key and its webhook signing secret once (only hashes are kept).

    What was made while the server had no key belongs to the tenant `default`:
    create the key with `--tenant default` to see it."""
    from ringcast.store.keys import create_key

    allow = {
        "hosts": allow_host or [],
        "domains": allow_domain or [],
        "prefixes": allow_prefix or [],
    }

    async def create(store: Any) -> Any:
        return await create_key(
            store, name, tenant=tenant, rate_limit=rate, allow=allow, operator=operator
        )

    url = _keys_db(db)
    created: list[Any] = []

    async def work() -> None:
        created.append(await _with_store(url, create))

    run(work())
    made = created[0]
    if as_json:
        out = {"key": made.key, "webhook_secret": made.webhook_secret, **_key_json(made.info)}
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo("API key created. The key and its webhook secret are shown only now:")
    typer.echo(f"key:            {made.key}")
    typer.echo(f"webhook_secret: {made.webhook_secret}")
    typer.echo(f"id:             {made.info.id}")
    typer.echo(f"tenant:         {made.info.tenant}")


@keys_app.command("list")
def keys_list(db: Db = None, as_json: AsJson = False) -> None:
    """List keys (prefix, tenant, limits; never the key or its secret)."""
    from ringcast.store.keys import list_keys

    url = _keys_db(db)
    found: list[Any] = []

    async def work() -> None:
        found.extend(await _with_store(url, list_keys))

    run(work())
    if as_json:
        typer.echo(json.dumps([_key_json(k) for k in found], indent=2))
        return
    for k in found:
        state = "revoked" if k.revoked_at else "active"
        rate_text = f"{k.rate_limit:g}/min" if k.rate_limit else "-"
        allow = ";".join(f"{kind}={','.join(v)}" for kind, v in k.allow.items()) or "-"
        typer.echo(
            f"{k.id}  {k.key_prefix}...  {state:7}  tenant={k.tenant}  name={k.name}  "
            f"rate={rate_text}  allow={allow}{'  operator' if k.operator else ''}"
        )


@keys_app.command("revoke")
def keys_revoke(
    ident: Annotated[str, typer.Argument(help="key id (or a unique id prefix, or its name)")],
    db: Db = None,
) -> None:
    """Revoke a key: running servers refuse it within a few seconds."""
    from ringcast.store.keys import revoke_key

    url = _keys_db(db)
    done: list[Any] = []

    async def revoke(store: Any) -> Any:
        return await revoke_key(store, ident)

    async def work() -> None:
        done.append(await _with_store(url, revoke))

    run(work())
    if done[0] is None:
        raise fail(f"no API key {ident!r}", 1)
    typer.echo(f"revoked {done[0].id} ({done[0].name})")


# --- ringcast dnc -------------------------------------------------------------------------

dnc_app = typer.Typer(
    help="Do-not-call lists (stored in --db): the install-wide list, or --tenant's.",
    no_args_is_help=True,
)
DncTenant = Annotated[
    str | None,
    typer.Option("--tenant", help="a tenant's list (default: the install-wide list)"),
]


def _dnc_owner(tenant: str | None) -> str:
    from ringcast.store.dnc import INSTALL_WIDE

    if tenant is None:
        return INSTALL_WIDE
    if not tenant.strip():
        raise fail("--tenant must not be blank")
    return tenant.strip()


def _dnc_run(db: str | None, action: Callable[[Any], Any]) -> Any:
    url = _keys_db(db)
    out: list[Any] = []

    async def work() -> None:
        out.append(await _with_store(url, action))

    run(work())
    return out[0]


@dnc_app.command("add")
def dnc_add(
    entries: Annotated[list[str], typer.Argument(help="numbers or users: +15550100001, alice")],
    tenant: DncTenant = None,
    db: Db = None,
) -> None:
    """Add numbers or users (sip:/tel: URIs are reduced to their number or user)."""
    from ringcast.store import dnc

    owner = _dnc_owner(tenant)
    keys = [dnc.normalize(e) for e in entries]
    if not all(keys):
        raise fail("an entry must hold a number or a user name")
    added = _dnc_run(db, lambda store: dnc.add_entries(store, owner, entries))
    typer.echo(f"added {added} of {len(set(keys))} ({', '.join(dict.fromkeys(keys))})")


@dnc_app.command("remove")
def dnc_remove(
    entries: Annotated[list[str], typer.Argument(help="numbers or users to remove")],
    tenant: DncTenant = None,
    db: Db = None,
) -> None:
    """Remove numbers or users; exit 1 when one was not listed."""
    from ringcast.store import dnc

    owner = _dnc_owner(tenant)

    async def remove(store: Any) -> list[str]:
        return [e for e in entries if not await dnc.remove_entry(store, owner, e)]

    missing = _dnc_run(db, remove)
    typer.echo(f"removed {len(entries) - len(missing)}")
    if missing:
        raise fail(f"not on the list: {', '.join(missing)}", 1)


@dnc_app.command("list")
def dnc_list(tenant: DncTenant = None, db: Db = None, as_json: AsJson = False) -> None:
    """Print the list, one entry a line (with the time it was added)."""
    from ringcast.store import dnc

    owner = _dnc_owner(tenant)

    async def read(store: Any) -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = []
        after = None
        while True:
            page = await dnc.list_entries(store, owner, after=after, limit=10_000)
            rows.extend(page)
            if len(page) < 10_000:
                return rows
            after = page[-1][0]

    rows = _dnc_run(db, read)
    if as_json:
        typer.echo(json.dumps([{"entry": e, "created_at": t} for e, t in rows], indent=2))
        return
    for entry, created in rows:
        typer.echo(f"{entry}\t{created}")


_DNC_COLUMNS = ("number", "entry", "to", "phone", "user")  # by preference


@dnc_app.command("import")
def dnc_import(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV: numbers or users in the first column, or in a column "
            "headed number, entry, to, phone or user"
        ),
    ],
    tenant: DncTenant = None,
    db: Db = None,
) -> None:
    """Add every number or user of a CSV file (a header row is recognised and skipped)."""
    import csv

    from ringcast.store import dnc

    owner = _dnc_owner(tenant)
    try:
        with file.open(newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f) if row and any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise fail(f"cannot read {file}: {exc}") from None
    column = 0
    if rows:  # a header row names the column: number, entry, to, phone or user
        header = [c.strip().lower() for c in rows[0]]
        named = [header.index(c) for c in _DNC_COLUMNS if c in header]
        if named:
            column, rows = named[0], rows[1:]
    entries = [row[column].strip() for row in rows if len(row) > column and row[column].strip()]
    bad = [e for e in entries if not dnc.normalize(e)]
    if bad:
        raise fail(f"{file}: {len(bad)} rows hold no number or user (first: {bad[0][:64]!r})")
    added = _dnc_run(db, lambda store: dnc.add_entries(store, owner, entries))
    typer.echo(f"imported {len(entries)} rows: {added} new entries")
