"""SDP offer and answer for one audio stream (RFC 4566, RFC 3264 offer/answer).

ringcast always offers: G.711 (PCMU, PCMA) plus RFC 4733 telephone-event, one
``m=audio`` line, ``a=sendrecv``, 20 ms packets. The callee answers with the
codec it picked; :func:`parse_answer` turns that answer (or a mid-call offer)
into the few numbers the media plane needs, including the direction the
callee wants (RFC 3264 §6.1, §8.4 hold). :func:`build_answer_message` answers
a mid-call offer: the mirrored direction and one ``m=`` line per offered one,
the extra ones rejected with port 0 (RFC 3264 §6). Parsing and serialization are aiosipua's
(:func:`aiosipua.sdp.parse_sdp`, :func:`aiosipua.sdp.serialize_sdp`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from aiosipua.sdp import (
    ConnectionData,
    MediaDescription,
    Origin,
    SdpMessage,
    TimingField,
    parse_sdp,
    serialize_sdp,
)

from ringcast.sip.crypto_sdp import (
    PROTO_PLAIN,
    PROTO_SECURE,
    CryptoAttribute,
    SrtpParams,
    redact_sdp,
)

PTIME = 20  # milliseconds of audio per RTP packet
G711_CLOCK_RATE = 8000  # Hz
TELEPHONE_EVENT_PT = 101  # dynamic payload type we offer for RFC 4733 events
STATIC_PAYLOAD_TYPES: dict[str, int] = {"PCMU": 0, "PCMA": 8}  # RFC 3551 §6
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")  # RFC 3264 §5.1
# RFC 3264 §6.1: the answer's direction given the offer's.
MIRROR = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


def _default_codecs() -> list[str]:
    return ["PCMU", "PCMA"]


@dataclass
class MediaOffer:
    """What we offer: where we receive RTP and which codecs, in preference order."""

    host: str
    port: int
    codecs: list[str] = field(default_factory=_default_codecs)
    telephone_event: bool = True
    # SDES-SRTP (RFC 4568, ringcast.sip.crypto_sdp): the policy and our offered keys
    srtp: str = "off"  # "off" | "optional" (RTP/AVP + a=crypto) | "required" (RTP/SAVP)
    crypto: tuple[CryptoAttribute, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class MediaLine:
    """One ``m=`` line of a remote description, enough to reject it with port 0."""

    media: str
    proto: str
    formats: tuple[str, ...]


@dataclass
class MediaAnswer:
    """What the callee chose (RFC 3264 §6): where to send RTP and with which codec.

    ``dtmf_payload_type`` is the callee's telephone-event type: we send events
    with it. ``receive_dtmf_payload_type`` is the one in *our* side of the
    exchange, the type the callee must send events with (RFC 3264 §5.1: the
    payload types in a description are the ones its author receives); the SIP
    layer fills it in, :func:`parse_answer` cannot know it.

    ``direction`` is the callee's, as its SDP states it (media-level attribute,
    else session-level, else sendrecv), with ``c=0.0.0.0`` read as "does not
    receive" (RFC 3264 §8.4, the RFC 2543 hold). ``media_lines`` and
    ``audio_index`` keep the shape of the description, for an answer to it.
    """

    host: str
    port: int
    payload_type: int
    codec: str  # "PCMU" | "PCMA"
    clock_rate: int
    dtmf_payload_type: int | None
    direction: str = "sendrecv"
    receive_dtmf_payload_type: int | None = None
    # The description's shape, not what was negotiated: left out of ==.
    media_lines: tuple[MediaLine, ...] = field(default=(), compare=False, repr=False)
    audio_index: int = field(default=0, compare=False, repr=False)
    # RFC 4568: the stream's transport and raw a=crypto values; ``srtp`` is what
    # the SIP layer negotiated from them (never shown: it holds keys)
    proto: str = PROTO_PLAIN
    crypto: tuple[str, ...] = field(default=(), compare=False, repr=False)
    srtp: SrtpParams | None = field(default=None, compare=False, repr=False)

    @property
    def receives(self) -> bool:
        """Whether the callee wants our RTP now (not on hold)."""
        return self.direction in ("sendrecv", "recvonly")


def new_session_id() -> str:
    """A random numeric SDP session id (RFC 4566 §5.2 ``<sess-id>``)."""
    return str(int.from_bytes(os.urandom(6), "big"))


def build_offer_message(
    offer: MediaOffer,
    *,
    session_version: int,
    session_id: str = "0",
    codecs: list[str] | None = None,
    dtmf_payload_type: int | None = TELEPHONE_EVENT_PT,
    direction: str = "sendrecv",
    crypto: tuple[CryptoAttribute, ...] | None = None,
) -> SdpMessage:
    """The offer as an aiosipua :class:`SdpMessage` (see :func:`build_offer`).

    ``codecs``/``dtmf_payload_type`` narrow the description, e.g. to the one
    codec already negotiated when answering a re-INVITE (RFC 3264 §8);
    ``crypto`` likewise to the one negotiated ``a=crypto`` (RFC 4568 §7.1.4).
    With keys the proto is ``RTP/SAVP`` when SRTP is required, else ``RTP/AVP``
    (best effort, see :mod:`ringcast.sip.crypto_sdp`).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown SDP direction {direction!r}")
    names = [c.upper() for c in (codecs if codecs is not None else offer.codecs)]
    unknown = [c for c in names if c not in STATIC_PAYLOAD_TYPES]
    if unknown:
        raise ValueError(f"unsupported codec {unknown[0]!r}: ringcast offers PCMU and PCMA")
    if not names:
        raise ValueError("no codec to offer")
    formats = [str(STATIC_PAYLOAD_TYPES[c]) for c in names]
    rtpmap = [f"{STATIC_PAYLOAD_TYPES[c]} {c}/{G711_CLOCK_RATE}" for c in names]
    attributes: dict[str, list[str]] = {"rtpmap": rtpmap}
    if offer.telephone_event and dtmf_payload_type is not None:
        formats.append(str(dtmf_payload_type))
        rtpmap.append(f"{dtmf_payload_type} telephone-event/{G711_CLOCK_RATE}")
        attributes["fmtp"] = [f"{dtmf_payload_type} 0-16"]
    keys = offer.crypto if crypto is None else crypto
    if offer.srtp != "off" and keys:
        attributes["crypto"] = [a.value() for a in keys]
    attributes["ptime"] = [str(PTIME)]
    attributes[direction] = []
    proto = PROTO_SECURE if offer.srtp == "required" and keys else PROTO_PLAIN
    media = MediaDescription(
        media="audio", port=offer.port, proto=proto, formats=formats, attributes=attributes
    )
    addr_type = address_type(offer.host)
    return SdpMessage(
        version=0,
        origin=Origin(
            username="ringcast",
            session_id=session_id,
            session_version=str(session_version),
            addr_type=addr_type,
            address=offer.host,
        ),
        session_name="ringcast",
        connection=ConnectionData(addr_type=addr_type, address=offer.host),
        timing=TimingField(0, 0),
        media=[media],
    )


