"""The lean path for long recipient lists: a POST /voice/call/play body whose
recipients are checked without a pydantic model each (msgspec decoding, one regex
pass over the URIs), with the same verdict as :class:`~ringcast.api.schemas.PlayRequest`."""

from __future__ import annotations

import operator
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, SupportsIndex, overload

import msgspec
from pydantic import (
    ValidationError,
)

from ringcast.api.fields import SIP_URI, check_from, check_timezone, to_ok
from ringcast.api.packed_uris import PackedUris, bare_uris
from ringcast.api.schemas import PlayRequest, Recipient


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


# A line holding one SIP URI as SIP_URI matches it (its groups made plain), with a
# port only in 1..65535 written without leading zeros: a subset of what
# sip_uri_ok accepts. The scheme is spelled in both cases instead of IGNORECASE
# (the same on ASCII text, every class already has both cases; ~30 % faster).
_PORT_1_65535 = (
    r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
)
SIP_URI_LINE = re.compile(
    "^"
    + re.sub(r"\(\?P<\w+>", "(?:", SIP_URI.pattern[1:-1])
    .replace("(?:sips?):", "[sS][iI][pP][sS]?:")
    .replace(r"(?::(?:\d{1,5}))?", f"(?::{_PORT_1_65535})?")
    + "$",
    re.MULTILINE,
)
_CONTROL_BUT_LF = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
# The same, for a whole text of such lines: no line feed can be part of a URI, so
# the possessive repeat takes exactly one line each time (no match object per line).
_URI = SIP_URI_LINE.pattern[1:-1]
SIP_URI_LINES = re.compile(f"(?:{_URI}\n)*+{_URI}")


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


def checked_uris(tos: Sequence[str]) -> bool:
    """Whether every string of `tos` (a non-empty list) certainly passes sip_uri_ok
    (see :func:`plain_recipient_uris`)."""
    if not tos:
        return False
    if isinstance(tos, PackedUris):  # the text is there: no second copy
        text, longest = tos.lines(), tos.longest()
    else:
        text, longest = "\n".join(tos), max(map(len, tos))
    return not (
        not text.isascii()
        or longest > _MAX_URI
        or text.count("\n") != len(tos) - 1  # a `to` holding a line feed
        or _CONTROL_BUT_LF.search(text) is not None
        or SIP_URI_LINES.fullmatch(text) is None  # a line that is no URI
    )


class BareRecipients(list[RecipientIn]):
    """Recipients that are only a `to` each, kept as their URIs (a PackedUris when
    read straight from the body): the RecipientIn of each is made when read (1M
    tuples would cost ~72 MB)."""

    def __init__(self, tos: Sequence[str]) -> None:
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
        return RecipientIn(self.tos[operator.index(index)])

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
        # only `to`s, read from the bytes: no object per recipient
        tos: Sequence[str] | None = bare_uris(listed)
        items: list[_LeanRecipient] = []
        if tos is None:
            try:  # only `to`s: a third of the memory of the four-field structs
                tos = [r.to for r in _decode_bare.decode(listed)]
            except msgspec.ValidationError:
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
