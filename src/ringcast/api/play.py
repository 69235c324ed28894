"""POST /voice/call/play and POST /voice/call/{request_id}/replay: a request's body
checked, normalized and stored with its calls."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring_ascii
from typing import Annotated, Any, TypeVar, overload
from urllib.parse import urlsplit

from fastapi import APIRouter, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError as PydanticValidationError

from ringcast import sealing
from ringcast.api import intake
from ringcast.api.auth import api_key_of, check_destinations
from ringcast.api.common import json_response, sealer_of, settings_of, store_of, tenant_of
from ringcast.api.errors import ID_MAX, BadRequest, envelope
from ringcast.api.fields import check_sip_uri, no_control
from ringcast.api.recipients import (
    BareRecipients,
    PlayInput,
    RecipientIn,
    decode_play_lean,
    validate_play,
)
from ringcast.api.schemas import ACTION_KINDS, PlayRequest, ReplayRequest, nested_items
from ringcast.config import Settings
from ringcast.errors import NotFound, ValidationFailed
from ringcast.netguard import NetPolicy
from ringcast.sealing import Sealer
from ringcast.store import requests as q
from ringcast.store.keys import ApiKey

logger = logging.getLogger(__name__)

router = APIRouter()

DEFAULT_FROM = "anonymous"


# --- POST /voice/call/play -------------------------------------------------------------


def _resolve_sip(
    payload: PlayRequest, settings: Settings, sealer: Sealer | None
) -> dict[str, Any] | None:
    """The request's "sip" as stored: a named trunk is checked here but stored by name
    (the dialer reads its proxy and credentials from the config when it dials, so a
    rotated password reaches queued calls); an inline password is sealed."""
    if payload.sip is None:
        return None
    given = payload.sip.model_dump(exclude_none=True)
    name = given.get("trunk")
    if name is not None:
        trunk = settings.trunks.get(name)
        if trunk is None:
            raise ValidationFailed(f"unknown trunk {name!r}", field="sip.trunk")
        try:
            check_sip_uri(str(trunk.get("proxy", "")))
        except ValueError as exc:
            raise ValidationFailed(f"trunk {name!r}: proxy {exc}", field="sip.trunk") from None
    try:
        return sealing.seal_sip(given, sealer)
    except ValueError as exc:
        raise ValidationFailed(str(exc), field="sip.password") from None


def _transfer_fields(payload: Any) -> list[tuple[str, str]]:
    """(field, target) of every transfer in the playlist's gather actions: numbers need
    a trunk as recipients do, and SIP URIs are held to the key's destinations."""
    return [
        (f"{where}.transfer", str(item.transfer))
        for where, item in nested_items(list(payload.playlist or []), "playlist")
        if getattr(item, "transfer", None)
    ]


