"""Intake checks of POST /voice/call/play beyond the schema: what would make every
call of a request fail is refused at the door (HTTP 422 naming the field;
nothing queued).

- Recipients (and ``sip.proxy``): a ``;transport=`` parameter must be one
  ringcast speaks (udp, tcp, tls) and be written once, with a value; a
  ``sips:`` URI is reached over TLS (RFC 5630), never ``;transport=udp``.
- ``say`` voices: one an installed engine has (GET /voices lists them); piper
  voices are only those the operator configured (never a path).
- A fixed playlist (no ``gather``) that certainly lasts longer than
  ``max_duration``: its pauses, DTMF and speech (synthesized here only when a
  cheap bound cannot rule it out). A ``play`` file's length is known only once
  fetched: that is checked when the prompt is prepared, before anyone is called.
  A playlist with a gather is cut at ``max_duration`` instead.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Iterator, Sequence
from typing import Any, overload

from ringcast import numbers
from ringcast.api.schemas import PlayRequest
from ringcast.config import CALL_TRANSPORTS, Settings
from ringcast.errors import MediaError, ValidationFailed

# The audio stack (numpy, libsndfile, eSpeak NG) is imported when a request first
# needs it, so `ringcast api` starts without it.

SPOKEN_TRANSPORTS = frozenset(CALL_TRANSPORTS)  # what the SIP layer can send over
TLS = "tls" in SPOKEN_TRANSPORTS  # sips: URIs are accepted once TLS exists
# Bound of eSpeak/piper speech: no word is shorter than two characters, and every
# punctuation mark pauses under a second; doubled for margin.
_PAUSE_PER_MARK = 1.0  # seconds
_MARKS = re.compile(r"[.,;:!?\n]")


def check_uri(uri: str, where: str) -> None:
    """ValidationFailed when ringcast cannot call `uri` (sips:, or a bad ;transport=)."""
    scheme = uri.split(":", 1)[0].lower()
    if scheme == "sips" and not TLS:
        raise ValidationFailed(
            f"{where} {uri[:128]}: sips: needs SIP over TLS, which this ringcast does not "
            "support yet; use sip:",
            field=where,
        )
    rest = uri.split("?", 1)[0].split(":", 1)[-1]
    params = rest.rpartition("@")[2].split(";")[1:]
    transports = [p.partition("=") for p in params if p.partition("=")[0].lower() == "transport"]
    if not transports:
        return
    if len(transports) > 1 or not transports[0][1] or not transports[0][2]:
        raise ValidationFailed(
            f"{where} {uri[:128]}: write ;transport= once, with a value (udp, tcp or tls)",
            field=where,
        )
    value = transports[0][2].lower()
    if value not in SPOKEN_TRANSPORTS:
        spoken = " or ".join(sorted(SPOKEN_TRANSPORTS))
        raise ValidationFailed(
            f"{where} {uri[:128]}: transport {value[:16]!r} is not supported (use {spoken})",
            field=where,
        )
    if scheme == "sips" and value == "udp":
        raise ValidationFailed(
            f"{where} {uri[:128]}: a sips: URI is reached over TLS, not ;transport=udp",
            field=where,
        )


_URI_CHUNK = 10_000  # URIs joined at once to look for sips: and ;transport


def check_uris(uris: Sequence[tuple[str, str]]) -> None:
    """:func:`check_uri` for each (field, URI); one pass over the text, a chunk at
    a time, when none has sips: or ;transport= (the 100,000-recipient case)."""
    every = uris.all_uris() if isinstance(uris, Fields) else (u for _, u in uris)
    while chunk := list(itertools.islice(every, _URI_CHUNK)):
        text = "\n".join(chunk).lower()
        if "sips:" in text or ";transport" in text:
            break
    else:
        return
    for where, uri in uris:
        check_uri(uri, where)


_voices_seen: dict[str, str | None] = {}  # voice -> why it is refused (None: it is fine)


async def check_voices(payload: PlayRequest) -> None:
    """ValidationFailed naming the first `say` item whose voice no engine has."""
    for i, item in enumerate(payload.playlist):
        voice = getattr(item, "voice", None)
        if voice is None:
            continue
        if voice not in _voices_seen:
            from ringcast.media import tts

            try:  # a thread: eSpeak's lock may be held by a synthesis in this process
                await asyncio.to_thread(tts.check_voice, voice)
                _voices_seen[voice] = None
            except MediaError as exc:
                _voices_seen[voice] = f"{exc.message}; GET /voices lists the installed voices"
        refused = _voices_seen[voice]
        if refused is not None:
            raise ValidationFailed(refused, field=f"playlist[{i}].voice")


def _speech_bound(text: str, rate: int) -> float:
    """Seconds that `text` certainly takes less than to speak at `rate` words/minute."""
    words = len(text) / 2 + 1
    return 2 * (words * 60 / rate + len(_MARKS.findall(text)) * _PAUSE_PER_MARK)


async def _speech_seconds(text: str, voice: str, rate: int) -> float:
    from ringcast.media import tts

    try:
        speech = await tts.synthesize_async(text, voice=voice, rate=rate)
    except MediaError:
        return 0.0  # refused elsewhere (the voice), or failing later with its reason
    return speech.samples.size / speech.sample_rate


async def check_fixed_duration(payload: PlayRequest) -> None:
    """ValidationFailed (field max_duration) when a playlist without a gather lasts
    longer than max_duration for every recipient (variables count as empty)."""
    items: list[dict[str, Any]] = [item.model_dump() for item in payload.playlist]
    if any("gather" in item for item in items):
        return
    from ringcast.media import tts
    from ringcast.media.prompt import DTMF_GAP, DTMF_TONE, substitute

    limit = payload.max_duration
    known = 0.0
    speech: list[tuple[str, str, int, int]] = []
    for item in items:
        loop = int(item.get("loop") or 1)
        if item.get("pause") is not None:
            known += float(item["pause"]) * loop
        elif item.get("dtmf") is not None:
            known += len(str(item["dtmf"])) * (DTMF_TONE + DTMF_GAP) * loop
        elif item.get("say") is not None:
            text = substitute(str(item["say"]), {})  # a variable counts as empty
            voice = str(item.get("voice") or tts.DEFAULT_VOICE)
            speech.append((text, voice, int(item.get("rate") or tts.DEFAULT_RATE), loop))
    bound = known + sum(_speech_bound(t, r) * n for t, _, r, n in speech)
    if known <= limit and bound <= limit:
        return
    total = known
    for text, voice, rate, loop in speech:
        if total > limit:
            break
        total += await _speech_seconds(text, voice, rate) * loop
    if total > limit:
        raise ValidationFailed(
            f"the playlist lasts at least {total:.1f} s, longer than max_duration {limit} s "
            "(raise max_duration or shorten the playlist)",
            field="max_duration",
        )


class Fields(Sequence[tuple[str, str]]):
    """(field, URI) of each recipient as error messages name them
    (``recipients[i].to``), then the `extra` pairs; each pair made when read (1M
    tuples and field names held at once would cost ~140 MB)."""

    def __init__(
        self, to: str | None, uris: Sequence[str], extra: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.to = to
        self.uris: Sequence[str] = [to] if to is not None else uris
        self.extra = extra

    def __len__(self) -> int:
        return len(self.uris) + len(self.extra)

    def _name(self, i: int) -> str:
        return "to" if self.to is not None else f"recipients[{i}].to"

    @overload
    def __getitem__(self, index: int) -> tuple[str, str]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[str, str]]: ...
    def __getitem__(self, index: int | slice) -> tuple[str, str] | Sequence[tuple[str, str]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self.uris)
        if index < 0:
            index += len(self)
        if index >= n:
            return self.extra[index - n]
        return self._name(index), self.uris[index]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        if self.to is not None:
            yield "to", self.to
        else:
            for i, uri in enumerate(self.uris):
                yield f"recipients[{i}].to", uri
        yield from self.extra

    def all_uris(self) -> Iterator[str]:
        """The URIs alone (no field names made)."""
        yield from self.uris
        for _, uri in self.extra:
            yield uri


def recipient_fields(
    to: str | None, uris: Sequence[str], extra: Sequence[tuple[str, str]] = ()
) -> Fields:
    """(field, URI) of each recipient, as error messages name them, then `extra`."""
    return Fields(to, uris, extra)


NUMBERS_IN_THREAD = 200  # numbers checked off the event loop from this many (~50 µs each)


async def check_numbers(
    fields: Sequence[tuple[str, str]],
    *,
    trunk: str | None,
    country: str | None,
    settings: Settings,
) -> Sequence[tuple[str, str]]:
    """:func:`numbers_checked` in a worker thread when the request holds many
    numbers (100,000 take seconds of phonenumbers' parsing)."""
    if len(fields) < NUMBERS_IN_THREAD:
        return numbers_checked(fields, trunk=trunk, country=country, settings=settings)
    return await asyncio.to_thread(
        numbers_checked, fields, trunk=trunk, country=country, settings=settings
    )


def numbers_checked(
    fields: Sequence[tuple[str, str]],
    *,
    trunk: str | None,
    country: str | None,
    settings: Settings,
) -> Sequence[tuple[str, str]]:
    """The recipients that are SIP URIs; ValidationFailed naming the first number
    that has no trunk to go through (the request's `sip.trunk`, else the config's
    `default_trunk`) or that is no phone number in its country (the request's,
    else the trunk's: DESIGN "Phone numbers and carriers"). When all are SIP
    URIs, `fields` itself (no copy)."""
    is_uri = numbers.is_sip_uri
    every = fields.all_uris() if isinstance(fields, Fields) else (to for _, to in fields)
    if all(map(is_uri, every)):
        return fields
    uris = [f for f in fields if is_uri(f[1])]
    name = trunk or settings.default_trunk
    table = settings.trunks.get(name) if name else None
    region = country or (str(table["country"]) if table and table.get("country") else None)
    for where, to in fields:
        if numbers.is_sip_uri(to):
            continue
        if table is None:
            raise ValidationFailed(
                f"recipient {to} is a phone number: it needs a trunk "
                '("sip": {"trunk": ...} or default_trunk in the config)',
                field=where,
            )
        try:
            numbers.e164(to, region)
        except numbers.NumberError as exc:
            raise ValidationFailed(f"recipient {exc}", field=where) from None
    return uris
