"""SIP over TLS (RFC 3261 §26, RFC 5630) through a real TLS proxy: Kamailio with its
TLS module in front of a SIPp callee on UDP.

Certificates are made by the test (tests/tlspeers.py): a CA, a server certificate
for 127.0.0.1 / localhost / sip.ringcast.test, an expired one, a client
certificate, and an unrelated CA. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sipp import SippUas
from tlspeers import KamailioTls, Pki

from ringcast.domain import Outcome
from ringcast.sip import CallSpec, MediaOffer, OutboundCall, SipEndpoint
from ringcast.sip.tls import TlsOptions

pytestmark = pytest.mark.sipp

T1 = 0.05  # seconds: fast timers on loopback
T2 = 0.4
NAME = "sip.ringcast.test"  # a host name the good certificate carries (SNI, RFC 5922)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def spec(uas: SippUas, proxy: str, tls: TlsOptions | None, **kwargs: object) -> CallSpec:
    return CallSpec(
        to=uas.uri("alice"),
        from_="me",
        media=MediaOffer(host="127.0.0.1", port=40000),
        proxy=proxy,
        tls=tls,
        **kwargs,  # type: ignore[arg-type]
    )


def start_uas(tmp_path: Path, scenario: str) -> SippUas:
    uas = SippUas(scenario, tmp_path, max_calls=1)
    try:
        return uas.start()
    except BaseException:
        uas.stop()
        raise


async def new_endpoint(**kwargs: object) -> SipEndpoint:
    ep = SipEndpoint(host="127.0.0.1", port=0, t1=T1, t2=T2, **kwargs)  # type: ignore[arg-type]
    await ep.start()
    return ep


@pytest.mark.parametrize("scheme", ["sips", "sip;transport=tls"])
async def test_call_over_tls_keeps_one_connection_for_the_dialog(
    sipp_bin: str, kamailio_bin: str, tmp_path: Path, pki: Pki, scheme: str
) -> None:
    """INVITE, ACK and our BYE all go over one TLS connection to the proxy, which
    Record-Routed; the callee's answer comes back on it."""
    server = pki.issue("server")
    ep = await new_endpoint()
    uas = start_uas(tmp_path, "uas_answer_rr.xml")
    try:
        with KamailioTls(tmp_path, server) as proxy:
            call = OutboundCall(
                ep, spec(uas, proxy.uri(scheme.split(";")[0]), TlsOptions(ca_file=str(pki.ca_file)))
            )
            assert await call.setup() is True, call.error
            assert ep.tls_connections == 1
            await call.hangup()
            assert call.outcome is Outcome.ANSWERED and call.ended_by == "local"
            await asyncio.wait_for(asyncio.to_thread(uas.wait, 5), 6)
            seen = [r for r in proxy.requests() if r["proto"] == "tls"]
        assert [r["method"] for r in seen] == ["INVITE", "ACK", "BYE"]
        assert len({r["src"] for r in seen}) == 1, seen  # one connection for the dialog
        assert ep.tls_handshake_failures == 0
        assert [m.split(" ", 1)[0] for m in uas.received()] == ["INVITE", "ACK", "BYE"]
    finally:
        uas.stop()
        await ep.close()


async def test_callee_bye_comes_back_over_our_connection(
    sipp_bin: str, kamailio_bin: str, tmp_path: Path, pki: Pki
) -> None:
    """The far end's in-dialog BYE reaches us on the connection we opened (RFC 5923
    alias): ringcast does not listen for TLS, so there is no other way in."""
    server = pki.issue("server")
    ep = await new_endpoint()
    uas = start_uas(tmp_path, "uas_callee_bye_rr.xml")
    try:
        with KamailioTls(tmp_path, server) as proxy:
            call = OutboundCall(ep, spec(uas, proxy.uri(), TlsOptions(ca_file=str(pki.ca_file))))
            assert await call.setup() is True, call.error
            await asyncio.wait_for(call.ended.wait(), 5)
            assert call.ended_by == "remote" and call.outcome is Outcome.ANSWERED
            assert await asyncio.to_thread(uas.wait, 5) == 0  # our 200 to its BYE arrived
        assert ep.tls_connections <= 1
    finally:
        uas.stop()
        await ep.close()


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("wrong-ca", "certificate verify failed: unable to get local issuer certificate"),
        ("expired", "certificate verify failed: certificate has expired"),
        ("wrong-name", "certificate verify failed: IP address mismatch"),
    ],
)
async def test_bad_server_certificate_fails_the_call_naming_why(
    kamailio_bin: str, tmp_path: Path, pki: Pki, case: str, error: str
) -> None:
    """The call fails (outcome failed, no INVITE reaches the proxy's script) with an
    error that says what was wrong with the certificate."""
    other = Pki(tmp_path / "other", "another CA")
    if case == "expired":
        server = pki.issue("expired", expired=True)
    elif case == "wrong-name":
        server = pki.issue("elsewhere", names=("elsewhere.example",))
    else:
        server = pki.issue("server")
    ca = other.ca_file if case == "wrong-ca" else pki.ca_file
    ep = await new_endpoint()
    try:
        with KamailioTls(tmp_path, server) as proxy:
            call = OutboundCall(
                ep,
                CallSpec(
                    to=f"sip:alice@127.0.0.1:{proxy.udp_port}",
                    from_="me",
                    media=MediaOffer(host="127.0.0.1", port=40000),
                    proxy=proxy.uri(),
                    tls=TlsOptions(ca_file=str(ca)),
                ),
            )
            assert await asyncio.wait_for(call.setup(), 10) is False
            assert proxy.requests() == []
        assert call.outcome is Outcome.FAILED and call.local_failure
        assert call.error is not None and error in call.error, call.error
        assert f"127.0.0.1:{proxy.tls_port}" in call.error
        assert ep.tls_handshake_failures == 1
    finally:
        await ep.close()