async def _check_urls(payload: PlayRequest, settings: Settings) -> None:
    """SSRF guard: media and callback URLs must not resolve to non-public addresses."""
    policy = NetPolicy.from_settings(settings)
    if policy.allow_private:
        return
    urls: dict[str, tuple[str, str]] = {}  # one check per host and port, the first field
    for name, items in (("playlist", payload.playlist), ("voicemail", payload.voicemail or [])):
        for where, item in nested_items(list(items), name):
            url = getattr(item, "play", None)
            if isinstance(url, str):
                urls.setdefault(urlsplit(url).netloc.lower(), (url, f"{where}.play"))
    if payload.callback_url is not None:
        url = payload.callback_url
        urls.setdefault(urlsplit(url).netloc.lower(), (url, "callback_url"))
    # resolved concurrently; the first refused URL (in request order) is reported
    results = await asyncio.gather(
        *(policy.check_url(url, field=field) for url, field in urls.values()),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result


def normalize(
    parsed: PlayInput, settings: Settings, sealer: Sealer | None = None
) -> tuple[dict[str, Any], Sequence[q.NewCall]]:
    """The stored body (everything but the recipients) and one NewCall per recipient."""
    payload, recipients = parsed.payload, parsed.recipients
    if (payload.to is None) == (recipients is None):
        raise ValidationFailed("give exactly one of to or recipients", field="to")
    if recipients is not None:
        if not recipients:
            raise ValidationFailed("recipients must not be empty", field="recipients")
        if len(recipients) > settings.max_recipients:
            raise ValidationFailed(
                f"at most {settings.max_recipients} recipients per request", field="recipients"
            )
    sender = payload.from_ or DEFAULT_FROM
    body = stored_body(payload, settings, sealer)
    calls: Sequence[q.NewCall]
    if payload.to is not None:
        calls = [q.NewCall(to_uri=payload.to, from_uri=sender)]
    else:
        calls = CallsView(recipients or [], sender)
    return body, calls


def to_uris(calls: Sequence[q.NewCall]) -> Sequence[str]:
    """The calls' `to` URIs: the decoded strings themselves for a bare recipient list."""
    if isinstance(calls, CallsView) and isinstance(calls.recipients, BareRecipients):
        return calls.recipients.tos
    return [c.to_uri for c in calls]


class CallsView(Sequence[q.NewCall]):
    """The recipients as the calls to store, made one at a time when read (a list
    of 1M NewCall tuples beside the recipients' would cost ~80 MB more)."""

    def __init__(self, recipients: list[RecipientIn], sender: str) -> None:
        self.recipients = recipients
        self.sender = sender

    def __len__(self) -> int:
        return len(self.recipients)

    @overload
    def __getitem__(self, index: int) -> q.NewCall: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[q.NewCall]: ...
    def __getitem__(self, index: int | slice) -> q.NewCall | Sequence[q.NewCall]:
        if isinstance(index, slice):
            return CallsView(self.recipients[index], self.sender)
        to, from_, variables, timezone = self.recipients[index]
        return q.NewCall(to, from_ or self.sender, variables, timezone)

    def any_timezone(self) -> bool:
        """Whether a recipient has a time zone (a bare list has none: no reading)."""
        if isinstance(self.recipients, BareRecipients):
            return False
        return any(r.timezone is not None for r in self.recipients)

    def __iter__(self) -> Iterator[q.NewCall]:
        new_call, sender = q.NewCall, self.sender
        for to, from_, variables, timezone in self.recipients:
            yield new_call(to, from_ or sender, variables, timezone)


def stored_body(
    payload: PlayRequest, settings: Settings, sealer: Sealer | None = None
) -> dict[str, Any]:
    """What is stored of a request besides its recipients (requests.body)."""
    body: dict[str, Any] = {
        "from": payload.from_ or DEFAULT_FROM,
        "playlist": [item.model_dump(exclude_none=True) for item in payload.playlist],
        "ring_timeout": payload.ring_timeout,
        "max_duration": payload.max_duration,
        "retry": payload.retry.model_dump(),
        "max_concurrent": payload.max_concurrent,
        "cps": payload.cps,
        "schedule": payload.schedule.model_dump(exclude_none=True) if payload.schedule else None,
        "sip": _resolve_sip(payload, settings, sealer),
        "callback_url": payload.callback_url,
    }
    if payload.country is not None:
        body["country"] = payload.country
    if payload.machine_detection is not None:
        body["machine_detection"] = payload.machine_detection.model_dump()
    if payload.voicemail is not None:
        if payload.machine_detection is None or payload.machine_detection.mode != "drop":
            raise ValidationFailed(
                'voicemail needs "machine_detection": {"mode": "drop"}', field="voicemail"
            )
        body["voicemail"] = [item.model_dump(exclude_none=True) for item in payload.voicemail]
    return body


_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode
_json_str = encode_basestring_ascii  # what that encoder writes for a str


def body_hash(parsed: PlayInput) -> str:
    """SHA-256 of the validated body as canonical JSON (what Idempotency-Key compares):
    ``json.dumps(dump, sort_keys=True, separators=(",", ":"))`` of the body's
    model_dump with the recipients as Recipient models would dump them. Written
    key by key here so that the recipients' part is built without a dict each."""
    dump = parsed.payload.model_dump(mode="json", by_alias=True)
    keys = sorted({*dump, *(["recipients"] if parsed.recipients is not None else [])})
    digest = hashlib.sha256(b"{")
    for i, key in enumerate(keys):
        digest.update(f"{',' if i else ''}{_json_str(key)}:".encode())
        if key == "recipients" and parsed.recipients is not None:
            _hash_recipients(digest, parsed.recipients)  # fed in pieces: no 1M-part string
        else:
            digest.update(_canonical(dump[key]).encode())
    digest.update(b"}")
    return digest.hexdigest()


_BARE_HEAD = '{"from":null,"timezone":null,"to":'  # a recipient with only `to`
_BARE_TAIL = ',"variables":null}'
_HASH_CHUNK = 10_000  # recipients per update of the hash


def _hash_recipients(digest: Any, recipients: Sequence[RecipientIn]) -> None:
    """Feed `digest` the canonical JSON of the recipients' model_dump (keys sorted),
    a chunk of recipients at a time."""
    digest.update(b"[")
    for start in range(0, len(recipients), _HASH_CHUNK):
        parts = []
        for to, from_, variables, timezone in recipients[start : start + _HASH_CHUNK]:
            if from_ is None and variables is None and timezone is None:
                parts.append(f"{_BARE_HEAD}{_json_str(to)}{_BARE_TAIL}")
            else:
                parts.append(
                    _canonical(
                        {"from": from_, "timezone": timezone, "to": to, "variables": variables}
                    )
                )
        digest.update((("," if start else "") + ",".join(parts)).encode())
    digest.update(b"]")


def _check_idempotency_key(key: str | None) -> None:
    if key is not None:
        try:
            no_control(key)
        except ValueError as exc:
            raise ValidationFailed(str(exc), field="Idempotency-Key") from None


PLAY_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PlayRequest"}}},
    }
}


