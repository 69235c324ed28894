"""RFC 3264 offer/answer for one call's single audio stream (pure: no I/O).

:class:`OfferAnswer` holds our offer, the SDP session id and version, and
the callee's current description. The call (the owner) asks it for the bytes
of each offer or answer it sends and hands it each SDP it receives.
"""

from __future__ import annotations

import dataclasses

from aiosipua.sdp import serialize_sdp

from ringcast.sip.crypto_sdp import CryptoAttribute, SrtpParams, negotiate, parse_crypto
from ringcast.sip.sdp import (
    TELEPHONE_EVENT_PT,
    MediaAnswer,
    MediaOffer,
    build_answer_message,
    build_offer,
    build_offer_message,
    new_session_id,
    parse_answer,
)


class OfferAnswer:
    """Our media and the callee's, across the INVITE and every later offer (§8)."""

    def __init__(self, media: MediaOffer) -> None:
        self.media = media  # never changed in place: replaced (set_host), so it can be shared
        self.session_id = new_session_id()
        self.version = 1
        self.answer: MediaAnswer | None = None  # the callee's current description
        self.early_answer: MediaAnswer | None = None  # from a reliable-less 18x (§13.2.1)

    def set_host(self, host: str) -> None:
        """The address our SDP names, once the INVITE's local address is known."""
        self.media = dataclasses.replace(self.media, host=host)

    def initial_offer(self) -> bytes:
        """The INVITE's offer (re-sent unchanged with digest or to the next server)."""
        return build_offer(self.media, session_version=self.version, session_id=self.session_id)

    def answer_to_us(self, body: bytes) -> MediaAnswer:
        """The callee's answer to our initial offer (``ValueError`` when unusable).

        With SRTP offered, its keys are negotiated here (RFC 4568 §5.1.2):
        ``required`` and an answer without ``a=crypto`` is unusable, so the
        call fails with that error; ``optional`` falls back to plain RTP.
        """
        answer = parse_answer(body, self.media.codecs)
        # Filled in on the answer just parsed, which nothing else holds yet: this runs
        # for every answered call, and dataclasses.replace costs more than the parse.
        answer.receive_dtmf_payload_type = self._our_dtmf(answer)
        answer.srtp = self._negotiate(self.media.crypto, answer)
        return answer

    def _negotiate(
        self, offered: tuple[CryptoAttribute, ...], answer: MediaAnswer
    ) -> SrtpParams | None:
        if self.media.srtp == "off" or not offered:
            return None
        srtp = negotiate(offered, list(answer.crypto))
        if srtp is None and self.media.srtp == "required":
            raise ValueError(
                "SDP answer has no a=crypto: the callee does not do SRTP (srtp is required)"
            )
        return srtp

    def _current_crypto(self) -> tuple[CryptoAttribute, ...] | None:
        """Our one negotiated ``a=crypto`` (same tag, suite and key) for later offers."""
        srtp = self.answer.srtp if self.answer is not None else None
        if srtp is None:
            return None if self.answer is None else ()
        for attr in self.media.crypto:
            if attr.key == srtp.local_key:
                return (attr,)
        return ()

    def as_answer_to_us(self, answer: MediaAnswer) -> MediaAnswer:
        """An answer to our offer: the callee's events come with the type *we* offered (§5.1)."""
        return dataclasses.replace(answer, receive_dtmf_payload_type=self._our_dtmf(answer))

    def _our_dtmf(self, answer: MediaAnswer) -> int | None:
        """The telephone-event type we receive on with ``answer`` (the one we offered)."""
        ours: int | None = TELEPHONE_EVENT_PT if self.media.telephone_event else None
        if self.answer is not None:
            ours = self.answer.receive_dtmf_payload_type
        if answer.dtmf_payload_type is None:
            ours = None  # no telephone-event negotiated: none to receive either
        return ours

    def read_remote(self, body: bytes, *, offer: bool) -> MediaAnswer:
        """The callee's new offer (or answer) for the audio stream we already play.

        Only the codec in use is acceptable: the prompt was prepared for it and
        the stream cannot switch codecs mid-call. ``ValueError`` when the
        description lacks it (or has no usable audio stream). An ``offer`` is
        answered with its own telephone-event type, which we then receive on
        (RFC 3264 §6.1); an answer keeps the one we offered.
        """
        wanted = [self.answer.codec] if self.answer is not None else self.media.codecs
        remote = parse_answer(body, wanted)
        srtp = self._remote_srtp(remote, offer=offer)
        if offer:
            return dataclasses.replace(
                remote, receive_dtmf_payload_type=remote.dtmf_payload_type, srtp=srtp
            )
        return dataclasses.replace(self.as_answer_to_us(remote), srtp=srtp)

    def _remote_srtp(self, remote: MediaAnswer, *, offer: bool) -> SrtpParams | None:
        """SRTP stays as negotiated across re-offers (RFC 4568 §7.1.4): our key and suite
        are kept; the callee may re-key with a new attribute of the same suite."""
        current = self.answer.srtp if self.answer is not None else None
        if current is None:
            return None
        mine = self._current_crypto() or ()
        if offer:  # their tags: answer the one with our suite, with our key
            mine = tuple(
                CryptoAttribute(attr.tag, attr.suite, current.local_key)
                for attr in _parsed(remote.crypto)
                if attr.suite == current.suite
            )
        srtp = negotiate(mine, list(remote.crypto)) if mine else None
        if srtp is None:
            raise ValueError("SDP has no a=crypto for the SRTP stream in use")
        return srtp

    def local_sdp(self, remote: MediaAnswer | None = None) -> bytes:
        """Our unchanged media, SDP version + 1 (§8), narrowed to the chosen codec.

        With ``remote`` (the callee's offer) it is the answer to it: the
        mirrored direction and as many m-lines as the offer (§6). Without, it
        is an offer (a refresh, or our 2xx to an SDP-less re-INVITE).
        """
        self.version += 1
        answer = self.answer
        codecs = [answer.codec] if answer is not None else self.media.codecs
        if remote is not None:  # §6.1: the answer keeps the offer's payload type
            dtmf = remote.dtmf_payload_type
        elif answer is not None:  # an offer: keep the type we receive on
            dtmf = answer.receive_dtmf_payload_type
        else:
            dtmf = TELEPHONE_EVENT_PT
        crypto = self._current_crypto()
        if remote is not None and remote.srtp is not None:  # echo the tag they offered
            tags = [a.tag for a in _parsed(remote.crypto) if a.key == remote.srtp.remote_key]
            if crypto and tags:
                crypto = (CryptoAttribute(tags[0], crypto[0].suite, crypto[0].key),)
        if remote is not None:
            message = build_answer_message(
                self.media,
                remote,
                session_version=self.version,
                session_id=self.session_id,
                codecs=codecs,
                dtmf_payload_type=dtmf,
                crypto=crypto,
            )
        else:
            message = build_offer_message(
                self.media,
                session_version=self.version,
                session_id=self.session_id,
                codecs=codecs,
                dtmf_payload_type=dtmf,
                crypto=crypto,
            )
        return serialize_sdp(message).encode("ascii")


def _parsed(values: tuple[str, ...]) -> list[CryptoAttribute]:
    """The readable ``a=crypto`` values of a description (unreadable ones skipped)."""
    out: list[CryptoAttribute] = []
    for value in values:
        try:
            out.append(parse_crypto(value))
        except ValueError:
            continue
    return out
