"""Persistence: SQLAlchemy tables, queries and Alembic migrations (SQLite and PostgreSQL)."""

from ringcast.store.db import Store, open_store, to_async_url
from ringcast.store.records import record_dict

__all__ = ["Store", "open_store", "record_dict", "to_async_url"]
