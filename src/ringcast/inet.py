"""IP addresses and address families, shared by the settings, SIP and RTP.

Pure functions, no sockets. How hosts are written: an IPv6 literal goes in
brackets wherever a port may follow it (RFC 3261 §25 ``IPv6reference``, RFC
5954 §4.1: ``sip:alice@[2001:db8::10]:5060``, ``--sip [::]:5060``) and bare
in SDP (RFC 4566 §5.7 ``c=IN IP6 ::1``). A dual-stack socket (an IPv6 socket
bound to ``::`` with ``IPV6_V6ONLY`` off) sees IPv4 peers as v4-mapped IPv6
addresses (RFC 4291 §2.5.5.2, ``::ffff:127.0.0.1``): :func:`v4_mapped` and
:func:`unmapped` translate at the socket, so everything above it keeps
speaking plain IPv4.
"""

from __future__ import annotations

import functools
import ipaddress

IPV4 = 4
IPV6 = 6
WILDCARDS = {"0.0.0.0": (IPV4,), "::": (IPV4, IPV6), "": (IPV4,)}  # bind host -> families


@functools.lru_cache(maxsize=4096)
def ip_version(host: str) -> int | None:
    """4 or 6 for an IP literal (brackets and an IPv6 zone allowed), None for a name."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text.split("%", 1)[0]).version
    except ValueError:
        return None


def bracket(host: str) -> str:
    """``host`` as it is written before ``:port`` or in a URI: IPv6 in brackets."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def hostport(host: str, port: int) -> str:
    """``host:port``, ``[v6]:port`` for an IPv6 host."""
    return f"{bracket(host)}:{port}"


def split_host_port(text: str) -> tuple[str, int | None]:
    """``HOST``, ``HOST:PORT``, ``[IPv6]`` or ``[IPv6]:PORT`` -> (host without
    brackets, port or None). ValueError with the reason otherwise; an IPv6
    address with a port must be in brackets (``::1:5060`` is itself an address)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or ip_version(host) != IPV6:
            raise ValueError(f"{text!r}: brackets hold an IPv6 address, like [::1]:5060")
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected :PORT after ]")
        return host, _port(text, rest[1:])
    if text.count(":") > 1:
        if ip_version(text) == IPV6:
            return text, None
        raise ValueError(f"{text!r}: put an IPv6 address in brackets, like [::1]:5060")
    host, sep, digits = text.partition(":")
    if not host:
        raise ValueError(f"{text!r}: no host")
    return host, _port(text, digits) if sep else None


def _port(text: str, digits: str) -> int:
    if not digits.isdigit() or not 0 <= int(digits) <= 65535:
        raise ValueError(f"{text!r}: the port must be 0..65535")
    return int(digits)


def bind_families(host: str) -> tuple[int, ...]:
    """The families a socket bound to ``host`` reaches: ``::`` is dual stack
    (IPv4 and IPv6), ``0.0.0.0`` and IPv4 addresses IPv4, IPv6 ones IPv6. A host
    name counts as IPv4 (it is bound as such)."""
    if host in WILDCARDS:
        return WILDCARDS[host]
    return (IPV6,) if ip_version(host) == IPV6 else (IPV4,)


def v4_mapped(host: str) -> str:
    """An IPv4 address as a dual-stack IPv6 socket sends to it (``::ffff:a.b.c.d``)."""
    return f"::ffff:{host}" if ip_version(host) == IPV4 else host


def unmapped(host: str) -> str:
    """A v4-mapped IPv6 address back as plain IPv4; any other host unchanged."""
    if host[:7].lower() == "::ffff:" and "." in host:
        return host[7:]
    return host


def same_ip(a: str, b: str) -> bool:
    """Whether two literals name one address (``::1`` == ``0:0::1``, v4-mapped == IPv4)."""
    if a == b:
        return True
    try:
        return ipaddress.ip_address(unmapped(a)) == ipaddress.ip_address(unmapped(b))
    except ValueError:
        return False


def canonical_ip(host: str) -> str:
    """An IP literal in its one written form (compressed, lower case, unmapped);
    anything else unchanged."""
    try:
        return str(ipaddress.ip_address(unmapped(host.strip("[]"))))
    except ValueError:
        return host


def public_ips(text: str) -> dict[int, str]:
    """``--public-ip``: one address, or one IPv4 and one IPv6 comma-separated
    (``203.0.113.5,2001:db8::5``) -> {4: ..., 6: ...}. ValueError otherwise."""
    out: dict[int, str] = {}
    for item in (part.strip() for part in text.split(",")):
        version = ip_version(item)
        if version is None or item.startswith("["):
            raise ValueError(f"{item!r} is not an IP address")
        if version in out:
            raise ValueError(f"two IPv{version} addresses ({out[version]}, {item}): one per family")
        out[version] = canonical_ip(item)
    return out
