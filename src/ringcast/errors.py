"""The RingcastError tree. A class docstring is the error's default message.

Messages are for people: :func:`public_text` takes Python's object reprs and
memory addresses out of any text that reaches an answer, a record or a log
(``<_io.BytesIO object at 0x7f...>`` says nothing to a user).
"""

from __future__ import annotations

import re

_REPR = re.compile(r"<[\w.]+(?: object)? at 0x[0-9a-fA-F]+>")
_ADDRESS = re.compile(r"\s+at 0x[0-9a-fA-F]+")


def public_text(text: str) -> str:
    """`text` without object reprs and memory addresses."""
    if "0x" not in text:
        return text
    return _ADDRESS.sub("", _REPR.sub("the data", text))


class RingcastError(Exception):
    """ringcast failed."""

    code = 1000  # stable non-zero API error number
    http_status = 500

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        self.message = public_text(message or (self.__doc__ or "").strip())
        self.field = field
        super().__init__(self.message)


class ValidationFailed(RingcastError):
    """The request is not valid."""

    code = 1001
    http_status = 422


class NotFound(RingcastError):
    """Not found."""

    code = 1004
    http_status = 404


class ConfigError(RingcastError):
    """The configuration is not valid."""

    code = 1100


class StoreError(RingcastError):
    """The database failed."""

    code = 1200
    http_status = 503


class MediaError(RingcastError):
    """The prompt could not be prepared."""

    code = 1300
    http_status = 422


class SipError(RingcastError):
    """SIP signalling failed."""

    code = 1400
