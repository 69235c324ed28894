"""A trunk's TLS settings (RFC 5630 trunks): config keys, start-up loading, the
warning at every start when verification is off, and no key material in logs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tlspeers import Pki

from ringcast.config import Settings
from ringcast.dialer.call import sip_endpoint
from ringcast.dialer.trunk_tls import check_trunk_tls, tls_options
from ringcast.errors import ConfigError
from ringcast.sip.tls import TlsOptions, TlsSetupError, client_context, handshake_reason


def settings_with(tmp_path: Path, trunk: str) -> Settings:
    path = tmp_path / "ringcast.toml"
    path.write_text(f"[trunks.carrier]\nproxy = 'sips:gw.example.com'\n{trunk}")
    return Settings.from_sources({"config_file": str(path)}, env={})


def test_trunk_tls_keys_become_options(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    client = pki.issue("client", client=True)
    settings = settings_with(
        tmp_path,
        f"transport = 'tls'\nca_file = '{pki.ca_file}'\n"
        f"cert_file = '{client.cert}'\nkey_file = '{client.key}'\n",
    )
    trunk = settings.trunks["carrier"]
    assert trunk["transport"] == "tls"
    assert tls_options(trunk) == TlsOptions(str(pki.ca_file), str(client.cert), str(client.key))
    assert tls_options({"proxy": "sip:gw"}) is None  # system CAs, verified
    check_trunk_tls(settings.trunks)  # loads


def test_tls_verify_false_is_logged_at_every_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_with(tmp_path, "tls_verify = false\n")
    assert tls_options(settings.trunks["carrier"]) == TlsOptions(verify=False)
    caplog.set_level(logging.WARNING)
    for _ in range(2):  # each start (sip_endpoint is what serve, dialer and call build)
        sip_endpoint(settings)
    warnings = [r.getMessage() for r in caplog.records if "tls_verify = false" in r.getMessage()]
    assert len(warnings) == 2 and "trunk carrier" in warnings[0]
    assert "NOT verified" in warnings[0]


def test_unloadable_key_fails_the_start_naming_the_trunk_not_the_key(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    client = pki.issue("client", client=True)
    secret = client.key.read_text()
    wrong = tmp_path / "not-a-key.pem"
    wrong.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n")
    settings = settings_with(tmp_path, f"cert_file = '{client.cert}'\nkey_file = '{wrong}'\n")
    with pytest.raises(ConfigError) as err:
        sip_endpoint(settings)
    assert err.value.field == "trunks.carrier"
    assert str(wrong) in err.value.message and "c2VjcmV0" not in err.value.message
    assert secret.splitlines()[1] not in err.value.message


def test_key_file_needs_cert_file(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    with pytest.raises(ConfigError) as err:
        settings_with(tmp_path, f"key_file = '{pki.issue('c').key}'\n")
    assert err.value.field == "trunks.carrier.key_file"
    with pytest.raises(TlsSetupError, match="key_file is set without cert_file"):
        client_context(TlsOptions(key_file=str(pki.issue("d").key)))


def test_contexts_verify_by_default_and_only_off_when_asked(tmp_path: Path) -> None:
    import ssl

    strict = client_context(TlsOptions())
    assert strict.verify_mode is ssl.CERT_REQUIRED and strict.check_hostname
    assert strict.minimum_version is ssl.TLSVersion.TLSv1_2
    loose = client_context(TlsOptions(verify=False))
    assert loose.verify_mode is ssl.CERT_NONE and not loose.check_hostname
    assert client_context(TlsOptions()) is strict  # one context per distinct options


def test_handshake_reasons_are_readable() -> None:
    import ssl

    err = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] ...")
    err.verify_message = "certificate has expired"
    assert handshake_reason(err) == "certificate verify failed: certificate has expired"
    assert handshake_reason(TimeoutError()) == "timed out"
    assert handshake_reason(ConnectionResetError()) == "connection closed by the server"


def test_the_guides_tls_trunk_loads(tmp_path: Path) -> None:
    """docs/guide.md "SIP over TLS": its trunk, with files made here at its paths."""
    import re

    guide = (Path(__file__).parents[2] / "docs" / "guide.md").read_text()
    toml = re.search(r"```toml\n(# ringcast.toml[^`]*?\[trunks\.secure\][^`]*?)```", guide)
    assert toml is not None
    pki = Pki(tmp_path / "pki")
    client = pki.issue("client", client=True)
    text = (
        toml.group(1)
        .replace("/etc/ringcast/carrier-ca.pem", str(pki.ca_file))
        .replace("/etc/ringcast/ringcast-client.pem", str(client.cert))
        .replace("/etc/ringcast/ringcast-client.key", str(client.key))
    )
    path = tmp_path / "ringcast.toml"
    path.write_text(text)
    settings = Settings.from_sources({"config_file": str(path)}, env={})
    options = tls_options(settings.trunks["secure"])
    assert options == TlsOptions(str(pki.ca_file), str(client.cert), str(client.key))
    check_trunk_tls(settings.trunks)
