"""The carrier keys of a ``[trunks.NAME]`` table: numbers and registration
(DESIGN.md "Phone numbers and carriers"; docs/guide.md "Dialling numbers through a trunk").

Numbers: ``country`` (ISO 3166 alpha-2, reads national numbers), ``prefix``
and ``strip`` (Request-URI user part rules), ``user_phone`` (``;user=phone``),
``asserted_identity`` (a P-Asserted-Identity with an E.164 caller ID).
Registration (RFC 3261 §10): ``register`` (keep a binding), ``registrar``
(default: the proxy), ``register_expires`` (seconds asked for),
``register_retry`` (first back-off after a failure, seconds; it doubles up to
``REGISTER_RETRY_MAX``), ``register_wait`` (seconds a call waits for a binding
that is down before it fails; 0: fail at once).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ringcast.errors import ConfigError
from ringcast.numbers import check_country

CARRIER_KEYS = frozenset(
    {
        "country",
        "prefix",
        "strip",
        "user_phone",
        "asserted_identity",
        "register",
        "registrar",
        "register_expires",
        "register_retry",
        "register_wait",
    }
)
REGISTER_EXPIRES = 3600  # seconds asked for by default (RFC 3261 §10.2.1.1)
REGISTER_RETRY = 30.0  # seconds before the first retry after a failure
REGISTER_RETRY_MAX = 1800.0  # seconds: the back-off's ceiling (RFC 5626 §4.5 max-time)
REGISTER_WAIT = 30.0  # seconds a call waits for a binding that is down
_DIAL_CHARS = frozenset("0123456789+*#")


def _fail(where: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"{where}.{key} {message}", field=f"{where}.{key}")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_carrier_keys(where: str, table: Mapping[str, Any]) -> None:
    """Raise ConfigError naming `where.key` for a bad carrier key of a trunk table."""
    if "country" in table:
        try:
            check_country(str(table["country"]))
        except ValueError:
            raise _fail(where, "country", "must be a country code like US or GB") from None
    for key in ("prefix", "strip"):
        value = table.get(key, "")
        if not isinstance(value, str) or not set(value) <= _DIAL_CHARS or len(value) > 16:
            raise _fail(where, key, "must be up to 16 of 0-9 + * #")
    for key in ("user_phone", "asserted_identity", "register"):
        if key in table and not isinstance(table[key], bool):
            raise _fail(where, key, "must be true or false")
    if "registrar" in table and (
        not isinstance(table["registrar"], str)
        or not table["registrar"].lower().startswith(("sip:", "sips:"))
    ):
        raise _fail(where, "registrar", "must be a sip: URI")
    expires = table.get("register_expires", REGISTER_EXPIRES)
    if isinstance(expires, bool) or not isinstance(expires, int) or not 1 <= expires <= 86400:
        raise _fail(where, "register_expires", "must be whole seconds from 1 to 86400")
    retry = table.get("register_retry", REGISTER_RETRY)
    if not _number(retry) or not 0.1 <= retry <= REGISTER_RETRY_MAX:
        raise _fail(where, "register_retry", f"must be seconds from 0.1 to {REGISTER_RETRY_MAX:g}")
    wait = table.get("register_wait", REGISTER_WAIT)
    if not _number(wait) or not 0 <= wait <= 3600:
        raise _fail(where, "register_wait", "must be seconds from 0 to 3600")
    if table.get("register") and not table.get("username"):
        raise _fail(where, "username", "is required with register = true")


@dataclass(frozen=True)
class RegisterOptions:
    """A registering trunk's settings (the password stays in the trunk table)."""

    trunk: str
    registrar: str
    username: str
    expires: int = REGISTER_EXPIRES
    retry: float = REGISTER_RETRY
    wait: float = REGISTER_WAIT
    transport: str | None = None

    @classmethod
    def of(cls, name: str, table: Mapping[str, Any]) -> RegisterOptions:
        return cls(
            trunk=name,
            registrar=str(table.get("registrar") or table["proxy"]),
            username=str(table["username"]),
            expires=int(table.get("register_expires", REGISTER_EXPIRES)),
            retry=float(table.get("register_retry", REGISTER_RETRY)),
            wait=float(table.get("register_wait", REGISTER_WAIT)),
            transport=table.get("transport"),
        )


def registering(trunks: Mapping[str, Mapping[str, Any]]) -> list[RegisterOptions]:
    """The trunks with ``register = true``, by name."""
    return [RegisterOptions.of(n, t) for n, t in sorted(trunks.items()) if t.get("register")]
