"""Request models for the HTTP API (pydantic v2, strict: no silent coercion).

Cross-field rules that need the settings (`to` xor `recipients`, the
recipient limit, named trunks) are checked in :mod:`ringcast.api.routes`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NamedTuple, SupportsIndex, overload
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

from ringcast import numbers
from ringcast.domain import CPS_MAX, CPS_MIN, MAX_CALLS_LIMIT
from ringcast.inet import IPV6, ip_version
from ringcast.store.fair import PRIORITY_DEFAULT, PRIORITY_MAX, PRIORITY_MIN

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = _LABEL + r"(?:\." + _LABEL + r")*\.?"
_SIP_URI = re.compile(
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
_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]{1,64}$")
_DTMF = re.compile(r"^[0-9*#A-Da-d]{1,32}$")
_HHMM = re.compile(r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")
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
    m = _SIP_URI.match(value.strip())
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
    m = _SIP_URI.match(value)
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


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class PlayItem(Model):
    play: HttpUrl
    loop: Loop = 1


class SayItem(Model):
    say: Annotated[str, Field(min_length=1, max_length=10_000)]
    voice: Annotated[SafeStr, Field(min_length=1, max_length=64)] | None = None
    rate: Annotated[int, Field(ge=80, le=450)] | None = None  # words per minute
    loop: Loop = 1


class PauseItem(Model):
    pause: Annotated[float, Field(gt=0, le=300)]  # seconds
    loop: Loop = 1


class DtmfItem(Model):
    dtmf: Annotated[str, Field(pattern=_DTMF.pattern)]
    loop: Loop = 1


class GatherSpec(Model):
    digits: Annotated[int, Field(ge=1, le=32)] = 1
    timeout: Annotated[float, Field(gt=0, le=120)] = 5.0  # seconds
    optout: Annotated[str, Field(pattern=r"^[0-9*#]$")] | None = None
    # a digit pressed while the items before this gather play stops them and answers it
    barge_in: bool = True
    # what to play or do after the digits (or "default": any other, or none); then
    # the playlist goes on unless an item ends the call (issue 17)
    actions: dict[ActionKey, list[ActionItem]] | None = Field(default=None, max_length=20)


class GatherItem(Model):
    gather: GatherSpec


class TransferItem(Model):
    """Connect the callee to an agent (issue 17): bridged (ringcast dials the agent
    and relays the audio) or a blind REFER (RFC 3515). Only inside gather.actions."""

    transfer: ToStr  # a SIP URI, or a number dialled through the request's trunk
    timeout: Annotated[float, Field(gt=0, le=120)] = 20.0  # seconds the agent may ring
    mode: Literal["bridge", "refer"] = "bridge"
    from_: FromStr | None = Field(default=None, alias="from")
    hold: list[PlaylistItem] | None = Field(default=None, min_length=1, max_length=20)
    record: bool = False  # record the bridged call, both legs mixed (mode "bridge" only)


class HangupItem(Model):
    hangup: Literal[True]


class RecordSpec(Model):
    """Record what the callee says (DESIGN "Listening to the callee")."""

    max: Annotated[float, Field(gt=0, le=3600)] = 60.0  # seconds of audio at most
    silence: Annotated[float, Field(ge=0, le=60)] = 5.0  # seconds of silence end it (0: never)
    finish_on: Annotated[str, Field(pattern=r"^[0-9*#A-D]{0,16}$")] = "#"  # any of these ends it
    beep: bool = True  # a short tone before recording starts


class RecordItem(Model):
    record: Literal[True] | RecordSpec


PLAYLIST_KINDS = ("play", "say", "pause", "dtmf", "gather", "record")
ACTION_KINDS = (*PLAYLIST_KINDS, "transfer", "hangup")
ActionKey = Annotated[str, Field(pattern=r"^([0-9*#A-D]{1,32}|default)$")]
_ITEM_MODELS: dict[str, type[Model]] = {
    "play": PlayItem,
    "say": SayItem,
    "pause": PauseItem,
    "dtmf": DtmfItem,
    "gather": GatherItem,
    "record": RecordItem,
    "transfer": TransferItem,
    "hangup": HangupItem,
}
_KIND_OF_MODEL = {model: kind for kind, model in _ITEM_MODELS.items()}
# the option keys of each kind of item (a transfer's "record", a play's "loop")
_OPTIONS = {
    kind: frozenset(
        name
        for field, info in model.model_fields.items()
        for name in (field, info.alias)
        if name and name != kind
    )
    for kind, model in _ITEM_MODELS.items()
}


def _item_kind(item: Any, kinds: tuple[str, ...]) -> str | None:
    """The one of `kinds` an item is: a model by its class; a JSON object by the
    kind keys it holds, a key that is an option of another of them not counting
    (``{"transfer": ..., "record": true}`` is a transfer)."""
    if isinstance(item, BaseModel):
        kind = _KIND_OF_MODEL.get(type(item))  # type: ignore[arg-type]
        return kind if kind in kinds else None
    if isinstance(item, dict):
        present = [k for k in kinds if k in item]
        heads = [k for k in present if not any(k in _OPTIONS[o] for o in present if o != k)]
        return heads[0] if len(heads) == 1 else None
    return None


def _playlist_kind(item: Any) -> str | None:
    return _item_kind(item, PLAYLIST_KINDS)


PlaylistItem = Annotated[
    Annotated[PlayItem, Tag("play")]
    | Annotated[SayItem, Tag("say")]
    | Annotated[PauseItem, Tag("pause")]
    | Annotated[DtmfItem, Tag("dtmf")]
    | Annotated[GatherItem, Tag("gather")]
    | Annotated[RecordItem, Tag("record")],
    Discriminator(
        _playlist_kind,
        custom_error_type="playlist_item",
        custom_error_message="a playlist item is an object with exactly one of "
        "play, say, pause, dtmf, gather, record",
    ),
]


def _action_kind(item: Any) -> str | None:
    return _item_kind(item, ACTION_KINDS)


ActionItem = Annotated[
    Annotated[PlayItem, Tag("play")]
    | Annotated[SayItem, Tag("say")]
    | Annotated[PauseItem, Tag("pause")]
    | Annotated[DtmfItem, Tag("dtmf")]
    | Annotated[GatherItem, Tag("gather")]
    | Annotated[RecordItem, Tag("record")]
    | Annotated[TransferItem, Tag("transfer")]
    | Annotated[HangupItem, Tag("hangup")],
    Discriminator(
        _action_kind,
        custom_error_type="action_item",
        custom_error_message="an action item is an object with exactly one of "
        "play, say, pause, dtmf, gather, record, transfer, hangup",
    ),
]
GatherSpec.model_rebuild()
TransferItem.model_rebuild()


def nested_items(items: list[Any], path: str) -> list[tuple[str, Any]]:
    """Every item of a playlist with its field path, the items inside gather
    actions and transfer hold playlists too (for checks that look at every URL)."""
    out: list[tuple[str, Any]] = []
    for i, item in enumerate(items):
        here = f"{path}[{i}]"
        out.append((here, item))
        gather = getattr(item, "gather", None)
        for key, actions in ((gather.actions if gather is not None else None) or {}).items():
            out.extend(nested_items(actions, f"{here}.gather.actions.{key}"))
        hold = getattr(item, "hold", None)
        if hold:
            out.extend(nested_items(hold, f"{here}.hold"))
    return out


class Recipient(Model):
    to: ToStr
    from_: FromStr | None = Field(default=None, alias="from")
    variables: dict[VarName, VarValue] | None = Field(default=None, max_length=100)
    timezone: TimeZone | None = None


def _default_retry_on() -> list[RetryOn]:
    return ["busy", "no-answer"]


class Retry(Model):
    attempts: Annotated[int, Field(ge=0, le=10)] = 0  # extra attempts
    delay: Annotated[float, Field(ge=0, le=86400)] = 60.0  # seconds
    on: list[RetryOn] = Field(default_factory=_default_retry_on, max_length=3)


class Window(Model):
    start: Annotated[str, Field(pattern=_HHMM.pattern)]
    end: Annotated[str, Field(pattern=_HHMM.pattern)]
    days: list[Day] = Field(default_factory=lambda: list(DAYS), min_length=1, max_length=7)

    @field_validator("days")
    @classmethod
    def _unique_days(cls, days: list[str]) -> list[str]:
        if len(set(days)) != len(days):
            raise ValueError("days must not repeat")
        return days


NOT_BEFORE_YEARS = (1900, 9000)


class Schedule(Model):
    not_before: Annotated[str, Field(max_length=64)] | None = None  # ISO 8601
    window: Window | None = None
    timezone: TimeZone | None = None

    @field_validator("not_before")
    @classmethod
    def _iso(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError("must be an ISO 8601 date-time") from None
            # far from the calendar's ends, where time zone arithmetic overflows
            first, last = NOT_BEFORE_YEARS
            if not first <= moment.year <= last:
                raise ValueError(f"must be a date-time in the years {first} to {last}")
        return value

    def not_before_utc(self, recipient_zones: Iterable[str | None] = ()) -> datetime | None:
        """`not_before` in UTC, the earliest a call of the request may be claimed.

        A time without offset is read in `timezone` (else UTC), or in a
        recipient's own zone, which overrides it: then the earliest of those
        instants. The dialer holds each call back to its own (policy.py)."""
        if self.not_before is None:
            return None
        moment = datetime.fromisoformat(self.not_before)
        if moment.tzinfo is not None:
            return moment.astimezone(UTC)
        zones = {self.timezone or "UTC", *(z for z in recipient_zones if z)}
        return min(moment.replace(tzinfo=ZoneInfo(z)).astimezone(UTC) for z in zones)


def _check_headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not _TOKEN.match(name):
            raise ValueError(f"header name {name[:64]!r} is not a valid token")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"header {name} is set by ringcast and cannot be overridden")
        no_control(value)
        if len(value) > 1024:
            raise ValueError(f"header {name} is longer than 1024 characters")
    return headers


class Sip(Model):
    proxy: SipUri | None = None
    username: Annotated[SafeStr, Field(min_length=1, max_length=256)] | None = None
    password: Annotated[SafeStr, Field(max_length=256)] | None = None
    transport: Literal["udp", "tcp", "tls"] | None = None
    codecs: list[Literal["PCMU", "PCMA"]] | None = Field(default=None, min_length=1, max_length=2)
    headers: Annotated[dict[str, str], AfterValidator(_check_headers)] | None = Field(
        default=None, max_length=32
    )
    trunk: Annotated[SafeStr, Field(min_length=1, max_length=64)] | None = None
    # SDES-SRTP (RFC 4568 / RFC 3711): "optional" offers RTP/AVP with a=crypto and
    # falls back to plain RTP; "required" offers RTP/SAVP and fails a plain answer.
    # A trunk's stricter setting wins.
    srtp: Literal["off", "optional", "required"] | None = None

    @field_validator("codecs")
    @classmethod
    def _unique_codecs(cls, codecs: list[str] | None) -> list[str] | None:
        if codecs is not None and len(set(codecs)) != len(codecs):
            raise ValueError("codecs must not repeat")
        return codecs


class MachineDetection(Model):
    """Answering-machine detection on the callee's first seconds (README "Machine detection")."""

    mode: Literal["detect", "drop", "hangup"] = "detect"
    timeout: Annotated[float, Field(ge=2, le=30)] = 6.0  # seconds to decide, from the answer


