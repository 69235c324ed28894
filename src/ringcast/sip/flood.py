"""The flood gate: what strangers' requests may cost before they are even parsed.

Token buckets, one per source IP (``rate`` requests/s sustained, ``burst`` at
once) and one for all sources together (``total_rate``), so a flood from
thousands of spoofed addresses is bounded as well as one from a single host.
Requests over either budget are dropped unanswered and counted; warnings are
rate-limited. Responses, and requests carrying the Call-ID of one of our
calls, are never limited (:func:`exempt`).
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Container

logger = logging.getLogger(__name__)

FLOOD_RATE = 50.0  # requests per second per source IP, sustained
FLOOD_BURST = 100  # requests a source may send at once before the rate applies
FLOOD_TOTAL_RATE = 200.0  # requests per second from all sources together
FLOOD_LOG_WINDOW = 10.0  # seconds between two flood warnings about one source
FLOOD_TABLE_SIZE = 10_000  # sources tracked at once; the least recently seen is forgotten
_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:([^\r\n]*)", re.I | re.M)  # raw, before parsing


def exempt(data: bytes, call_ids: Container[str]) -> bool:
    """Never rate-limited: responses, and anything carrying one of ``call_ids``.

    Checked on the raw bytes, before parsing, so a flood costs no parse (and
    no parser warnings); a carrier that sends both calls and a flood cannot
    starve the BYEs and re-INVITEs of live calls.
    """
    if data.startswith(b"SIP/2.0 "):
        return True
    found = _CALL_ID.search(data)
    return found is not None and found.group(1).decode("latin-1").strip() in call_ids


class _Bucket:
    """One token bucket and its flood-log bookkeeping."""

    __slots__ = ("tokens", "stamp", "dropped", "warned_at")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp  # time.monotonic() of the last refill
        self.dropped = 0  # since the last warning
        self.warned_at: float | None = None

    def take(self, now: float, rate: float, burst: float) -> bool:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(burst, self.tokens + elapsed * rate)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.dropped += 1
        return False

    def should_warn(self, now: float) -> bool:
        """True at most once per :data:`FLOOD_LOG_WINDOW` (then the count restarts)."""
        return self.warned_at is None or now - self.warned_at >= FLOOD_LOG_WINDOW

    def warned(self, now: float) -> None:
        self.dropped = 0
        self.warned_at = now


class FloodGate:
    """Per-source and global token buckets (see the module docstring).

    :meth:`admit` is O(1): one dict lookup, an LRU move and two refills. The
    table holds at most ``size`` sources (least recently seen forgotten), so
    spoofed source addresses cost bounded memory. ``total_rate=None`` leaves
    out the global budget; its burst is one second's worth (at least ``burst``).
    """

    __slots__ = (
        "rate",
        "burst",
        "total_rate",
        "total_burst",
        "size",
        "dropped",
        "dropped_total",
        "_buckets",
        "_total",
        "_clock",
    )

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        total_rate: float | None = None,
        size: int = FLOOD_TABLE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"flood_rate must be > 0, not {rate!r}")
        if burst < 1:
            raise ValueError(f"flood_burst must be >= 1, not {burst!r}")
        if total_rate is not None and not total_rate > 0:
            raise ValueError(f"flood_total_rate must be > 0, not {total_rate!r}")
        if size < 1:
            raise ValueError(f"flood table size must be >= 1, not {size!r}")
        self.rate = rate
        self.burst = burst
        self.total_rate = total_rate
        self.total_burst = max(float(burst), total_rate or 0.0)
        self.size = size
        self.dropped = 0  # every request dropped, by either budget
        self.dropped_total = 0  # of which by the global budget
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._clock = clock
        self._total = _Bucket(self.total_burst, clock())

    def __len__(self) -> int:
        return len(self._buckets)

    def admit(self, source: str) -> bool:
        """Take a token from ``source``'s bucket, then from the global one.

        False (and counted) when either is empty; the source's budget is
        checked first, so one loud source cannot spend the others' share.
        """
        now = self._clock()
        buckets = self._buckets
        bucket = buckets.get(source)
        if bucket is None:
            if len(buckets) >= self.size:
                buckets.popitem(last=False)
            bucket = buckets[source] = _Bucket(float(self.burst), now)
        else:
            buckets.move_to_end(source)
        if not bucket.take(now, self.rate, self.burst):
            self.dropped += 1
            if bucket.should_warn(now):
                logger.warning(
                    "SIP flood from %s: dropped %s requests unanswered since the last warning"
                    " (limit %s/s, burst %s)",
                    source,
                    bucket.dropped,
                    self.rate,
                    self.burst,
                )
                bucket.warned(now)
            return False
        if self.total_rate is None:
            return True
        total = self._total
        if total.take(now, self.total_rate, self.total_burst):
            return True
        self.dropped += 1
        self.dropped_total += 1
        if total.should_warn(now):
            logger.warning(
                "SIP flood: dropped %s requests unanswered since the last warning"
                " (limit %s/s from all sources together; %s sources seen lately)",
                total.dropped,
                self.total_rate,
                len(buckets),
            )
            total.warned(now)
        return False
