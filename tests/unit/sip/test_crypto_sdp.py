"""RFC 4568 a=crypto parse/build/negotiate, the SRTP offer in SDP, and key redaction."""

from __future__ import annotations

import base64
import logging

import pytest

from ringcast.logfmt import install_key_redaction, redact_keys
from ringcast.sip.crypto_sdp import (
    OFFERED_SUITES,
    CryptoAttribute,
    negotiate,
    new_offer,
    parse_crypto,
    redact_sdp,
    stricter,
)
from ringcast.sip.offer_answer import OfferAnswer
from ringcast.sip.sdp import MediaOffer, parse_answer

# RFC 4568 §4's example attribute (its key parameter carries lifetime and MKI).
RFC4568_EXAMPLE = (
    "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32"
)


def test_parse_rfc4568_example() -> None:
    attr = parse_crypto(RFC4568_EXAMPLE)
    assert attr.tag == 1
    assert attr.suite == "AES_CM_128_HMAC_SHA1_80"
    assert attr.key == base64.b64decode("PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR")
    assert len(attr.key) == 30
    assert attr.params == "|2^20|1:32"
    assert attr.value() == RFC4568_EXAMPLE


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1 AES_CM_128_HMAC_SHA1_80", "a=crypto needs a tag, a crypto-suite and key parameters"),
        ("x AES_CM_128_HMAC_SHA1_80 inline:AAAA", "a=crypto tag must be 1 to 9 digits"),
        ("1 AES_CM_128_HMAC_SHA1_80 uri:http://k", "a=crypto key method must be inline"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:@@@@", "a=crypto key is not base64"),
        (
            "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA",
            "a=crypto key for AES_CM_128_HMAC_SHA1_80 must be 30 bytes, not 3",
        ),
        (
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR "
            "UNENCRYPTED_SRTP",
            "a=crypto session parameters are not supported",
        ),
    ],
)
def test_parse_errors(value: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_crypto(value)
    assert str(err.value) == message


def test_new_offer_fresh_keys_every_call() -> None:
    a, b = new_offer(), new_offer()
    assert [x.suite for x in a] == list(OFFERED_SUITES)
    assert [x.tag for x in a] == [1, 2, 3]
    assert [len(x.key) for x in a] == [30, 30, 44]
    assert {x.key for x in a}.isdisjoint({x.key for x in b})
    assert "key" not in repr(a[0]).replace("CryptoAttribute", "")  # repr hides the key
    assert base64.b64encode(a[0].key).decode() not in repr(a)


def test_negotiate_picks_echoed_tag_with_answerer_key() -> None:
    offered = new_offer()
    theirs = CryptoAttribute(3, "AEAD_AES_256_GCM", bytes(range(44)))
    srtp = negotiate(offered, [theirs.value()])
    assert srtp is not None
    assert srtp.suite == "AEAD_AES_256_GCM"
    assert srtp.local_key == offered[2].key
    assert srtp.remote_key == bytes(range(44))
    assert negotiate(offered, []) is None


def test_negotiate_refuses_suite_not_offered_under_tag() -> None:
    offered = new_offer()
    wrong = CryptoAttribute(1, "AES_CM_128_HMAC_SHA1_32", bytes(30))
    with pytest.raises(ValueError) as err:
        negotiate(offered, [wrong.value()])
    assert str(err.value) == (
        "SDP answer has no usable a=crypto: a=crypto tag 1 AES_CM_128_HMAC_SHA1_32 was not offered"
    )
    with pytest.raises(ValueError, match="an MKI is not supported"):
        negotiate(offered, [RFC4568_EXAMPLE])


def test_stricter_policy_wins() -> None:
    assert stricter("required", "off") == "required"
    assert stricter("off", "optional") == "optional"
    assert stricter(None, None) == "off"


def _answer(proto: str, crypto: str | None) -> bytes:
    lines = [
        "v=0",
        "o=callee 1 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio 30000 {proto} 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
    ]
    if crypto:
        lines.append(f"a=crypto:{crypto}")
    return ("\r\n".join(lines) + "\r\n").encode()


def test_offer_required_is_savp_with_three_keys() -> None:
    crypto = new_offer()
    oa = OfferAnswer(MediaOffer("127.0.0.1", 20000, srtp="required", crypto=crypto))
    text = oa.initial_offer().decode()
    assert "m=audio 20000 RTP/SAVP 0 8 101\r\n" in text
    for attr in crypto:
        assert f"a=crypto:{attr.value()}\r\n" in text


def test_offer_optional_is_avp_with_keys_and_off_has_none() -> None:
    crypto = new_offer()
    optional = OfferAnswer(MediaOffer("127.0.0.1", 20000, srtp="optional", crypto=crypto))
    text = optional.initial_offer().decode()
    assert "m=audio 20000 RTP/AVP 0 8 101\r\n" in text
    assert text.count("a=crypto:") == 3
    off = OfferAnswer(MediaOffer("127.0.0.1", 20000)).initial_offer().decode()
    assert "a=crypto" not in off
    assert "RTP/AVP" in off


def test_required_answer_without_crypto_fails() -> None:
    oa = OfferAnswer(MediaOffer("127.0.0.1", 20000, srtp="required", crypto=new_offer()))
    with pytest.raises(ValueError) as err:
        oa.answer_to_us(_answer("RTP/AVP", None))
    assert str(err.value) == (
        "SDP answer has no a=crypto: the callee does not do SRTP (srtp is required)"
    )


def test_optional_answer_without_crypto_is_plain() -> None:
    oa = OfferAnswer(MediaOffer("127.0.0.1", 20000, srtp="optional", crypto=new_offer()))
    answer = oa.answer_to_us(_answer("RTP/AVP", None))
    assert answer.srtp is None
    assert answer.codec == "PCMU"


def test_answer_with_crypto_negotiates_and_refresh_keeps_the_one_key() -> None:
    crypto = new_offer()
    oa = OfferAnswer(MediaOffer("127.0.0.1", 20000, srtp="required", crypto=crypto))
    theirs = CryptoAttribute(1, "AES_CM_128_HMAC_SHA1_80", bytes(range(30)))
    answer = oa.answer_to_us(_answer("RTP/SAVP", theirs.value()))
    assert answer.proto == "RTP/SAVP"
    assert answer.srtp is not None and answer.srtp.remote_key == bytes(range(30))
    assert "bytes" not in repr(answer) and "remote_key" not in repr(answer)
    oa.answer = answer
    refresh = oa.local_sdp().decode()  # a session refresh re-offers the negotiated key only
    assert refresh.count("a=crypto:") == 1
    assert f"a=crypto:{crypto[0].value()}" in refresh
    assert "RTP/SAVP" in refresh
    # the callee re-offers with a new tag and key of the same suite: answered, re-keyed
    rekey = CryptoAttribute(7, "AES_CM_128_HMAC_SHA1_80", bytes(30))
    remote = oa.read_remote(_answer("RTP/SAVP", rekey.value()), offer=True)
    assert remote.srtp is not None
    assert remote.srtp.remote_key == bytes(30)
    assert remote.srtp.local_key == crypto[0].key
    reply = oa.local_sdp(remote).decode()
    ours = CryptoAttribute(7, "AES_CM_128_HMAC_SHA1_80", crypto[0].key)
    assert f"a=crypto:{ours.value()}\r\n" in reply
    # a re-offer without crypto would silently drop encryption: refused (the call 488s it)
    with pytest.raises(ValueError, match="no a=crypto for the SRTP stream in use"):
        oa.read_remote(_answer("RTP/AVP", None), offer=True)


def test_parse_answer_keeps_proto_and_crypto() -> None:
    value = CryptoAttribute(2, "AES_CM_128_HMAC_SHA1_32", bytes(30)).value()
    answer = parse_answer(_answer("RTP/SAVP", value), ["PCMU"])
    assert answer.proto == "RTP/SAVP"
    assert answer.crypto == (value,)


def test_redaction_of_sdp_and_log_records(caplog: pytest.LogCaptureFixture) -> None:
    key = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
    sdp = f"a=crypto:{RFC4568_EXAMPLE}\r\n"
    assert key not in redact_sdp(sdp)
    assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:[redacted]|2^20|1:32" in redact_sdp(sdp)
    assert redact_keys(sdp) == redact_sdp(sdp)
    install_key_redaction()
    install_key_redaction()  # idempotent
    log = logging.getLogger("ringcast.test.redaction")
    with caplog.at_level(logging.INFO, logger="ringcast.test.redaction"):
        log.info("got %s", sdp)
        try:
            raise ValueError(sdp)
        except ValueError:
            log.exception("failed on %r", sdp.encode())
    text = caplog.text
    assert "inline:[redacted]" in text
    assert key not in text
    assert all(key not in r.getMessage() for r in caplog.records)


def test_json_log_lines_are_redacted() -> None:
    from ringcast.logfmt import JsonFormatter

    key = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
    record = logging.LogRecord(
        "ringcast.sip", logging.INFO, __file__, 1, "answer %s", (RFC4568_EXAMPLE,), None
    )
    record.sdp = f"a=crypto:{RFC4568_EXAMPLE}"  # an extra= field
    try:
        raise ValueError(RFC4568_EXAMPLE)
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert key not in line
    assert line.count("inline:[redacted]") == 3


def test_captured_baresip_srtp_answer() -> None:
    """baresip 1.0.0 (mediaenc=srtp-mand) answering ringcast's RTP/SAVP offer."""
    from pathlib import Path

    raw = (Path(__file__).parents[2] / "data" / "sip" / "baresip_200_ok_srtp.sip").read_bytes()
    body = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1]
    answer = parse_answer(body, ["PCMU", "PCMA"])
    assert (answer.proto, answer.codec, answer.port) == ("RTP/SAVP", "PCMU", 41854)
    offered = new_offer()
    srtp = negotiate(offered, list(answer.crypto))
    assert srtp is not None and srtp.suite == "AES_CM_128_HMAC_SHA1_80"
    assert srtp.remote_key == base64.b64decode("XGYqqdg2JnyA5DdqyLkNP8zLgERWU3cO/fG9YGpX")
    assert srtp.local_key == offered[0].key
