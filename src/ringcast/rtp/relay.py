"""Two calls' audio relayed both ways through the shared clock (a bridged transfer).

Each direction is a `RelayLeg`: on every tick of the clock it reads what
one session's socket holds (the session lends it: no event-loop callback per
packet) and sends one packet through the other session's socket, 20 ms
apart (re-packetised: our own SSRC, sequence numbers and timestamps, RFC 3550
§7.1 as a translator that changes the stream's timing). Audio older than the
newest waiting packet is dropped, so a source that bunches its packets loses
a frame rather than adding a tick of delay for the rest of the call. When
the two legs negotiated different G.711 laws, every payload is transcoded
through a 256-byte table (ITU-T G.711 µ-law <-> A-law). RFC 4733
events pass through with the target's telephone-event type, their duration
untouched and their timestamp moved to our clock (§2.3.4), none dropped.
Before the source session has latched on its peer it keeps its socket and
hands packets over through its tap instead.

Which lent sockets hold datagrams is asked once for all the relay legs of a
clock (`_Poller`: one level-triggered epoll, Linux), not once per leg: the
first leg to tick in a clock tick polls (`poll(0)`), and a later one when the
last poll is more than `POLL_INTERVAL` old; a poll reads one datagram from
each ready socket and polls again until none is ready (a second datagram
keeps its socket ready). A leg that finds nothing queued at its turn asks
its own socket (FIONREAD), so a datagram that came since the last poll goes
out this tick, as when each leg read its own socket. An empty socket costs
one FIONREAD instead of a recv that raises, a full one a share of a poll
instead of a FIONREAD.

Half a tick after each tick (`RtpClock.add_half_tick`) the poller reads the
lent sockets again and each leg that got audio sends it at once, in its next
tick's slot (that tick then sends nothing for it): a packet waits at most half
a tick in the relay, whatever the far end's phase against the clock, where it
waited up to a whole tick (the added delay's p99 was ~20 ms, the target's
bound, with far ends just after the tick).
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import logging
import select
import socket
import struct
import termios
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ringcast.media.codecs import FRAME_SAMPLES, get_codec
from ringcast.rtp.clock import RtpClock
from ringcast.rtp.packet import RTP_HEADER_SIZE, payload_span
from ringcast.rtp.session import MediaSession

log = logging.getLogger(__name__)

QUEUE_MAX = 8  # packets a direction may hold (RFC 4733 end packets come three at once)
_U32 = 0xFFFFFFFF
_SEQ_TS = struct.Struct("!HI")
_AUDIO, _EVENT = 0, 1
POLL_INTERVAL = 0.0005  # seconds: a leg's tick polls the lent sockets when the last poll is older
READ_ROUNDS = 16  # polls in a row that find datagrams before the rest waits for the next one
_monotonic = time.monotonic
_FIONREAD = termios.FIONREAD
_ioctl = fcntl.ioctl


def transcode_table(src: str, dst: str) -> bytes | None:
    """The `bytes.translate` table from `src` G.711 bytes to `dst` (None: same codec)."""
    a, b = get_codec(src), get_codec(dst)
    if a.name == b.name:
        return None
    return b.encode(a.decode(bytes(range(256))))


@dataclass(frozen=True)
class RelayStats:
    packets: int  # relayed
    dropped: int  # stale audio, a full queue, or an event the target cannot take
    events: int  # RFC 4733 packets among them


class RelayLeg:
    """One direction: `source` hears, `target` sends (a stream of the shared clock).

    Every attribute is read per packet through the instance's inline values: CPython
    3.11 keeps at most 29 attributes inline, past that each access is a dict lookup
    (LOAD_ATTR_WITH_HINT). So a leg has at most 28 (`hear_digits` adds `on_packet`).
    """

    def __init__(
        self, source: MediaSession, target: MediaSession, clock: RtpClock | None = None
    ) -> None:
        self.clock = source._clock if clock is None else clock  # whose ticks read the socket
        self.source = source
        self.target = target
        self.table = transcode_table(source.codec, target.codec)
        self.in_pt = source.payload_type
        self.in_event_pts = frozenset(source._receive_dtmf_pts)
        self.out_pt = target.payload_type
        self.out_event_pt = target.dtmf_payload_type
        self.queue: deque[tuple[int, bytes, int]] = deque()
        self.sock: socket.socket | None = None  # the source's socket, while lent
        self.fd = -1  # its file descriptor, registered with the clock's poller while lent
        self._poller: _Poller | None = None  # while the socket is lent
        # SRTP source: what reads its packets (the tap gets them decrypted already); the
        # target's own send path encrypts what is relayed to it
        self.opener: Callable[[bytes], bytes | None] | None = source.srtp_opener()
        # hears every audio payload read from the source, with its RTP timestamp, in the
        # source's codec (a bridged call's recording, ringcast.media.recorder)
        self.listener: Callable[[bytes, int], None] | None = None
        self.tapped = False  # the source hands packets over (it had not latched yet)
        # the target's own stream goes on: its SSRC (the one its SRTP context keys), its
        # sequence numbers and timestamps, from where its prompts left them (RFC 3550 §5.1)
        ssrc, self.seq, self.ts = target.stream_position()
        self.hdr = bytearray(struct.pack("!BBHII", 0x80, 0, 0, 0, ssrc))
        self.marker = True  # the first packet, and the first after a gap, starts a talkspurt
        self.event_key = -1  # the source timestamp of the event being relayed
        self.event_ts = 0  # its timestamp on our clock
        self.packets = self.dropped = self.events = 0
        # the ClockStream protocol (ringcast.rtp.clock)
        self.late_packets = 0
        self.send_errors = 0
        self._next: Callable[[], bytes | bytearray | None] = self._tick
        # the target's send path, as it is at each tick: set by `_tick` before it returns a
        # packet, so the clock calls it directly (the target may latch, re-key, close)
        self._send: Callable[[bytes | bytearray], object] = target._send

    def put_event(self, payloads: Iterable[bytes], key: int) -> None:
        """Queue telephone-event payloads this leg did not receive (a digit the other
        side sent by SIP INFO) as one event `key`, one payload per tick, after what
        is queued; `key` must differ from every source RTP timestamp (negative)."""
        self.queue.extend((_EVENT, payload, key) for payload in payloads)

    def on_packet(self, data: bytes) -> None:
        """A packet `source` received (its tap): queue its payload for the next tick."""
        if data[0] == 0x80:  # no padding, extension or CSRC (what payload_span would say)
            pos, end = RTP_HEADER_SIZE, len(data)
        else:
            pos, end = payload_span(data)
        if end <= pos:
            return
        pt = data[1] & 0x7F
        if pt == self.in_pt:
            payload = data[pos:end]
            if self.listener is not None:
                self.listener(payload, _SEQ_TS.unpack_from(data, 2)[1])
            if self.table is not None:
                payload = payload.translate(self.table)
            item = (_AUDIO, payload, 0)
        elif pt in self.in_event_pts and end - pos >= 4:
            if self.out_event_pt is None:
                self.dropped += 1  # the target takes no telephone-event
                return
            item = (_EVENT, data[pos : pos + 4], _SEQ_TS.unpack_from(data, 2)[1])
        else:
            return
        queue = self.queue
        if len(queue) >= QUEUE_MAX:
            queue.popleft()
            self.dropped += 1
        queue.append(item)

    def _tick(self) -> bytes | bytearray | None:
        """The packet of this tick (the clock calls it every 20 ms)."""
        poller = self._poller
        if poller is not None:
            # the first leg of a tick polls, and one every POLL_INTERVAL after it
            if poller.tick != self.clock.ticks or _monotonic() - poller.polled > POLL_INTERVAL:
                poller.poll()  # every lent socket's datagrams, into their legs' queues
        elif self.tapped and self.source._connected:
            self.borrow()  # the source has latched since: read its socket from now on
            if self._poller is not None:
                self._poller.poll()
        queue = self.queue
        if not queue and self._poller is not None:  # (a poll may have failed this leg)
            self._read_own()  # nothing polled: what came since the last poll, if anything
        ts = self.ts
        self.ts = (ts + FRAME_SAMPLES) & _U32  # our timestamps follow our clock
        if not queue:
            self.marker = True  # nothing came: the next audio starts a talkspurt
            return None
        while len(queue) > 1 and queue[0][0] == queue[1][0] == _AUDIO:  # stale: newer waits
            queue.popleft()
            self.dropped += 1
        kind, payload, src_ts = queue.popleft()
        hdr = self.hdr
        if kind == _AUDIO:
            hdr[1] = self.out_pt | (0x80 if self.marker else 0)
            self.marker = False
            _SEQ_TS.pack_into(hdr, 2, self.seq, ts)
        else:
            first = src_ts != self.event_key
            if first:
                self.event_key, self.event_ts = src_ts, ts
            hdr[1] = (self.out_event_pt or 0) | (0x80 if first else 0)
            _SEQ_TS.pack_into(hdr, 2, self.seq, self.event_ts)
            self.events += 1
        self.seq = (self.seq + 1) & 0xFFFF
        self.packets += 1
        self._send = self.target._send  # a plain load of the slot (see RtpClock._tick)
        return hdr + payload

    def _send_early(self) -> None:
        """Half a tick after the clock's tick (the poller's half-tick), send what this
        leg would send at the next tick: a relayed packet then waits at most half a
        tick. It takes the next tick's slot (sequence number, timestamp), and that
        tick sends nothing for this leg."""
        pkt = self._tick()
        if pkt is None:
            return
        self._next = self._skip_once
        self.clock.send_between_ticks(self, pkt)

    def _skip_once(self) -> None:
        """The tick after an early send: its slot went out already."""
        self._next = self._tick

    def _read_own(self) -> None:
        """Read this leg's socket at its turn, as each leg did before the poller: a
        datagram that came after the last poll is relayed this tick, not the next.
        FIONREAD (the next datagram's size, 0 when none) rather than a recv that
        fails with EAGAIN and raises (several times the cost)."""
        sock, poller = self.sock, self._poller
        if sock is None or poller is None:
            return
        waiting = poller.waiting
        read = self.on_packet if self.opener is None else self._on_srtp_packet
        try:
            while not _ioctl(self.fd, _FIONREAD, waiting) and waiting[0]:
                read(sock.recv(2048))
        except OSError:  # an ICMP error queued on the socket, or it closed under us
            pass

    def _on_srtp_packet(self, data: bytes) -> None:
        """A packet read from an SRTP source's socket: authenticated and decrypted first
        (RFC 3711), as the source's own reader would; a forged or broken one is dropped."""
        assert self.opener is not None
        opened = self.opener(data) if len(data) >= RTP_HEADER_SIZE else None
        if opened is None:
            self.dropped += 1
            return
        self.on_packet(opened)

    def _clock_done(self, completed: bool, error: BaseException | None) -> None:
        self._unregister()  # off the clock: its socket is read no more (still lent)
        if error is not None:
            log.warning("relay to %s stopped: %s", self.target.local_port, error)

    def _fail(self, error: BaseException) -> None:
        """Reading this leg's packet failed (in the poller, maybe on another leg's tick):
        this leg raises it on its own next tick, and the clock takes it off."""
        self._unregister()

        def failed() -> bytes | None:
            raise error

        self._next = failed

    def _unregister(self) -> None:
        if self._poller is not None:
            _release(self._poller, self)
            self._poller = None

    def stats(self) -> RelayStats:
        return RelayStats(self.packets, self.dropped, self.events)

    def borrow(self) -> None:
        """Read the source's socket on the ticks (once it has latched), else its tap."""
        if self.sock is not None:
            return  # lent already
        self.sock = self.source.lend_socket()
        self.fd = -1 if self.sock is None else self.sock.fileno()
        self.tapped = self.sock is None
        self.source.tap(self.on_packet if self.tapped else None)
        if self.sock is not None and self._poller is None:
            self._poller = _acquire(self.clock, self)

    def give_back(self) -> None:
        self.tapped = False
        self.source.tap(None)
        self._unregister()
        if self.sock is not None:
            self.sock = None
            self.fd = -1
            self.source.take_back()


class _Poller:
    """The lent sockets of one clock's relay legs in one epoll (level-triggered, EPOLLIN):
    one `poll(0)` says which hold datagrams."""

    __slots__ = ("clock", "ep", "fed", "legs", "polled", "tick", "waiting")

    def __init__(self, clock: RtpClock) -> None:
        self.clock = clock
        self.ep = select.epoll()
        self.legs: dict[int, RelayLeg] = {}  # by file descriptor
        self.polled = float("-inf")  # monotonic time of the last poll
        self.tick = -1  # the clock's tick count at the last poll
        self.waiting = array.array("i", [0])  # FIONREAD's answer, for RelayLeg._read_own
        self.fed: list[RelayLeg] | None = None  # during a half-tick: the legs a poll fed

    def add(self, leg: RelayLeg) -> None:
        try:
            self.ep.register(leg.fd, select.EPOLLIN)
        except FileExistsError:  # a closed socket's number, reused (its entry went with it)
            self.ep.modify(leg.fd, select.EPOLLIN)
        self.legs[leg.fd] = leg

    def discard(self, leg: RelayLeg) -> None:
        if self.legs.get(leg.fd) is not leg:
            return  # its socket closed and its number went to another leg's
        del self.legs[leg.fd]
        with contextlib.suppress(OSError):  # closed: the kernel dropped the entry already
            self.ep.unregister(leg.fd)

    def poll(self) -> None:
        """Read every ready socket, one datagram each, until none is ready (or after
        READ_ROUNDS polls): each into its leg's queue."""
        self.polled = _monotonic()
        self.tick = self.clock.ticks
        legs = self.legs
        poll = self.ep.poll
        ready = poll(0)
        rounds = READ_ROUNDS
        while ready:
            for fd, _ in ready:
                leg = legs.get(fd)
                if leg is None:  # gone since this poll (or never ours): never let it spin
                    with contextlib.suppress(OSError, ValueError):  # ValueError: ep closed
                        self.ep.unregister(fd)
                    continue
                try:
                    data = leg.sock.recv(2048)  # type: ignore[union-attr]
                except OSError:  # a spurious wake, or an ICMP error queued on the socket
                    continue
                try:
                    if leg.opener is None:
                        leg.on_packet(data)
                    else:
                        leg._on_srtp_packet(data)
                except OSError:  # ignored, as when the leg read its own socket
                    pass
                except Exception as exc:  # the leg's own tick raises it
                    leg._fail(exc)
                    continue
                if self.fed is not None:
                    self.fed.append(leg)
            rounds -= 1
            if not rounds or not legs:  # no legs left: the epoll is closed
                return
            ready = poll(0)

    def half_tick(self) -> None:
        """Half a tick after the clock's tick: read what came since and send it now
        (each leg's next-tick packet, early), not at the next tick: the relay's added
        delay is then under half a tick, whatever the far ends' phase."""
        if not self.legs:
            return
        fed = self.fed = []
        try:
            self.poll()
        finally:
            self.fed = None
        for leg in dict.fromkeys(fed):  # a leg fed twice sends once
            if leg.queue and leg._next == leg._tick and leg._poller is self:
                try:
                    leg._send_early()
                except Exception as exc:  # the leg's own tick raises it
                    leg._fail(exc)


_pollers: dict[RtpClock, _Poller] = {}  # one per clock with lent sockets, none else


def _acquire(clock: RtpClock, leg: RelayLeg) -> _Poller:
    poller = _pollers.get(clock)
    if poller is None:
        poller = _pollers[clock] = _Poller(clock)
        clock.add_half_tick(poller.half_tick)
    poller.add(leg)
    return poller


def _release(poller: _Poller, leg: RelayLeg) -> None:
    poller.discard(leg)
    if not poller.legs:
        for clock, p in list(_pollers.items()):
            if p is poller:
                del _pollers[clock]
        poller.clock.remove_half_tick(poller.half_tick)
        poller.ep.close()


class Bridge:
    """`a` and `b` relayed both ways on `clock` from `start()` to `stop()`.

    Neither session may play while bridged (the relay is their sender)."""

    def __init__(self, clock: RtpClock, a: MediaSession, b: MediaSession) -> None:
        self.clock = clock
        self.a, self.b = a, b
        self.a_to_b = RelayLeg(a, b, clock)
        self.b_to_a = RelayLeg(b, a, clock)

    def start(self) -> None:
        self.a_to_b.borrow()
        self.b_to_a.borrow()
        self.clock.add(self.a_to_b)
        self.clock.add(self.b_to_a)
        log.info(
            "bridge %s <-> %s: %s/%s",
            self.a.local_port,
            self.b.local_port,
            self.a.codec,
            self.b.codec,
        )

    def stop(self) -> None:
        self.clock.remove(self.a_to_b)
        self.clock.remove(self.b_to_a)
        self.a_to_b.give_back()
        self.b_to_a.give_back()
