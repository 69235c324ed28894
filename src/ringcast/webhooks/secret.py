"""The install secret: what signs the webhooks of requests made without an API key
(Settings.webhook_secret, else a file beside the SQLite database)."""

from __future__ import annotations

from ringcast.errors import ConfigError
from ringcast.store.secret_file import beside_sqlite, create_once
from ringcast.webhooks.sign import decode_secret, generate_secret

ENV_SECRET = "RINGCAST_WEBHOOK_SECRET"
SECRET_FILE_SUFFIX = ".webhook-secret"  # next to the SQLite file: ringcast.db.webhook-secret
FIELD = "webhook_secret"


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
            raise ConfigError(f"{ENV_SECRET}: {exc}", field=FIELD) from None
        return given
    path = beside_sqlite(db_url, SECRET_FILE_SUFFIX)
    if path is None:
        return None
    return create_once(path, generate_secret, _checked, what="webhook secret file", field=FIELD)


def _checked(text: str) -> str:
    decode_secret(text)  # ValueError when malformed
    return text
