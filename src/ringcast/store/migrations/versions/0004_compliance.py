"""Do-not-call entries become numbers or users (not URIs); operator API keys.

Existing entries are rewritten as :func:`ringcast.store.dnc.normalize` writes
them (duplicates that now coincide are merged), so an opt-out stored as
``sip:optme@127.0.0.1:34066`` also stops calls to ``sip:optme@127.0.0.1:34061``.
``api_keys.operator`` marks the keys that may edit the install-wide list.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("operator", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    _normalize_dnc()


def _normalize_dnc() -> None:
    from ringcast.store.dnc import normalize

    bind = op.get_bind()
    dnc = sa.table(
        "dnc", sa.column("id", sa.Integer), sa.column("tenant"), sa.column("entry", sa.String)
    )
    rows = bind.execute(sa.select(dnc.c.id, dnc.c.tenant, dnc.c.entry).order_by(dnc.c.id)).all()
    keep: dict[tuple[str, str], tuple[int, str]] = {}  # (tenant, entry) -> the row that stays
    drop: list[int] = []
    for row in rows:
        group = (row.tenant, normalize(row.entry))
        kept = keep.get(group)
        if not group[1]:
            drop.append(row.id)
        elif kept is None:
            keep[group] = (row.id, row.entry)
        elif row.entry == group[1]:  # already in its final form: this row stays
            drop.append(kept[0])
            keep[group] = (row.id, row.entry)
        else:
            drop.append(row.id)
    for row_id in drop:
        bind.execute(sa.delete(dnc).where(dnc.c.id == row_id))
    for (_, entry), (row_id, old) in keep.items():
        if entry != old:
            bind.execute(sa.update(dnc).where(dnc.c.id == row_id).values(entry=entry))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("operator")
