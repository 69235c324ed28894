"""TLS for the SIP-over-TLS tests: certificates made here, Kamailio as a TLS proxy.

:class:`Pki` makes a CA, server certificates for 127.0.0.1 / localhost (and
any names asked, e.g. ``sip.ringcast.test``), an expired one, a client
certificate, and a second, unrelated CA: PEM files in the test's tmp dir,
made with ``cryptography``. :class:`KamailioTls` runs Kamailio with its TLS
module (Debian ``kamailio-tls-modules``): it listens on ``tls:127.0.0.1`` and
``udp:127.0.0.1`` only, takes ``sip.ringcast.test`` as its own name,
Record-Routes, relays to the Request-URI (a SIPp callee over UDP), accepts
RFC 5923 Via aliases (so the callee's requests come back over ringcast's own
connection), and logs every request with its protocol, source and the SNI
name it was given.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from conftest import free_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from peers import (
    KAMAILIO_MODULES,
    PROXY_IN_DIALOG,
    PROXY_RELAY,
    _KamailioProcess,
    kamailio_cfg,
)

TLS_MODULE = Path(KAMAILIO_MODULES) / "tls.so"
DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


class Pki:
    """A CA and the certificates it issues, written under ``root``."""

    def __init__(self, root: Path, name: str = "ringcast test CA") -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._name = subject
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - DAY)
            .not_valid_after(now + 30 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = root / "ca.pem"
        self.ca_file.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        stem: str,
        *,
        names: tuple[str, ...] = ("localhost", "127.0.0.1"),
        expired: bool = False,
        client: bool = False,
    ) -> Issued:
        """A leaf certificate for ``names`` (DNS names and IP addresses)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        if expired:
            begin, end = now - 30 * DAY, now - DAY
        else:
            begin, end = now - DAY, now + 30 * DAY
        sans: list[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(begin)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        issued = Issued(self.root / f"{stem}.pem", self.root / f"{stem}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        os.chmod(issued.key, 0o600)
        return issued


def tls_proxy_cfg(udp_port: int, tls_port: int, tls_cfg: Path, children: int) -> str:
    """The TLS proxy of :class:`KamailioTls`."""
    log_in = """    if ($pr == "tls") {
        xlog("L_NOTICE",
             "RCLOG in method=$rm proto=$pr src=$si:$sp sni=$tls_peer_server_name\\n");
    } else {
        xlog("L_NOTICE", "RCLOG in method=$rm proto=$pr src=$si:$sp callid=$ci\\n");
    }
"""
    return kamailio_cfg(
        """Generated by tests/tlspeers.py: a TLS proxy on 127.0.0.1 only. It Record-Routes,
relays to the Request-URI, accepts RFC 5923 Via aliases, and logs each request.""",
        globals_=[
            "enable_tls=yes",
            "tcp_accept_aliases=yes",
            'alias="sip.ringcast.test"',
            f"listen=udp:127.0.0.1:{udp_port}",
            f"listen=tls:127.0.0.1:{tls_port}",
        ],
        load_first=("tls",),
        modules=("rr",),
        modparams=[
            f'modparam("tls", "config", "{tls_cfg}")',
            'modparam("rr", "append_fromtag", 1)',
        ],
        route=log_in + PROXY_IN_DIALOG + PROXY_RELAY % "",
        children=children,
    )


TLS_CFG = """[server:default]
method = TLSv1.2+
verify_certificate = {verify}
require_certificate = {verify}
private_key = {key}
certificate = {cert}
{ca_list}

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
"""


class KamailioTls(_KamailioProcess):
    """Kamailio with ``listen=tls:127.0.0.1:PORT``, presenting ``server``.

    ``client_ca``: demand a client certificate issued by that CA (mutual TLS).
    ``shm_mb``: Kamailio's shared memory (transactions, TLS sessions): the
    benchmark's thousands of calls need more than a test's few.
    """

    name = "kamailio-tls"

    def __init__(
        self,
        workdir: Path,
        server: Issued,
        *,
        client_ca: Path | None = None,
        shm_mb: int = 32,
        children: int = 2,
    ) -> None:
        self.shm_mb = shm_mb
        self.root = workdir / f"kamailio-tls-{free_port()}"
        self.root.mkdir()
        super().__init__(self.root)
        self.tls_port = free_port(socket.SOCK_STREAM)
        self.udp_port = free_port()
        tls_cfg = self.root / "tls.cfg"
        tls_cfg.write_text(
            TLS_CFG.format(
                verify="yes" if client_ca else "no",
                key=server.key,
                cert=server.cert,
                ca_list=f"ca_list = {client_ca}" if client_ca else "",
            )
        )
        self.cfg = self.root / "kamailio.cfg"
        self.cfg.write_text(tls_proxy_cfg(self.udp_port, self.tls_port, tls_cfg, children))

    def uri(self, scheme: str = "sips") -> str:
        if scheme == "sips":
            return f"sips:127.0.0.1:{self.tls_port}"
        return f"sip:127.0.0.1:{self.tls_port};transport=tls"

    def start(self) -> KamailioTls:
        if not TLS_MODULE.exists():
            raise RuntimeError(f"{TLS_MODULE} is missing (Debian package kamailio-tls-modules)")
        self._start_kamailio(self.tls_port)
        return self

    def __enter__(self) -> KamailioTls:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests(self) -> list[dict[str, str]]:
        """Every request the script saw: {method, proto, src, sni?, callid}, in order."""
        return [
            dict(re.findall(r"(\w+)=(\S*)", rest)) for what, rest in self.rclog() if what == "in"
        ]