class PlayRequest(Model):
    """POST /voice/call/play."""

    to: ToStr | None = None
    recipients: list[Recipient] | None = None
    # the country national numbers of `to` are read in (ISO 3166 alpha-2, e.g. "US")
    country: Country | None = None
    from_: FromStr | None = Field(default=None, alias="from")
    playlist: list[PlaylistItem] = Field(min_length=1, max_length=100)
    ring_timeout: Annotated[int, Field(ge=1, le=300)] = 30  # seconds
    max_duration: Annotated[int, Field(ge=1, le=86400)] = 3600  # seconds
    retry: Retry = Field(default_factory=Retry)
    max_concurrent: Annotated[int, Field(ge=1, le=MAX_CALLS_LIMIT)] | None = None
    cps: Annotated[float, Field(ge=CPS_MIN, le=CPS_MAX)] | None = None  # calls per second
    schedule: Schedule | None = None
    sip: Sip | None = None
    callback_url: HttpUrl | None = None
    # weight of this request's share of the channels against other requests (store/fair.py)
    priority: Annotated[int, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX)] = PRIORITY_DEFAULT
    machine_detection: MachineDetection | None = None
    voicemail: list[PlaylistItem] | None = Field(default=None, min_length=1, max_length=100)


OutcomeName = Literal[
    "answered", "busy", "no-answer", "declined", "rejected", "failed", "canceled", "suppressed"
]


