"""The RingcastError tree. A class docstring is the error's default message."""

from __future__ import annotations


class RingcastError(Exception):
    """ringcast failed."""

    code = 1000  # stable non-zero API error number
    http_status = 500

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
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
