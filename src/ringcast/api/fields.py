"""Checks of single request fields for the HTTP API: SIP URIs, From, URLs, time
zones, reserved headers. The request models (:mod:`ringcast.api.schemas`) and the
lean recipient path (:mod:`ringcast.api.recipients`) share them."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    Field,
)

from ringcast import numbers
from ringcast.inet import IPV6, ip_version

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = _LABEL + r"(?:\." + _LABEL + r")*\.?"
SIP_URI = re.compile(
    r"^(?P<scheme>sips?):"
    r"(?:(?P<user>[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+)(?::[^@\s]*)?@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|" + _HOSTNAME + r")"
    r"(?::(?P<port>\d{1,5}))?"
    r"(?P<params>(?:;[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]+(?:=[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]*)?)*)"
    r"(?:\?(?P<headers>[^\s<>\"]*))?$",
    re.IGNORECASE,
)
_USER_PART = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]{1,128}$")
_NAME_ADDR = re.compile(r'^(?:"(?P<quoted>[^"\\]*)"|(?P<token>[^<"]*?))\s*<(?P<uri>[^<>]+)>$')
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
RetryOn = Literal["busy", "no-answer", "failed"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Headers ringcast writes itself; a request may not replace them.
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Max-Forwards",
        "Content-Length",
        "Content-Type",
        "Authorization",
        "Proxy-Authorization",
        "Route",
        "Record-Route",
        "Allow",
        "Supported",
        "Require",
        "Expires",
    )
)


def no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (CR, LF, ...)")
    return value


def check_sip_uri(value: str) -> str:
    """A `sip:`/`sips:` URI with a host (and a valid port when given)."""
    no_control(value)
    m = SIP_URI.match(value.strip())
    if m is None or value != value.strip():
        raise ValueError("must be a SIP URI like sip:user@host[:port]")
    port = m.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValueError("port must be 1..65535")
    if not _host_ok(m.group("host")):
        raise ValueError("a host in brackets must be an IPv6 address, like sip:a@[2001:db8::10]")
    return value


def _host_ok(host: str) -> bool:
    """A bracketed host is an IPv6 address (RFC 3261 §25 ``IPv6reference``)."""
    return not host.startswith("[") or ip_version(host) == IPV6


def sip_uri_ok(value: str) -> bool:
    """:func:`check_sip_uri`'s verdict without building an error: the per-recipient
    check of the lean recipients path (tests hold the two equal)."""
    if _CONTROL.search(value) is not None or value != value.strip():
        return False
    m = SIP_URI.match(value)
    if m is None:
        return False
    port = m.group("port")
    return (port is None or 1 <= int(port) <= 65535) and _host_ok(m.group("host"))


def check_to(value: str) -> str:
    """A recipient: a SIP URI, a ``tel:`` URI or a phone number (DESIGN "Phone numbers
    and carriers"). A number's syntax is checked here; whether it is a number of
    its country (which may come from the trunk) is checked once, with
    `phonenumbers`, at intake (:func:`ringcast.api.intake.check_numbers`)."""
    if numbers.is_sip_uri(value):
        return check_sip_uri(value)
    no_control(value)
    if not numbers.looks_like_number(value):
        raise ValueError(
            "must be a SIP URI like sip:user@host[:port], a tel: URI or a phone number "
            "like +15550100001"
        )
    return value


def to_ok(value: str) -> bool:
    """:func:`check_to`'s verdict without building an error (the lean recipients path)."""
    if numbers.is_sip_uri(value):
        return sip_uri_ok(value)
    return _CONTROL.search(value) is None and numbers.looks_like_number(value)


def check_country(value: str) -> str:
    return numbers.check_country(value)


def check_from(value: str) -> str:
    """A user part (`me`), a SIP URI, or `"Name" <sip:uri>`."""
    no_control(value)
    if not value or len(value) > 512:
        raise ValueError("must be 1..512 characters")
    m = _NAME_ADDR.match(value)
    if m is not None:
        check_sip_uri(m.group("uri"))
        return value
    if value.lower().startswith(("sip:", "sips:")):
        return check_sip_uri(value)
    if not _USER_PART.match(value):
        raise ValueError('must be a SIP user part ("me"), a SIP URI, or "Name" <sip:uri>')
    return value


def check_http_url(value: str) -> str:
    no_control(value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
        raise ValueError("must be an http:// or https:// URL")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return value


def private_host(url: str) -> bool:
    """True when the URL's host is a literal private/loopback/link-local address."""
    host = urlsplit(url).hostname or ""
    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not ip.is_global


def check_timezone(value: str) -> str:
    no_control(value)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be an IANA time zone name like Europe/Riga") from None
    return value


SipUri = Annotated[str, Field(max_length=512), AfterValidator(check_sip_uri)]
ToStr = Annotated[str, Field(max_length=512), AfterValidator(check_to)]
Country = Annotated[str, Field(min_length=2, max_length=2), AfterValidator(check_country)]
FromStr = Annotated[str, Field(max_length=512), AfterValidator(check_from)]
HttpUrl = Annotated[str, Field(max_length=2048), AfterValidator(check_http_url)]
TimeZone = Annotated[str, Field(max_length=64), AfterValidator(check_timezone)]
SafeStr = Annotated[str, AfterValidator(no_control)]
Loop = Annotated[int, Field(ge=1, le=1000)]
VarName = Annotated[str, Field(min_length=1, max_length=64)]
VarValue = Annotated[str, Field(max_length=1024)]