class ReplayRequest(PlayRequest):
    """POST /voice/call/{request_id}/replay: a play request without `to` /
    `recipients` (the earlier request's recipients are called again), and
    optionally `only` the recipients whose last outcome is one of these."""

    only: list[OutcomeName] | None = Field(default=None, min_length=1, max_length=8)


# --- the lean path for long recipient lists -----------------------------------------------


class RecipientIn(NamedTuple):
    """A validated recipient: the values a :class:`Recipient` model would hold."""

    to: str
    from_: str | None = None
    variables: dict[str, str] | None = None
    timezone: str | None = None


@dataclass(frozen=True, slots=True)
class PlayInput:
    """A validated POST /voice/call/play body. `payload.recipients` is always None:
    the recipients are in `recipients` (None when the body gave `to`)."""

    payload: PlayRequest
    recipients: list[RecipientIn] | None


_RECIPIENT_KEYS = frozenset(("to", "from", "variables", "timezone"))
_MAX_URI = 512  # characters of `to` / `from` (SipUri, FromStr)
_MAX_VARIABLES = 100  # entries of `variables`
_MAX_VAR_NAME = 64
_MAX_VAR_VALUE = 1024
_MAX_ZONE = 64


def _timezone_ok(value: str) -> bool:
    try:
        check_timezone(value)
    except ValueError:
        return False
    return True


