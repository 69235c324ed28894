"""A real DNS server on 127.0.0.1 for the RFC 3263 tests (dnslib's UDP server).

`ZoneServer` answers from a zone the test sets (master-file text), logs every
question it was asked, and refuses to serve an address record that is not a
loopback address, so no test can send ringcast anywhere but this machine.
"""

from __future__ import annotations

import ipaddress
import threading
from types import TracebackType

from dnslib import QTYPE, RCODE, RR, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer


class _Zone(BaseResolver):  # type: ignore[misc]
    def __init__(self) -> None:
        self.records: list[RR] = []
        self.queries: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        qname = str(request.q.qname).lower()
        with self.lock:
            self.queries.append((qname, QTYPE[request.q.qtype]))
            records = list(self.records)
        for rr in records:
            if str(rr.rname).lower() == qname and rr.rtype == request.q.qtype:
                reply.add_answer(rr)
        if not reply.rr and all(str(rr.rname).lower() != qname for rr in records):
            reply.header.rcode = RCODE.NXDOMAIN  # the name does not exist (else NODATA)
        return reply


class ZoneServer:
    """A DNS server on 127.0.0.1 (a free UDP port) answering from :meth:`set`'s zone."""

    def __init__(self) -> None:
        self._zone = _Zone()
        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        self._server = DNSServer(self._zone, address="127.0.0.1", port=0, logger=quiet)
        self.port: int = self._server.server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def setting(self) -> str:
        """The value of RINGCAST_DNS_SERVER that points at this server."""
        return f"127.0.0.1:{self.port}"

    def set(self, zone: str) -> None:
        """Serve these records (master-file lines with absolute names) from now on."""
        records = RR.fromZone(zone)
        for rr in records:
            if rr.rtype in (QTYPE.A, QTYPE.AAAA):
                address = ipaddress.ip_address(str(rr.rdata))
                if not address.is_loopback:
                    raise ValueError(f"only loopback addresses in test zones, not {address}")
        with self._zone.lock:
            self._zone.records = records
            self._zone.queries.clear()

    @property
    def queries(self) -> list[tuple[str, str]]:
        """(name, type) of every question asked since the last :meth:`set`, in order."""
        with self._zone.lock:
            return list(self._zone.queries)

    def start(self) -> ZoneServer:
        self._thread = threading.Thread(
            target=self._server.server.serve_forever, name="test-dns", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server.server_close()

    def __enter__(self) -> ZoneServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
