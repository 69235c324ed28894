"""Who owns a claimed call: the node and the epoch it claimed under.

Every write after a claim is fenced by `(node_id, claim_epoch)`: a node that
lost its claim (declared dead, calls rescued) updates nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from ringcast.errors import StoreError
from ringcast.store.models import calls_table


@dataclass(frozen=True)
class Fence:
    """Who may write a claimed call: the node and the epoch it claimed under."""

    node_id: str
    epoch: int

    def where(self) -> sa.ColumnElement[bool]:
        return sa.and_(
            calls_table.c.node_id == self.node_id, calls_table.c.claim_epoch == self.epoch
        )


@dataclass(frozen=True)
class ClaimedCall:
    """A call this node now owns, with what is needed to dial it."""

    id: str
    request_id: str
    seq: int
    to_uri: str
    from_uri: str
    variables: Mapping[str, Any] | None
    timezone: str | None
    attempt: int
    epoch: int


def wrap(exc: SQLAlchemyError) -> StoreError:
    """A driver error as ringcast's (its type named, no SQL or parameters)."""
    return StoreError(f"database error: {type(exc).__name__}")