def _from_ok(value: str) -> bool:
    try:
        check_from(value)
    except ValueError:
        return False
    return True


def _lean_recipient(item: dict[str, Any], to: str, zones: dict[str, bool]) -> RecipientIn | None:
    """`item` (whose `to` is already checked) when every other field passes
    Recipient's rules; None when the model must decide (including every
    non-ASCII string: pydantic refuses lone surrogates, which plain code would let by)."""
    if not item.keys() <= _RECIPIENT_KEYS:
        return None
    sender = item.get("from")
    if sender is not None and (
        type(sender) is not str
        or len(sender) > _MAX_URI
        or not sender.isascii()
        or not _from_ok(sender)
    ):
        return None
    variables = item.get("variables")
    if variables is not None:
        if type(variables) is not dict or len(variables) > _MAX_VARIABLES:
            return None
        for name, value in variables.items():
            if (
                type(name) is not str
                or not 1 <= len(name) <= _MAX_VAR_NAME
                or not name.isascii()
                or type(value) is not str
                or len(value) > _MAX_VAR_VALUE
                or not value.isascii()
            ):
                return None
    zone = item.get("timezone")
    if zone is not None:
        if type(zone) is not str or len(zone) > _MAX_ZONE or not zone.isascii():
            return None
        known = zones.get(zone)
        if known is None:
            known = zones[zone] = _timezone_ok(zone)
        if not known:
            return None
    return RecipientIn(to, sender, variables, zone)


