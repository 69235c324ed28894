"""Even RTP ports from a configured range; RTCP uses port + 1 (RFC 3550 §11)."""

from __future__ import annotations

import logging
import random

log = logging.getLogger(__name__)


class PortAllocator:
    """Hands out even ports in [lo, hi] round-robin, so a freed port is reused last.

    The allocator only books ports; the caller binds them and gives back (with
    `release`) a port it could not bind because another process holds it.

    The round starts at a random even port of the range unless `start` is given:
    processes sharing a range (several dialers on one host, `ringcast call` beside
    a server) would otherwise all begin at its bottom and try the same ports,
    which the first of them holds, before finding a free pair.
    """

    def __init__(self, lo: int = 20000, hi: int = 29999, *, start: int | None = None) -> None:
        first = lo + (lo % 2)
        last = hi - 1 if hi % 2 else hi - 2  # the last even port whose port+1 fits
        if not (0 < first <= last and hi <= 65535):
            raise ValueError(f"RTP port range {lo}-{hi} holds no even port with port+1")
        self.lo = first
        self.hi = last
        self._used: set[int] = set()
        self.capacity = (self.hi - self.lo) // 2 + 1
        if start is None:
            start = self.lo + 2 * random.randrange(self.capacity)
        elif not (self.lo <= start <= self.hi and start % 2 == 0):
            raise ValueError(f"RTP start port {start} is not an even port of {lo}-{hi}")
        self._next = start

    @property
    def in_use(self) -> int:
        return len(self._used)

    def allocate(self) -> int:
        """The next free even port; RuntimeError when the range is exhausted."""
        for _ in range(self.capacity):
            port = self._next
            self._next = port + 2 if port + 2 <= self.hi else self.lo
            if port not in self._used:
                self._used.add(port)
                return port
        raise RuntimeError(f"no free RTP port in {self.lo}-{self.hi + 1}")

    def release(self, port: int) -> None:
        self._used.discard(port)

    def busy(self, port: int) -> None:
        """`port` could not be bound: another process holds it. Give it back and go
        on from a random even port of the range: the other process took its ports in
        order too, so the ports after this one are likely held as well, and trying
        them one by one would spend every attempt of a caller on one held block
        (seen as 'no bindable RTP port pair' beside a busy process on the range)."""
        self._used.discard(port)
        self._next = self.lo + 2 * random.randrange(self.capacity)
