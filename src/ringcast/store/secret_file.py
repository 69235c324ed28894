"""Secrets kept in a file beside the SQLite database, created on first use.

Two install secrets live there when no setting gives them: the key that seals
inline SIP passwords (``ringcast.db.secret-key``, :mod:`ringcast.sealing`) and
the install secret that signs webhooks (``ringcast.db.webhook-secret``,
:mod:`ringcast.webhooks.secret`). Every process of the install reads the same
file; the first one creates it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import make_url

from ringcast.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")
READ_TRIES = 50  # another process may be writing the file: up to ~1 s of retries
READ_PAUSE = 0.02  # seconds between them


def beside_sqlite(db_url: str, suffix: str) -> Path | None:
    """The file `suffix` names beside a SQLite database file (``ringcast.db`` +
    ``.secret-key``), or None: not a URL, not SQLite, or in memory."""
    try:
        url = make_url(db_url)
    except Exception:  # noqa: BLE001 - not a URL: no file to keep a secret beside
        return None
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database + suffix).expanduser()


def create_once(
    path: Path, make: Callable[[], str], parse: Callable[[str], T], *, what: str, field: str
) -> T:
    """`parse` of the secret in `path`; the file is created first (mode 0600,
    written and fsynced, `make()` plus a newline) unless it exists.

    Safe between processes: the file is created with O_EXCL, so one process
    writes it and the others read what it wrote (waiting while it is still
    empty). An unreadable, empty or malformed file (`parse` raising ValueError)
    raises ConfigError naming `what` (``"secret key file"``) and the path, for
    the setting `field`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(make() + "\n")
            f.flush()
            os.fsync(f.fileno())
        log.info("%s created: %s", what, path)
    for _ in range(READ_TRIES):
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{what} {path}: {exc.strerror}", field=field) from None
        if text:
            try:
                return parse(text)
            except ValueError as exc:
                raise ConfigError(f"{what} {path}: {exc}", field=field) from None
        time.sleep(READ_PAUSE)
    raise ConfigError(f"{what} {path} is empty", field=field)
