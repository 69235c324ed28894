"""A trunk's TLS settings (RFC 5630 trunks): what the SIP layer takes, checked at start.

``ca_file``, ``cert_file``, ``key_file`` (paths) and ``tls_verify`` of a
``[trunks.NAME]`` table become one :class:`~ringcast.sip.tls.TlsOptions`. At
every start the files are loaded (a file OpenSSL refuses fails the start,
naming the trunk), and each trunk with ``tls_verify = false`` is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ringcast.errors import ConfigError
from ringcast.sip.tls import TlsOptions, TlsSetupError, check_options

log = logging.getLogger(__name__)


def tls_options(sip: Mapping[str, Any]) -> TlsOptions | None:
    """A trunk's TLS settings (``ca_file``, ``cert_file``, ``key_file``, ``tls_verify``)
    as the SIP layer takes them; None when it has none (system CAs, verified)."""
    if not any(k in sip for k in ("ca_file", "cert_file", "key_file", "tls_verify")):
        return None
    return TlsOptions(
        ca_file=sip.get("ca_file"),
        cert_file=sip.get("cert_file"),
        key_file=sip.get("key_file"),
        verify=sip.get("tls_verify") is not False,
    )


def check_trunk_tls(trunks: Mapping[str, Mapping[str, Any]]) -> None:
    """Load every trunk's CA file and client certificate now (ConfigError naming the
    trunk and file otherwise), and warn, at every start, of each trunk whose TLS
    server certificate is not verified (``tls_verify = false``)."""
    for name, trunk in trunks.items():
        options = tls_options(trunk)
        if options is None:
            continue
        try:
            check_options(options)
        except TlsSetupError as exc:
            raise ConfigError(f"trunks.{name}: {exc}", field=f"trunks.{name}") from None
        if not options.verify:
            log.warning(
                "trunk %s: tls_verify = false: its TLS server certificate and name are NOT "
                "verified (anyone on the path can read and change its calls)",
                name,
            )
