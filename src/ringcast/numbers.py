"""Phone numbers: recipients and caller IDs given as numbers, and the trunk's
Request-URI for them (DESIGN.md "Phone numbers and carriers").

A recipient `to` is a SIP URI (dialled as given), a ``tel:`` URI (RFC 3966) or
a number: E.164 (``+15550100001``) or a national format read in a country
(``"(201) 555-0123"`` with ``"US"``). Numbers are parsed and written by
`phonenumbers` (libphonenumber's metadata); "valid" here means a possible
number for its country (its length fits), not an assigned one, so test ranges
such as +1 555 01xx work. A number is dialled through a trunk: the trunk's
proxy host becomes the Request-URI host, its ``strip`` string is removed from
the start of the E.164 number and its ``prefix`` put before it (:func:`dial_user`; RFC 3261
§19.1.6; ``user=phone`` when the trunk asks).

The do-not-call entry of any recipient (:func:`dnc_entry`) comes from the same
parser, so an entry and a dialled number always agree. Pure: no I/O.

Speed (bench/phone_numbers.py): a number in strict E.164 (``+`` and digits, or
with RFC 3966 ``-``/``.``/blank separators) whose national part has no leading
zero and no national prefix takes a fast path: its country code, the national
prefix pattern and the verdict for its length come from the same metadata,
looked up once per (country code, length); anything else, and every refusal,
goes through ``phonenumbers.parse``. :func:`e164` also remembers its last
answers per (text, country): a number is read at intake and again at dial time.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import phonenumbers

E164 = phonenumbers.PhoneNumberFormat.E164
NUMBER_CHARS = frozenset("0123456789+-.() \t")  # a phone number as people write it
_VISUAL = frozenset("-.() \t")  # RFC 3966 visual separators (and the blank people type)
MAX_NUMBER = 64  # characters of a number as written
E164_CACHE = 8192  # (text, country) answers e164 remembers
_STRICT_SEPARATORS = str.maketrans("", "", "-. ")  # RFC 3966 visual separators, blank
_MIN_NSN, _MAX_NSN = 2, 17  # national significant number lengths phonenumbers parses


class NumberError(ValueError):
    """Not a phone number ringcast can dial; the message says why."""


def is_sip_uri(to: str) -> bool:
    return to[:4].lower() == "sip:" or to[:5].lower() == "sips:"


def number_text(to: str) -> str | None:
    """The number a recipient names, as written (``tel:`` and its parameters taken
    off), or None when it is not written as a number (a SIP URI, a name)."""
    text = to.strip()
    if text[:4].lower() == "tel:":
        text = text[4:].split(";", 1)[0]
    if not text or len(text) > MAX_NUMBER or not set(text) <= NUMBER_CHARS:
        return None
    if "+" in text[1:] or not any(c.isdigit() for c in text):
        return None
    return text


def looks_like_number(to: str) -> bool:
    """Syntax only: a ``tel:`` URI or a number as written (what the schema admits)."""
    return not is_sip_uri(to) and number_text(to) is not None


_NO_METADATA = object()
_prefixes: dict[int, Any] = {}  # country code -> its national prefix pattern (or None)
_lengths: dict[tuple[int, int], bool] = {}  # (country code, national length) -> possible


def _national_prefix(cc: int) -> Any:
    """The compiled national prefix pattern of a country code (None: it has none),
    or _NO_METADATA; looked up once per country code."""
    found = _prefixes.get(cc)
    if found is None and cc not in _prefixes:
        region = phonenumbers.region_code_for_country_code(cc)
        meta = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(cc, region)
        if meta is None:
            found = _NO_METADATA
        else:
            prefix = meta.national_prefix_for_parsing
            found = re.compile(prefix) if prefix else None
        _prefixes[cc] = found
    return found


def _possible(cc: int, national: str) -> bool:
    """phonenumbers' own verdict on a national number without a leading zero: for
    such a number it depends on its length alone, so it is asked once per length."""
    key = (cc, len(national))
    verdict = _lengths.get(key)
    if verdict is None:
        number = phonenumbers.PhoneNumber(country_code=cc, national_number=int(national))
        verdict = _lengths[key] = bool(phonenumbers.is_possible_number(number))
    return verdict


def _fast_e164(text: str) -> str | None:
    """The E.164 form of a strict ``+CC...`` number that needs none of parse()'s
    work (see the module doc), else None: phonenumbers.parse decides."""
    if text[:1] != "+":
        return None
    digits = text[1:].translate(_STRICT_SEPARATORS)
    if not (digits.isascii() and digits.isdigit()) or digits[:1] == "0":
        return None
    for size in (1, 2, 3):  # E.164 country codes are prefix-free (ITU-T E.164 §6.2.1)
        cc = int(digits[:size])
        if cc in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    national = digits[size:]
    if not _MIN_NSN <= len(national) <= _MAX_NSN or national[0] == "0":
        return None
    prefix = _national_prefix(cc)
    if prefix is _NO_METADATA or (prefix is not None and prefix.match(national)):
        return None  # a national prefix parse() may strip: its rules decide
    if not _possible(cc, national):
        return None  # refused by parse(), with its message
    return "+" + digits


def e164(text: str, country: str | None = None) -> str:
    """The E.164 form of a number (``+15550100001``), read in `country` (ISO 3166
    alpha-2) when it has no ``+``. NumberError when it is none."""
    return _e164(text, country.upper() if country else None)


@functools.lru_cache(maxsize=E164_CACHE)
def _e164(text: str, country: str | None) -> str:
    if len(text) <= MAX_NUMBER and text[-1:] not in _VISUAL:  # as number_text reads it
        written = text[4:].split(";", 1)[0] if text[:4].lower() == "tel:" else text
        fast = _fast_e164(written)
        if fast is not None:
            return fast
    return _e164_parsed(text, number_text(text), country)


def _e164_parsed(text: str, number: str | None, country: str | None) -> str:
    """:func:`e164` through phonenumbers.parse: every case, and every refusal."""
    if number is None:
        raise NumberError(f"{text!r} is not a phone number")
    region = None
    if not number.startswith("+"):
        if not country:
            raise NumberError(
                f"{text!r} is not in E.164 (+CC...): give a country to read national numbers"
            )
        region = country.upper()
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException as exc:
        raise NumberError(f"{text!r} is not a phone number: {exc._msg}") from None
    if not phonenumbers.is_possible_number(parsed):
        where = region or f"+{parsed.country_code}"
        raise NumberError(f"{text!r} is not a possible phone number in {where}")
    return phonenumbers.format_number(parsed, E164)


def check_country(country: str) -> str:
    """An ISO 3166 alpha-2 code phonenumbers knows (``US``), upper case; ValueError."""
    code = country.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{country!r} is not a country code like US or GB")
    return code


def dial_user(number: str, *, strip: str = "", prefix: str = "") -> str:
    """The Request-URI user part for an E.164 number on a trunk: `strip` removed
    from its start and `prefix` put before it. A rule with a `strip` applies to
    the numbers that start with it only (``strip = "+44"``, ``prefix = "0"``
    dials UK numbers nationally and the rest in E.164)."""
    if not strip:
        return prefix + number
    return prefix + number[len(strip) :] if number.startswith(strip) else number


def _proxy_parts(proxy: str) -> tuple[str, str, list[str]]:
    """(scheme, host[:port], parameters but lr) of a trunk's proxy URI."""
    uri = proxy.strip().strip("<>")
    scheme, _, rest = uri.partition(":")
    rest = rest.split("?", 1)[0]
    hostport, *params = rest.rsplit("@", 1)[-1].split(";")
    kept = [p for p in params if p and p.split("=", 1)[0].lower() not in ("lr", "user")]
    return scheme.lower(), hostport, kept


