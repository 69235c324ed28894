"""Process-wide things a call uses (the SIP endpoint, the RTP clock and ports), made
once from the settings, and the checks that fail at start in one line."""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ringcast import sealing
from ringcast.config import Settings
from ringcast.dialer.trunk_tls import check_trunk_tls
from ringcast.errors import RingcastError
from ringcast.inet import IPV6, bind_families, hostport
from ringcast.media.fetch import MediaFetcher
from ringcast.rtp import PortAllocator, RtpClock
from ringcast.sealing import Sealer
from ringcast.sip.crypto_sdp import stricter
from ringcast.sip.endpoint import SipEndpoint
from ringcast.sip.transport import family_socket
from ringcast.trunks import CARRIER_KEYS

log = logging.getLogger(__name__)


@dataclass
class CallContext:
    """Process-wide things a call uses: the SIP endpoint and the media plane."""

    sip: SipEndpoint
    clock: RtpClock
    ports: PortAllocator
    rtp_bind_host: str = "0.0.0.0"
    public_ip: str | None = None


def rtp_bind_host(settings: Settings) -> str:
    """Where RTP sockets bind: ``::`` (dual stack, a callee of either family)
    when SIP listens on IPv6, else ``0.0.0.0`` as ever."""
    return "::" if IPV6 in bind_families(settings.sip_host) else "0.0.0.0"


def check_addresses(settings: Settings) -> None:
    """Fail at start, in one line, when SIP or RTP cannot bind where the settings
    say (an address this host does not have, a family it lacks, a port in use):
    a RingcastError naming the flag, before anything else starts."""
    host, port = settings.sip_host, settings.sip_port
    kinds = [("udp", socket.SOCK_DGRAM)]
    if settings.sip_transport == "tcp":
        kinds.append(("tcp", socket.SOCK_STREAM))
    rtp = rtp_bind_host(settings)
    checks = [(f"--sip {hostport(host, port)} ({name})", host, port, kind) for name, kind in kinds]
    checks.append((f"RTP on {hostport(rtp, 0)}", rtp, 0, socket.SOCK_DGRAM))
    for what, bind_host, bind_port, kind in checks:
        try:
            with family_socket(bind_host, kind) as sock:
                sock.bind((bind_host, bind_port))
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise RingcastError(f"cannot listen for {what}: {why}") from None


def sip_endpoint(settings: Settings) -> SipEndpoint:
    """The process's SIP endpoint, as the settings say (`--sip`, `--public-ip`, T1/T2).

    The trunks' TLS files are loaded first (:func:`check_trunk_tls`)."""
    check_trunk_tls(settings.trunks)
    return SipEndpoint(
        host=settings.sip_host,
        port=settings.sip_port,
        transport=settings.sip_transport,
        public_ip=settings.public_ip,
        t1=settings.sip_t1,
        t2=settings.sip_t2,
        flood_rate=settings.sip_flood_rate or None,
        flood_burst=settings.sip_flood_burst,
        flood_total_rate=settings.sip_flood_total_rate or None,
        silent_invites=settings.sip_silent_invites,
        user_agent=settings.sip_user_agent,
        identify_to_strangers=settings.sip_identify_to_strangers,
        dns_server=settings.dns_nameserver,
    )


class TrunkGone(RingcastError):
    """The request's trunk is no longer in the config file."""


def resolve_sip(
    stored: Mapping[str, Any] | None, trunks: Mapping[str, Mapping[str, Any]], sealer: Sealer | None
) -> dict[str, Any]:
    """How to route one call, at dial time: the request's stored "sip" with its sealed
    password opened, over its trunk as the config says now (the trunk's headers
    under the request's own). TrunkGone when the trunk was removed: such a call
    is never sent around the carrier."""
    sip = sealing.unseal_sip(stored or {}, sealer)
    name = sip.pop("trunk", None)
    if not name:
        return sip
    trunk = trunks.get(name)
    if trunk is None:
        raise TrunkGone(f"trunk {name!r} is not in the config file any more")
    headers = {**dict(trunk.get("headers") or {}), **dict(sip.get("headers") or {})}
    out = {
        k: v
        for k, v in trunk.items()
        if k not in ("headers", "max_calls", "cps") and k not in CARRIER_KEYS
    }
    out.update(sip)
    if trunk.get("srtp") or sip.get("srtp"):  # a trunk's "required" holds over a request
        out["srtp"] = stricter(trunk.get("srtp"), sip.get("srtp"))
    if headers:
        out["headers"] = headers
    return out


def media_fetcher(settings: Settings) -> MediaFetcher:
    """The media fetcher with the settings' cache and SSRF policy."""
    return MediaFetcher(
        cache_dir=settings.media_cache_dir,
        allow_private=settings.allow_private_urls,
        allow_networks=settings.private_url_allowlist,  # SSRF guard CIDR allowlist
    )


def sdp_address(ctx: CallContext) -> str:
    """The address written into our SDP: `--public-ip`, else the RTP bind
    address if it is a specific one, else "0.0.0.0", which the SIP layer
    replaces with the local address it uses toward the callee (cached there)."""
    if ctx.public_ip and "," not in ctx.public_ip:
        return ctx.public_ip  # one per family: the SIP layer picks the callee's
    if ctx.rtp_bind_host in ("", "::", "0.0.0.0"):
        return "0.0.0.0"
    return ctx.rtp_bind_host
