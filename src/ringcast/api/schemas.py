"""Request models for the HTTP API (pydantic v2, strict: no silent coercion).

Cross-field rules that need the settings (`to` xor `recipients`, the
recipient limit, named trunks) are checked in :mod:`ringcast.api.routes`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
)

from ringcast.api.fields import (
    DAYS,
    RESERVED_HEADERS,
    Country,
    Day,
    FromStr,
    HttpUrl,
    Loop,
    RetryOn,
    SafeStr,
    SipUri,
    TimeZone,
    ToStr,
    VarName,
    VarValue,
    no_control,
)
from ringcast.domain import CPS_MAX, CPS_MIN, MAX_CALLS_LIMIT
from ringcast.store.fair import PRIORITY_DEFAULT, PRIORITY_MAX, PRIORITY_MIN

_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]{1,64}$")
_DTMF = re.compile(r"^[0-9*#A-Da-d]{1,32}$")
_HHMM = re.compile(r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")


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