def _untag(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Drop the union tags pydantic puts in a playlist item's error location:
    ("playlist", 0, "say", "rate") -> ("playlist", 0, "rate"), also inside gather
    actions and transfer hold lists (after every list index)."""
    if len(loc) > 3 and loc[0] in ("playlist", "voicemail"):
        out: list[int | str] = []
        for i, part in enumerate(loc):
            tagged = i >= 2 and isinstance(loc[i - 1], int) and part in ACTION_KINDS
            if not (tagged and i + 1 < len(loc)):
                out.append(part)
        return tuple(out)
    return loc


async def read_body(request: Request) -> bytes:
    """The body's bytes, read as a stream, not request.body(): that would keep them
    on the request until the response (37 MB for 1M recipients); here they go
    once decoded."""
    return b"".join([chunk async for chunk in request.stream()])


def parse_play(raw: bytes) -> PlayInput:
    """The body as JSON whatever its Content-Type (curl -d sends a form type), then
    validated; errors go through the same mapping as FastAPI's own."""
    if not raw.strip():
        raise BadRequest("the request body is empty")
    lean = decode_play_lean(raw)  # a long recipient list without a dict each
    if lean is not None:
        return lean
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested too deep
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValidationFailed("the request body must be a JSON object", field=None)
    try:
        return validate_play(data)
    except PydanticValidationError as exc:
        errors = [
            {**e, "loc": ("body", *_untag(e["loc"]))} for e in exc.errors(include_input=False)
        ]
        raise RequestValidationError(errors) from None


@router.post(
    "/voice/call/play", summary="Queue calls that play a playlist", openapi_extra=PLAY_BODY_DOC
)
async def play(
    request: Request,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", max_length=255, min_length=1)
    ] = None,
) -> JSONResponse:
    """Accept a request once it and all its calls are committed to the database."""
    raw = await read_body(request)
    # A long body's parsing and checks (tens of ms per 10,000 recipients) run in a
    # worker thread: `ringcast serve` paces every live call's RTP on this event loop.
    big = len(raw) >= INTAKE_IN_THREAD
    parsed = await _off_loop_if(big, parse_play, raw)
    del raw  # the decoded body is what is kept
    settings = settings_of(request)
    key = api_key_of(request.state)
    checked = await _off_loop_if(
        big, checked_play, parsed, idempotency_key, settings, sealer_of(request), key
    )
    body, calls = checked.body, checked.calls
    payload = parsed.payload
    await intake.check_voices(payload)
    await intake.check_fixed_duration(payload)
    await _check_urls(payload, settings)
    accepted = await q.create_request(
        store_of(request),
        body=body,
        calls=calls,
        body_hash=checked.hash,
        zoned=checked.zoned,
        tenant=tenant_of(request),
        idempotency_key=idempotency_key,
        not_before=checked.not_before,
        api_key_id=key.id if key is not None else None,
        priority=payload.priority,
    )
    return json_response(envelope(200, "accepted", accepted.request_id))


INTAKE_IN_THREAD = 4096  # body bytes (about a hundred recipients) parsed off the event loop
_T = TypeVar("_T")


async def _off_loop_if(big: bool, fn: Callable[..., _T], *args: Any) -> _T:
    """`fn(*args)`, in a worker thread when `big`, else here on the event loop."""
    return await asyncio.to_thread(fn, *args) if big else fn(*args)


@dataclass(frozen=True, slots=True)
class CheckedPlay:
    body: dict[str, Any]  # what is stored (everything but the recipients)
    calls: Sequence[q.NewCall]
    hash: str  # what Idempotency-Key compares
    zoned: bool  # a call has a time zone
    not_before: datetime | None  # the schedule's, in UTC (the earliest of the calls' zones)