# A line holding one SIP URI as _SIP_URI matches it (its groups made plain), with a
# port only in 1..65535 written without leading zeros: a subset of what
# sip_uri_ok accepts. The scheme is spelled in both cases instead of IGNORECASE
# (the same on ASCII text, every class already has both cases; ~30 % faster).
_PORT_1_65535 = (
    r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
)
_SIP_URI_LINE = re.compile(
    "^"
    + re.sub(r"\(\?P<\w+>", "(?:", _SIP_URI.pattern[1:-1])
    .replace("(?:sips?):", "[sS][iI][pP][sS]?:")
    .replace(r"(?::(?:\d{1,5}))?", f"(?::{_PORT_1_65535})?")
    + "$",
    re.MULTILINE,
)
_CONTROL_BUT_LF = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def plain_recipient_uris(items: list[Any]) -> list[str] | None:
    """The `to` of every item when each item is exactly ``{"to": <str>}`` and every
    `to` certainly passes sip_uri_ok (ASCII, at most 512 characters); else None
    (then each item is checked on its own). The URIs are matched line by line in
    their newline-joined text, in one call instead of one Python call each: for
    the common 100k-recipient list that was most of the validation's time."""
    tos: list[Any] = [
        item.get("to") if type(item) is dict and len(item) == 1 else None for item in items
    ]
    if not tos or set(map(type, tos)) != {str}:
        return None
    return tos if checked_uris(tos) else None


def checked_uris(tos: list[str]) -> bool:
    """Whether every string of `tos` (a non-empty list) certainly passes sip_uri_ok
    (see :func:`plain_recipient_uris`)."""
    if not tos:
        return False
    text = "\n".join(tos)
    return not (
        not text.isascii()
        or max(map(len, tos)) > _MAX_URI
        or text.count("\n") != len(tos) - 1  # a `to` holding a line feed
        or _CONTROL_BUT_LF.search(text) is not None
        or sum(1 for _ in _SIP_URI_LINE.finditer(text)) != len(tos)  # a line that is no URI
    )


class BareRecipients(list[RecipientIn]):
    """Recipients that are only a `to` each, kept as the list of their URIs: the
    RecipientIn of each is made when read (1M tuples would cost ~72 MB)."""

    def __init__(self, tos: list[str]) -> None:
        super().__init__()
        self.tos = tos

    def __len__(self) -> int:
        return len(self.tos)

    def __bool__(self) -> bool:
        return bool(self.tos)

    def __iter__(self) -> Iterator[RecipientIn]:
        return map(RecipientIn, self.tos)

    @overload
    def __getitem__(self, index: SupportsIndex) -> RecipientIn: ...
    @overload
    def __getitem__(self, index: slice) -> list[RecipientIn]: ...
    def __getitem__(self, index: SupportsIndex | slice) -> RecipientIn | list[RecipientIn]:
        if isinstance(index, slice):
            return BareRecipients(self.tos[index])
        return RecipientIn(self.tos[index])

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, list)
            and len(other) == len(self)
            and all(a == b for a, b in zip(self, other, strict=False))
        )

    __hash__ = None