def address_type(host: str) -> str:
    """The ``<addrtype>`` of ``o=``/``c=`` for ``host`` (RFC 4566 §5.7): IP6 for
    an IPv6 address (written without brackets), else IP4."""
    return "IP6" if ":" in host else "IP4"


def build_answer_message(
    offer: MediaOffer,
    remote: MediaAnswer,
    *,
    session_version: int,
    session_id: str,
    codecs: list[str],
    dtmf_payload_type: int | None,
    crypto: tuple[CryptoAttribute, ...] | None = None,
) -> SdpMessage:
    """Our answer to a mid-call offer ``remote`` (RFC 3264 §6, §8).

    The audio stream with the mirrored direction (sendonly -> recvonly,
    recvonly -> sendonly, inactive -> inactive, sendrecv -> sendrecv, §6.1);
    "exactly the same number of m-lines" as the offer, in its order: every
    other one (video, a second audio, ...) rejected with port 0 (§6).
    """
    sdp = build_offer_message(
        offer,
        session_version=session_version,
        session_id=session_id,
        codecs=codecs,
        dtmf_payload_type=dtmf_payload_type,
        direction=MIRROR[remote.direction],
        crypto=crypto,
    )
    audio = sdp.media[0]
    if crypto:  # RFC 4568: the answer keeps the offer's transport, SAVP or AVP
        audio.proto = remote.proto
    if not remote.media_lines:
        return sdp
    sdp.media = [
        audio
        if i == remote.audio_index
        else MediaDescription(
            media=line.media, port=0, proto=line.proto, formats=list(line.formats) or ["0"]
        )
        for i, line in enumerate(remote.media_lines)
    ]
    return sdp