def checked_play(
    parsed: PlayInput,
    idempotency_key: str | None,
    settings: Settings,
    sealer: Sealer | None,
    key: ApiKey | None,
) -> CheckedPlay:
    """A parsed POST /voice/call/play body checked against the settings and the API
    key (everything but what needs the network or the database); no event loop
    needed, so a long one runs in a worker thread."""
    payload = parsed.payload
    _check_idempotency_key(idempotency_key)
    body, calls = normalize(parsed, settings, sealer)
    # numbers go through a trusted trunk: checked here, not against the key's allowlist
    uris = intake.numbers_checked(
        intake.recipient_fields(payload.to, to_uris(calls), _transfer_fields(payload)),
        trunk=payload.sip.trunk if payload.sip is not None else None,
        country=payload.country,
        settings=settings,
    )
    check_destinations(key, uris, payload.sip.proxy if payload.sip is not None else None)
    intake.check_uris(uris)
    del uris  # made when read: nothing per recipient is left for the insert
    if payload.sip is not None and payload.sip.proxy is not None:
        intake.check_uri(payload.sip.proxy, "sip.proxy")
    zoned = q.any_zoned(calls)
    schedule = payload.schedule
    zones = (c.timezone for c in calls) if zoned else ()  # none to read otherwise
    not_before = schedule.not_before_utc(zones) if schedule is not None else None
    return CheckedPlay(body, calls, body_hash(parsed), zoned, not_before)


# --- POST /voice/call/{request_id}/replay --------------------------------------------------

REPLAY_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReplayRequest"}}},
    }
}


async def _parse_replay(request: Request) -> ReplayRequest:
    # Read as a stream, not request.body(): that would keep the bytes on the request
    # until the response (37 MB for 1M recipients); here they go once decoded.
    raw = b"".join([chunk async for chunk in request.stream()])
    if not raw.strip():
        raise BadRequest("the request body is empty")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValidationFailed("the request body must be a JSON object", field=None)
    for name in ("to", "recipients"):
        if name in data:
            raise ValidationFailed(
                f"a replay calls the request's own recipients: {name} is not allowed", field=name
            )
    try:
        return ReplayRequest.model_validate(data)
    except PydanticValidationError as exc:
        errors = [
            {**e, "loc": ("body", *_untag(e["loc"]))} for e in exc.errors(include_input=False)
        ]
        raise RequestValidationError(errors) from None


@router.post(
    "/voice/call/{request_id}/replay",
    summary="Call a request's recipients again, with a new playlist",
    openapi_extra=REPLAY_BODY_DOC,
)
async def replay(
    request: Request,
    request_id: str,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", max_length=255, min_length=1)
    ] = None,
) -> JSONResponse:
    """A new request to the recipients of `request_id` (all, or `only` those whose
    last outcome is listed), in their order, with their variables, time zones
    and own `from`, and the fields of this body (without `from`, the earlier
    request's); answered like POST /voice/call/play."""
    payload = await _parse_replay(request)
    settings = settings_of(request)
    _check_idempotency_key(idempotency_key)
    store = store_of(request)
    tenant = tenant_of(request)
    source = None
    if len(request_id) <= ID_MAX:
        source = await q.replay_source(store, request_id, tenant=tenant, only=payload.only)
    if source is None:
        raise NotFound(f"no request {request_id[:ID_MAX]!r}", field="request_id")
    if not source.calls:
        raise ValidationFailed("no recipient of the request has those outcomes", field="only")
    body = stored_body(payload, settings, sealer_of(request))
    if payload.from_ is None and source.sender:
        body["from"] = source.sender  # the same caller as before unless told otherwise
    sender = body["from"]
    calls = [
        c if c.from_uri != source.sender else c._replace(from_uri=sender) for c in source.calls
    ]
    key = api_key_of(request.state)
    uris = await intake.check_numbers(
        intake.recipient_fields(None, [c.to_uri for c in calls], _transfer_fields(payload)),
        trunk=payload.sip.trunk if payload.sip is not None else None,
        country=payload.country,
        settings=settings,
    )
    check_destinations(key, uris, payload.sip.proxy if payload.sip is not None else None)
    del uris
    await _check_urls(payload, settings)
    dump = payload.model_dump(mode="json", by_alias=True)
    digest = hashlib.sha256(_canonical({"replay": request_id, **dump}).encode()).hexdigest()
    schedule = payload.schedule
    accepted = await q.create_request(
        store,
        body=body,
        calls=calls,
        body_hash=digest,
        tenant=tenant,
        idempotency_key=idempotency_key,
        not_before=schedule.not_before_utc(c.timezone for c in calls) if schedule else None,
        api_key_id=key.id if key is not None else None,
        priority=payload.priority,
    )
    return json_response(envelope(200, "accepted", accepted.request_id, replay_of=request_id))
