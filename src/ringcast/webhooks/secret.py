"""The install secret: what signs the webhooks of requests made without an API key
(Settings.webhook_secret, else a file beside the SQLite database)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from sqlalchemy.engine import make_url

from ringcast.errors import ConfigError
from ringcast.webhooks.sign import decode_secret, generate_secret

log = logging.getLogger(__name__)

ENV_SECRET = "RINGCAST_WEBHOOK_SECRET"
SECRET_FILE_SUFFIX = ".webhook-secret"  # next to the SQLite file: ringcast.db.webhook-secret


def install_secret(db_url: str, configured: str | None = None) -> str | None:
    """The secret that signs webhooks of requests made without an API key.

    1. `configured`, the setting ``webhook_secret`` (``RINGCAST_WEBHOOK_SECRET``:
       ``whsec_`` + base64 of at least 24 bytes), if set: required when several
       machines share PostgreSQL, and must be the same on all of them;
    2. else, for a SQLite file, the file beside it (``ringcast.db.webhook-secret``,
       mode 0600), generated on first use and read by every later process;
    3. else None (PostgreSQL without the variable): such webhooks cannot be
       signed and are retried until the variable is set or 24 h pass.

    A malformed variable or file raises ConfigError naming it.
    """
    given = (configured or "").strip()
    if given:
        try:
            decode_secret(given)
        except ValueError as exc:
            raise ConfigError(f"{ENV_SECRET}: {exc}", field="webhook_secret") from None
        return given
    try:
        url = make_url(db_url)
    except Exception:  # noqa: BLE001 - not a URL: no file to keep a secret beside
        return None
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return _file_secret(Path(url.database + SECRET_FILE_SUFFIX).expanduser())


def _file_secret(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        secret = generate_secret()
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
            f.flush()
            os.fsync(f.fileno())
        log.info("webhook install secret created in %s", path)
        return secret
    # Another process created it: it may still be writing (a few lines above).
    for _ in range(50):
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"webhook secret file {path}: {exc.strerror}", field="webhook_secret"
            ) from None
        if text:
            try:
                decode_secret(text)
            except ValueError as exc:
                raise ConfigError(
                    f"webhook secret file {path}: {exc}", field="webhook_secret"
                ) from None
            return text
        time.sleep(0.02)
    raise ConfigError(f"webhook secret file {path} is empty", field="webhook_secret")