def build_offer(offer: MediaOffer, *, session_version: int, session_id: str = "0") -> bytes:
    """Serialize our SDP offer (RFC 3264 §5): the INVITE body.

    ``session_version`` is the ``o=`` version; it goes up by one each time the
    description is sent again in a modified or refreshed form (RFC 3264 §8).
    """
    sdp = build_offer_message(offer, session_version=session_version, session_id=session_id)
    return serialize_sdp(sdp).encode("ascii")


def parse_answer(sdp_bytes: bytes, offered_codecs: list[str]) -> MediaAnswer:
    """Read the callee's SDP answer (RFC 3264 §6.1) for our one audio stream.

    Picks the first payload in the answer's ``m=audio`` format list that is one
    of ``offered_codecs``. Raises ``ValueError`` with an exact message:
    ``"SDP answer has no audio stream"``, ``"SDP answer rejected the audio
    stream"`` (port 0), ``"SDP answer has no connection address"`` or
    ``"SDP answer has no common codec (offered PCMU,PCMA; answered ...)"``.
    """
    try:
        text = sdp_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("SDP answer is not UTF-8 text") from exc
    try:
        sdp = parse_sdp(text)
    except (ValueError, IndexError) as exc:  # the error may quote a line: no key in it
        raise ValueError(f"SDP answer is malformed: {redact_sdp(str(exc))}") from None
    audio = sdp.audio
    if audio is None:
        raise ValueError("SDP answer has no audio stream")
    if audio.port == 0:
        raise ValueError("SDP answer rejected the audio stream")
    conn = audio.connection or sdp.connection
    if conn is None:
        raise ValueError("SDP answer has no connection address")
    if conn.addr_type.upper() not in ("IP4", "IP6"):
        raise ValueError(f"SDP answer has an unknown address type {conn.addr_type!r}")
    direction = _direction(audio.attributes) or _direction(sdp.attributes) or "sendrecv"
    if conn.address == "0.0.0.0":  # RFC 3264 §8.4: old-style hold, nowhere to send to
        direction = {"sendrecv": "sendonly", "recvonly": "inactive"}.get(direction, direction)
    lines = tuple(MediaLine(m.media, m.proto, tuple(m.formats)) for m in sdp.media)
    audio_index = next(i for i, m in enumerate(sdp.media) if m is audio)
    wanted = [c.upper() for c in offered_codecs]
    dtmf_pt: int | None = None
    for codec in audio.codecs:
        if codec.encoding_name.lower() == "telephone-event" and codec.clock_rate in (0, 8000):
            dtmf_pt = codec.payload_type
            break
    for codec in audio.codecs:
        name = codec.encoding_name.upper()
        if name in wanted:
            return MediaAnswer(
                host=conn.address,
                port=audio.port,
                payload_type=codec.payload_type,
                codec=name,
                clock_rate=codec.clock_rate or G711_CLOCK_RATE,
                dtmf_payload_type=dtmf_pt,
                direction=direction,
                media_lines=lines,
                audio_index=audio_index,
                proto=audio.proto,
                crypto=tuple(audio.attributes.get("crypto", ())),
            )
    answered = ",".join(c.encoding_name or str(c.payload_type) for c in audio.codecs) or "none"
    raise ValueError(
        f"SDP answer has no common codec (offered {','.join(wanted)}; answered {answered})"
    )


def _direction(attributes: dict[str, list[str]]) -> str | None:
    for name in DIRECTIONS:
        if name in attributes:
            return name
    return None


def sdp_session_version(sdp_bytes: bytes) -> int | None:
    """The ``o=`` session version of an SDP body, or ``None`` if unreadable."""
    for line in sdp_bytes.decode("utf-8", errors="replace").splitlines():
        if line.startswith("o="):
            parts = line[2:].split()
            if len(parts) >= 3 and parts[2].isdigit():
                return int(parts[2])
    return None