class _BareRecipient(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A recipient that is only a `to` (the broadcast case): one slot, untracked by
    the garbage collector (24 bytes; 1M of them live while the body decodes)."""

    to: str


class _LeanRecipient(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One recipient as msgspec decodes it straight from the body's bytes: four
    slots instead of a dict (a 1M-recipient body then fits in ~1/3 the memory).
    Not tracked by the garbage collector: its fields are strings, a dict of
    strings or None, which cannot form a cycle."""

    to: str
    from_: str | None = msgspec.field(default=None, name="from")
    variables: dict[str, str] | None = None
    timezone: str | None = None


_decode_top = msgspec.json.Decoder(dict[str, msgspec.Raw])
_decode_recipients = msgspec.json.Decoder(list[_LeanRecipient])
_decode_bare = msgspec.json.Decoder(list[_BareRecipient])


def decode_play_lean(raw: bytes) -> PlayInput | None:
    """A valid body with a `recipients` list, decoded without one Python dict per
    recipient: msgspec splits the top level into raw JSON slices, decodes the
    recipients into small structs (types checked while parsing), and the rest
    of the body is validated by the model as usual. None whenever anything is
    off (the caller then parses with `json` and validates as before, so every
    error message stays exactly pydantic's)."""
    try:
        top = _decode_top.decode(raw)
        listed = top.pop("recipients", None)
        if listed is None:
            return None
        rest = {key: msgspec.json.decode(value) for key, value in top.items()}
        del top
        try:  # only `to`s: a third of the memory of the four-field structs
            tos: list[str] | None = [r.to for r in _decode_bare.decode(listed)]
            items: list[_LeanRecipient] = []
        except msgspec.ValidationError:
            tos = None
            items = _decode_recipients.decode(listed)
        del listed
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None  # RecursionError: nested too deep; the caller's json refuses it as 400
    try:
        payload = PlayRequest.model_validate(rest)
    except ValidationError:
        return None
    if tos is None and all(
        r.from_ is None and r.variables is None and r.timezone is None for r in items
    ):
        tos = [r.to for r in items]
        del items
    if tos is not None:
        if checked_uris(tos) or (
            all(len(t) <= _MAX_URI for t in tos) and all(map(to_ok, tos))  # numbers among them
        ):
            return PlayInput(payload, BareRecipients(tos))
        return None
    as_dicts: list[Any] = [
        {
            "to": r.to,
            **({} if r.from_ is None else {"from": r.from_}),
            **({} if r.variables is None else {"variables": r.variables}),
            **({} if r.timezone is None else {"timezone": r.timezone}),
        }
        for r in items
    ]
    recipients = lean_recipients(as_dicts)
    return None if recipients is None else PlayInput(payload, recipients)


def lean_recipients(items: list[Any]) -> list[RecipientIn] | None:
    """Check a `recipients` list with plain code and precompiled patterns instead of
    one pydantic model per recipient (100k models cost seconds). A recipient the
    plain checks cannot vouch for is validated by the :class:`Recipient` model;
    None when any recipient is invalid (the caller then lets the whole model
    report the errors, so messages and fields stay exactly pydantic's)."""
    plain = plain_recipient_uris(items)
    if plain is not None:
        return [RecipientIn(to) for to in plain]
    out: list[RecipientIn] = []
    append = out.append
    zones: dict[str, bool] = {}
    uri_ok = to_ok
    for item in items:
        if type(item) is dict:
            to = item.get("to")
            if type(to) is str and len(to) <= _MAX_URI and to.isascii() and uri_ok(to):
                if len(item) == 1:
                    append(RecipientIn(to))
                    continue
                lean = _lean_recipient(item, to, zones)
                if lean is not None:
                    append(lean)
                    continue
        try:
            model = Recipient.model_validate(item)
        except ValidationError:
            return None
        append(RecipientIn(model.to, model.from_, model.variables, model.timezone))
    return out


def validate_play(data: dict[str, Any]) -> PlayInput:
    """`PlayRequest.model_validate(data)`: the same verdict, and on failure the same
    ValidationError, but a valid `recipients` list is checked by :func:`lean_recipients`
    (the rest of the body by the model)."""
    items = data.get("recipients")
    if type(items) is list:
        try:
            payload = PlayRequest.model_validate(
                {k: v for k, v in data.items() if k != "recipients"}
            )
        except ValidationError:
            payload = None  # the whole model reports every error, in its order
        if payload is not None:
            recipients = lean_recipients(items)
            if recipients is not None:
                return PlayInput(payload, recipients)
    payload = PlayRequest.model_validate(data)
    if payload.recipients is None:
        return PlayInput(payload, None)
    return PlayInput(
        payload.model_copy(update={"recipients": None}),
        [RecipientIn(r.to, r.from_, r.variables, r.timezone) for r in payload.recipients],
    )
