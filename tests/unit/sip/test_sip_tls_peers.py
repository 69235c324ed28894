"""Which name and TLS settings a TLS destination is checked with (no network)."""

from __future__ import annotations

from ringcast.sip import SipEndpoint
from ringcast.sip.tls import TlsOptions, TlsPeer


async def test_locate_names_the_uri_host_and_the_calls_settings() -> None:
    """RFC 5922 §7: the certificate must name the URI's host; a dialog's next hop
    met later by IP keeps the settings (and connection) of the first."""
    ep = SipEndpoint(host="127.0.0.1", port=0)
    await ep.start()
    try:
        trunk = TlsOptions(ca_file="/etc/ringcast/ca.pem")
        [dest] = await ep.locate("sips:alice@127.0.0.1:5071", tls=trunk)
        assert (dest.host, dest.port, dest.transport) == ("127.0.0.1", 5071, "tls")
        assert ep._tls.peer(dest.addr) == TlsPeer("127.0.0.1", trunk)
        hop = ep.resolve_now("sip:127.0.0.1:5071;transport=tls;lr", tls=None)
        assert hop is not None and hop.transport == "tls"
        assert ep._tls.peer(dest.addr) == TlsPeer("127.0.0.1", trunk)  # kept
        other = ep.resolve_now("sips:127.0.0.1:5072;lr", tls=trunk)
        assert other is not None and ep._tls.peer(other.addr) == TlsPeer("127.0.0.1", trunk)
        assert ep.resolve_now("sips:127.0.0.1") is not None
        assert ep._tls.peer(("127.0.0.1", 5061)) == TlsPeer("127.0.0.1")  # system CAs
        assert ep.contact_for(dest, "me") == f"<sips:me@127.0.0.1:{ep.local_port}>"
        assert ";alias;" in ep.via_for(dest, "z9hG4bKx")  # RFC 5923
    finally:
        await ep.close()