def request_uri(number: str, trunk: Mapping[str, Any]) -> str:
    """The Request-URI of an E.164 `number` on `trunk` (its config table):
    ``sip:<prefix><number without strip>@<proxy host:port>[;params][;user=phone]``."""
    scheme, hostport, params = _proxy_parts(str(trunk["proxy"]))
    user = dial_user(number, strip=str(trunk.get("strip", "")), prefix=str(trunk.get("prefix", "")))
    if trunk.get("user_phone"):
        params.append("user=phone")
    tail = "".join(f";{p}" for p in params)
    return f"{scheme}:{user}@{hostport}{tail}"


def caller_id(from_: str) -> str | None:
    """The E.164 number of a `from` given as ``+CC...`` (a caller ID), else None."""
    text = from_.strip()
    if not text.startswith("+") or number_text(text) is None:
        return None
    try:
        return e164(text)
    except NumberError:
        return None


def asserted_identity(number: str, trunk: Mapping[str, Any]) -> str:
    """P-Asserted-Identity (RFC 3325) for a caller ID on `trunk`."""
    scheme, hostport, _ = _proxy_parts(str(trunk["proxy"]))
    return f"<{scheme}:{number}@{_host(hostport)}>"


# --- do-not-call entries -----------------------------------------------------------------


def _host(hostport: str) -> str:
    """The lowercase host of `host[:port][;params]` (an IPv6 reference keeps its brackets)."""
    host = hostport.split(";", 1)[0]
    if host.startswith("[") and "]" in host:
        return host[: host.index("]") + 1].lower()
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


def _user_part(text: str) -> tuple[str, bool]:
    """(the user of a sip:/sips: URI, the number of a tel: URI, else the text itself;
    whether it is a host instead: a URI with no user part names its callee by host)."""
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in ("sip", "sips", "tel"):
        return text, False
    if scheme == "tel":
        return rest.split(";", 1)[0], False
    rest = rest.split("?", 1)[0]
    user, at, hostport = rest.rpartition("@")
    if not at:
        return _host(hostport), True
    user = user.split(":", 1)[0]  # a password part is not the user
    return (user.split(";", 1)[0] if user.startswith("+") or user[:1].isdigit() else user), False


def dnc_entry(entry: str, region: str | None = None) -> str:
    """The do-not-call entry of a recipient or of an entry as given: the user part
    of a SIP URI or the number of a ``tel:`` URI; a number with a ``+`` (or read
    in `region`) in E.164, one without keeps its digits; a name matches itself;
    a URI with no user part is its host."""
    part, is_host = _user_part(entry.strip())
    if is_host:
        return part
    user = unquote(part).strip()
    if not set(user) <= NUMBER_CHARS:
        return user  # a name (letters) matches itself
    if not any(c.isdigit() for c in user):
        return ""  # punctuation alone is no entry
    digits = phonenumbers.normalize_digits_only(user)
    if user.startswith("+") or region:
        try:
            number = phonenumbers.parse(user, None if user.startswith("+") else region)
        except phonenumbers.NumberParseException:
            return ("+" if user.startswith("+") else "") + digits
        return phonenumbers.format_number(number, E164)
    return digits
