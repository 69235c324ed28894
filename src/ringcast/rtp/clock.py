"""One pacing clock for every RTP stream of the process.

The clock task wakes every `ptime` against an absolute deadline
(start + n * ptime, never `sleep(ptime)`, so it does not drift) and sends the
due packet of every live stream. Per-call timers and per-call tasks are the
slow path (DESIGN.md, "Media plane"): here the cost per packet is one generator
step and one `send` on a connected non-blocking per-call socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from ringcast.media.codecs import PTIME

log = logging.getLogger(__name__)

LATE_TOLERANCE = 0.005  # seconds after its deadline that a tick counts as late
MAX_CATCH_UP = 0.200  # seconds behind after which missed ticks are skipped, not burst


class ClockStream(Protocol):
    """What the clock needs from a stream (MediaSession implements it).

    `_next()` returns the next packet (or None to skip this tick) and raises
    StopIteration when the stream has nothing more to send; `_send(packet)` puts
    it on the wire (a connected socket's `send` once the peer is known).
    """

    _next: Callable[[], bytes | bytearray | None]
    _send: Callable[[bytes | bytearray], object]
    late_packets: int
    send_errors: int

    def _clock_done(self, completed: bool, error: BaseException | None) -> None: ...


class RtpClock:
    """The process's single 20 ms pacing clock. Create one, `start()` it, share it."""

    def __init__(self, ptime: float = PTIME) -> None:
        if ptime <= 0:
            raise ValueError(f"ptime must be > 0 seconds, not {ptime}")
        self.ptime = ptime
        self._streams: dict[ClockStream, None] = {}
        self._snapshot: tuple[ClockStream, ...] = ()
        self._dirty = False  # streams changed since the snapshot: rebuilt once per tick
        # called half a ptime after each tick (ringcast.rtp.relay reads its sockets again)
        self._half_ticks: dict[Callable[[], None], None] = {}
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0
        self.late_ticks = 0  # ticks that ran more than LATE_TOLERANCE after their deadline
        self.skipped_ticks = 0  # ticks dropped after falling more than MAX_CATCH_UP behind
        self.packets_sent = 0
        self.late_packets = 0  # packets sent by ticks that ran late (all streams)
        self.max_lateness = 0.0  # seconds
        self.srtp_streams = 0  # sessions secured with SRTP (RFC 3711) since start
        self.srtp_auth_failures = 0  # SRTP/SRTCP packets dropped: failed authentication

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def start(self) -> None:
        """Start the clock task on the running loop (idempotent)."""
        if self.running:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="rtp-clock")
        self._task.add_done_callback(self._on_task_done)

    async def stop(self) -> None:
        """Stop the clock; streams still playing end with completed=False."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for stream in list(self._streams):
            self.remove(stream)
            stream._clock_done(False, None)

    def add(self, stream: ClockStream) -> None:
        """Send `stream`'s packets from the next tick on (starts the clock if needed)."""
        self._streams[stream] = None
        self._dirty = True
        self.start()

    def remove(self, stream: ClockStream) -> None:
        if self._streams.pop(stream, 0) is None:
            self._dirty = True

    def add_half_tick(self, hook: Callable[[], None]) -> None:
        """Call `hook` half a ptime after every tick from the next on (not when that
        tick ran so late that the half is past: no catch-up)."""
        self._half_ticks[hook] = None
        self.start()

    def remove_half_tick(self, hook: Callable[[], None]) -> None:
        self._half_ticks.pop(hook, None)

    def send_between_ticks(self, stream: ClockStream, pkt: bytes | bytearray) -> None:
        """Send `stream`'s packet now, out of its tick's turn (a relay leg at the
        half-tick), counted as a tick counts what it sends."""
        try:
            stream._send(pkt)
        except OSError:  # full buffer, or ICMP refused on a connected socket
            stream.send_errors += 1
        self.packets_sent += 1

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("rtp clock stopped: %r", task.exception())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        ptime = self.ptime
        start = loop.time()
        n = 0
        log.info("rtp clock started, ptime %.3f s", ptime)
        while True:
            n += 1
            deadline = start + n * ptime
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)  # let the loop breathe even when behind
            lateness = loop.time() - deadline
            late = lateness > LATE_TOLERANCE
            if late:
                self.late_ticks += 1
                if lateness > self.max_lateness:
                    self.max_lateness = lateness
                if lateness > MAX_CATCH_UP:
                    missed = int(lateness / ptime)
                    n += missed
                    self.skipped_ticks += missed
                    log.warning(
                        "rtp clock %.0f ms behind: skipped %s ticks", lateness * 1e3, missed
                    )
            self.ticks += 1
            self._tick(late)
            if self._half_ticks:
                delay = deadline + ptime / 2 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                    self._half_tick()

    def _half_tick(self) -> None:
        for hook in list(self._half_ticks):
            try:
                hook()
            except Exception:  # one broken hook must not stop the clock
                log.exception("rtp half-tick hook failed")
                self.remove_half_tick(hook)

    def _tick(self, late: bool) -> None:
        if self._dirty:
            self._snapshot = tuple(self._streams)
            self._dirty = False
        sent = 0
        for s in self._snapshot:
            # `f = s.attr; f()`, not `s.attr()`: a plain attribute load specializes (a
            # session's slot), a method-call load of an instance attribute does not
            # (CPython 3.11; PyMember_GetOne was 4 % of a dialer's profile)
            step = s._next
            try:
                pkt = step()
            except StopIteration:
                self.remove(s)
                s._clock_done(True, None)
                continue
            except Exception as exc:  # one broken stream must not stop the others
                log.exception("rtp stream failed")
                self.remove(s)
                s._clock_done(False, exc)
                continue
            if pkt is None:
                continue
            send = s._send
            try:
                send(pkt)
            except OSError:  # full buffer, or ICMP refused on a connected socket
                s.send_errors += 1
            sent += 1
            if late:
                s.late_packets += 1
        if late:
            self.late_packets += sent
        self.packets_sent += sent