async def test_verification_off_accepts_any_certificate(
    sipp_bin: str, kamailio_bin: str, tmp_path: Path, pki: Pki
) -> None:
    """tls_verify = false (explicit only): an expired certificate of an unknown CA passes."""
    server = Pki(tmp_path / "other", "another CA").issue("expired", expired=True)
    ep = await new_endpoint()
    uas = start_uas(tmp_path, "uas_answer_rr.xml")
    try:
        with KamailioTls(tmp_path, server) as proxy:
            call = OutboundCall(ep, spec(uas, proxy.uri(), TlsOptions(verify=False)))
            assert await call.setup() is True, call.error
            await call.hangup()
    finally:
        uas.stop()
        await ep.close()


async def test_failed_handshake_fails_over_to_the_next_server(
    sipp_bin: str, kamailio_bin: str, tmp_path: Path, pki: Pki
) -> None:
    """RFC 3263 §4.3: the name's first server shows an expired certificate (a
    transport failure), so the same INVITE goes to the second, which answers. The
    certificate is checked against the URI's host name, also sent as SNI."""
    expired = pki.issue("expired", names=(NAME,), expired=True)
    good = pki.issue("good", names=(NAME,))
    uas = start_uas(tmp_path, "uas_answer_rr.xml")
    with KamailioTls(tmp_path, expired) as bad_proxy, KamailioTls(tmp_path, good) as proxy:
        servers = [("127.0.0.1", bad_proxy.tls_port), ("127.0.0.1", proxy.tls_port)]
        asked: list[tuple[str, int | None, str]] = []

        async def locator(host: str, port: int | None, transport: str) -> list[tuple[str, int]]:
            asked.append((host, port, transport))
            return servers

        ep = await new_endpoint(locator=locator)
        try:
            call = OutboundCall(ep, spec(uas, f"sips:{NAME}", TlsOptions(ca_file=str(pki.ca_file))))
            assert await call.setup() is True, (call.status_code, call.error)
            await call.hangup()
            await asyncio.wait_for(asyncio.to_thread(uas.wait, 5), 6)
        finally:
            uas.stop()
            await ep.close()
        assert asked == [(NAME, None, "tls")]
        assert ep.tls_handshake_failures == 1
        assert bad_proxy.requests() == []
        invite = proxy.requests()[0]
        assert (invite["method"], invite["sni"]) == ("INVITE", NAME)


async def test_mutual_tls_presents_the_client_certificate(
    sipp_bin: str, kamailio_bin: str, tmp_path: Path, pki: Pki
) -> None:
    """A proxy that demands a client certificate: refused without one (the error
    names the handshake), accepted with cert_file and key_file."""
    server = pki.issue("server")
    client = pki.issue("client", names=("ringcast.test",), client=True)
    ep = await new_endpoint()
    uas = start_uas(tmp_path, "uas_answer_rr.xml")
    try:
        with KamailioTls(tmp_path, server, client_ca=pki.ca_file) as proxy:
            plain = OutboundCall(ep, spec(uas, proxy.uri(), TlsOptions(ca_file=str(pki.ca_file))))
            assert await asyncio.wait_for(plain.setup(), 10) is False
            assert plain.error is not None and "TLS" in plain.error, plain.error
            options = TlsOptions(
                ca_file=str(pki.ca_file), cert_file=str(client.cert), key_file=str(client.key)
            )
            call = OutboundCall(ep, spec(uas, proxy.uri(), options))
            assert await call.setup() is True, call.error
            await call.hangup()
            assert [r["method"] for r in proxy.requests()] == ["INVITE", "ACK", "BYE"]
    finally:
        uas.stop()
        await ep.close()
