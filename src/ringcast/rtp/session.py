"""One call's media: an RTP/RTCP port pair, the outgoing stream, received DTMF.

`MediaSession.open()` binds the port pair before the INVITE (the SDP offer
names it); `start()` takes the SDP answer's address, payload type, codec and
telephone-event type; `play(prompt)` streams a prepared `Prompt` through the
shared `RtpClock` and returns the digits the callee pressed. The session owns
the call's sockets, counters and state; its two halves live in their own
modules: :mod:`ringcast.rtp.sender` (the prompt's packets on the clock's
ticks, RTCP) and :mod:`ringcast.rtp.receiver` (latching, digits, audio).

While the callee holds the call (`pause(True)`, from an SDP sendonly/inactive
or c=0.0.0.0, RFC 3264 §8.4) nothing is sent and the prompt stands still: a
broadcast wants its message heard in full, so it resumes where it stopped
once the callee takes the call back (the call's max_duration still bounds
it). The RTP timestamp keeps counting real time across the hold and the first
packet after it carries the marker bit (RFC 3550 §5.1, a new talkspurt).

SRTP (RFC 3711, `secure()` with the SDES keys the SIP layer negotiated):
every packet is protected on the clock's send path (the prompt's shared
frames stay plain) and RTCP goes as SRTCP; what the callee sends is
authenticated and decrypted before anything reads it, so only an authentic
packet latches, counts as a digit or reaches a listener. The RTP header stays
in the clear, so the kernel's payload-type filter still works; libsrtp then
sees only the packets it lets through, and guesses the rollover counter from
their sequence numbers (RFC 3711 §3.3.1), which holds while they come less
than 2^15 packets (~11 min) apart.

Only a trusted source IP may latch (the "RTP bleed" attack, Asterisk
AST-2017-005: whoever sends first would get the call's audio and could inject
digits): the SDP connection address, on any port, or an address the SIP
layer vouches for (`latch_hosts`: the dialer passes the IP its SIP requests
for the call go to). Packets from any other IP are dropped unread until the
socket is connected. NAT: a callee whose SDP names a private address but whose
SIP and RTP come from the same public address still latches, through the SIP
address. One whose RTP comes from yet another address (no SBC, a NAT with
several public IPs) does not: it gets our RTP at its SDP address, unreachable
behind its NAT, and we connect there at `LATCH_TIMEOUT` (its digits are then
lost too). That one-way call is the price of never streaming a call to a
stranger; carriers and SBCs name their own media address in SDP.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import logging
import secrets
import socket
from collections.abc import Callable, Generator, Iterable

from ringcast.errors import MediaError
from ringcast.inet import canonical_ip, unmapped, v4_mapped
from ringcast.media.codecs import Pcm16, get_codec
from ringcast.media.digits import DigitRouter
from ringcast.media.inband_dtmf import InbandDtmfDetector
from ringcast.media.prompt import Prompt
from ringcast.media.recorder import Recorder
from ringcast.rtp.clock import RtpClock
from ringcast.rtp.ports import PortAllocator
from ringcast.rtp.receiver import StreamReceiver
from ringcast.rtp.sender import AudioListener, Packet, StreamSender
from ringcast.rtp.srtp import SrtpContext
from ringcast.rtp.state import PlayResult, SessionState
from ringcast.rtp.udp import udp_socket

log = logging.getLogger(__name__)

LATCH_TIMEOUT = 2.0  # seconds to wait for the callee's first RTP before connecting
BIND_ATTEMPTS = 32  # ports tried before open() gives up
INBAND_TONE_TRIM = 0.15  # seconds of an in-band finish_on tone cut from a recording's end


class MediaSession(StreamSender, StreamReceiver):
    """One call's RTP stream on the shared clock (see the module docstring)."""

    # A few thousand live at once: their fields in slots, not a dict of ~1.2 KB each
    # (bench/dialer.py memory)
    __slots__ = (
        "_allocator",
        "_clock",
        "_connected",
        "_decode",
        "_gen",
        "_hearing",
        "_inband",
        "_inband_held",
        "_last_event",
        "_latch_handle",
        "_latch_ips",
        "_latched",
        "_lent",
        "_listeners",
        "_loop",
        "_next",
        "_paused",
        "_play_error",
        "_play_future",
        "_prompt",
        "_receive_dtmf_pts",
        "_recorder",
        "_remote",
        "_router",
        "_rtcp_remote",
        "_rtcp_sock",
        "_send",
        "_seq",
        "_skipped",
        "_sock",
        "_srtp",
        "_tap",
        "_ts",
        "codec",
        "dtmf_payload_type",
        "dtmf_received",
        "event_packets_sent",
        "inband_digits",
        "late_packets",
        "local_port",
        "packets_received",
        "packets_sent",
        "payload_type",
        "recordings",
        "rtcp_received",
        "rtcp_sent",
        "send_errors",
        "ssrc",
        "state",
        "strangers",
    )

    def __init__(
        self,
        clock: RtpClock,
        allocator: PortAllocator | None,
        rtp_sock: socket.socket,
        rtcp_sock: socket.socket,
        local_port: int,
    ) -> None:
        self._clock = clock
        self._allocator = allocator
        self._sock = rtp_sock
        self._rtcp_sock = rtcp_sock
        self.local_port = local_port
        self.state = SessionState.OPEN
        self.ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._ts = secrets.randbits(32)
        self._remote: tuple[str, int] | None = None
        self._rtcp_remote: tuple[str, int] | None = None
        self._connected = False
        self._send: Callable[[Packet], object] = self._send_unconnected
        self._srtp: SrtpContext | None = None  # RFC 3711: set by secure(), per call
        self._latched = False
        self._latch_ips: frozenset[str] = frozenset()  # source IPs that may latch
        self.strangers = 0  # packets dropped before the latch: from an untrusted IP
        self._latch_handle: asyncio.TimerHandle | None = None
        self.payload_type = 0
        self.codec = "PCMU"
        self.dtmf_payload_type: int | None = None
        self._receive_dtmf_pts: tuple[int, ...] = ()  # telephone-event types we accept
        self._next: Callable[[], Packet | None] = self._idle
        self._gen: Generator[Packet | None, int | None, None] | None = None
        self._paused = False
        self._skipped = 0  # clock ticks spent paused since the last packet
        self._play_future: asyncio.Future[bool] | None = None
        self._play_error: BaseException | None = None
        self._prompt: Prompt | None = None
        self._router: DigitRouter | None = None  # the playing prompt's digits
        self._last_event: tuple[int, int] | None = None  # (ssrc, timestamp) of the last digit
        self._listeners: list[AudioListener] = []
        self._tap: Callable[[bytes], None] | None = None  # raw packets (rtp/relay.py)
        self._lent = False  # the RTP socket is read by a relay, not the event loop
        self._inband: InbandDtmfDetector | None = None  # no telephone-event: tones in audio
        self._inband_held = bytearray()  # audio waiting for the in-band receiver
        self._hearing = False  # decode received audio (a listener or in-band DTMF)
        self._decode: Callable[[bytes], Pcm16] = get_codec("PCMU").decode
        self.inband_digits = 0  # digits found as tones in the audio
        self.dtmf_received = ""
        self._recorder: Recorder | None = None  # the record segment listening now
        self.recordings: list[Recorder] = []  # every record segment's, in order
        self.packets_sent = 0
        self.event_packets_sent = 0
        self.late_packets = 0
        self.send_errors = 0
        self.packets_received = 0
        self.rtcp_sent = 0
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._on_readable)
        self._loop.add_reader(self._rtcp_sock.fileno(), self._on_rtcp)
        self.rtcp_received = 0

    # -- life ------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, clock: RtpClock, allocator: PortAllocator, bind_host: str = "0.0.0.0"
    ) -> MediaSession:
        """Bind an even RTP port and port+1 for RTCP from `allocator`.

        The sockets are of `bind_host`'s family; `::` is dual stack, one pair
        for a callee of either family (see `ringcast.inet`)."""
        for _ in range(BIND_ATTEMPTS):
            try:
                port = allocator.allocate()
            except RuntimeError as exc:
                raise MediaError(str(exc)) from exc
            try:
                rtp = udp_socket(bind_host)
            except OSError as exc:
                allocator.release(port)
                raise MediaError(f"cannot open an RTP socket for {bind_host}: {exc}") from exc
            rtcp = udp_socket(bind_host)
            try:
                rtp.bind((bind_host, port))
                rtcp.bind((bind_host, port + 1))
            except OSError as exc:
                rtp.close()
                rtcp.close()
                if exc.errno != errno.EADDRINUSE:
                    allocator.release(port)
                    raise MediaError(f"cannot bind RTP port {port} on {bind_host}: {exc}") from exc
                allocator.busy(port)
                log.debug("rtp port %s busy, trying another", port)
                continue
            return cls(clock, allocator, rtp, rtcp, port)
        raise MediaError(f"no bindable RTP port pair after {BIND_ATTEMPTS} attempts")

    @property
    def remote(self) -> tuple[str, int] | None:
        """Where RTP goes now: the SDP address, or the latched source."""
        if self._remote is None:
            return None
        return (unmapped(self._remote[0]), self._remote[1])

    def _peer(self, host: str) -> str:
        """`host` as this session's socket writes and reads it: one canonical text
        per address, v4-mapped on a dual-stack socket (``ringcast.inet``)."""
        host = canonical_ip(host)
        return v4_mapped(host) if self._sock.family == socket.AF_INET6 else host

    def _set_state(self, new: SessionState) -> None:
        log.debug("media session %s: %s -> %s", self.local_port, self.state.value, new.value)
        self.state = new

    def start(
        self,
        remote_host: str,
        remote_port: int,
        payload_type: int,
        codec: str,
        dtmf_payload_type: int | None,
        receive_dtmf_payload_type: int | None = None,
        latch_hosts: Iterable[str] = (),
    ) -> None:
        """Aim the stream at the SDP answer (RFC 3264): address, payload types, codec.

        Symmetric RTP latches only on a packet from `remote_host` or one of
        `latch_hosts` (see the module docstring).

        `dtmf_payload_type` is the callee's telephone-event type, used to send;
        `receive_dtmf_payload_type` the one in our own SDP, which the callee
        must send with (RFC 3264 §5.1). Events are recognised on both: a callee
        that wrongly sends with its own type still gets its digits counted.

        Called again (a re-INVITE), it re-aims at once; a new telephone-event type
        applies from the next prompt segment, a new codec or audio payload type
        from the next `play()` (the SIP layer accepts re-offers only with the
        codec in use, so a call's codec never changes).
        """
        if self.state is SessionState.CLOSED:
            raise MediaError("media session is closed")
        try:
            c = get_codec(codec)
        except ValueError as exc:
            raise MediaError(str(exc)) from exc
        self.codec = c.name
        self._decode = c.decode
        self.payload_type = payload_type & 0x7F
        self.dtmf_payload_type = dtmf_payload_type
        if dtmf_payload_type is None and self._inband is None:
            self._inband = InbandDtmfDetector()
        elif dtmf_payload_type is not None:
            self._inband = None
        self._hearing = self._hears()
        pts = {pt & 0x7F for pt in (receive_dtmf_payload_type, dtmf_payload_type) if pt is not None}
        self._receive_dtmf_pts = tuple(sorted(pts))  # a connected socket is re-filtered below
        peer = self._peer(remote_host)
        self._remote = (peer, remote_port)
        self._rtcp_remote = (peer, remote_port + 1)
        self._latch_ips = frozenset(self._peer(h) for h in (remote_host, *latch_hosts))
        if self._latch_handle is not None:
            self._latch_handle.cancel()
        self._set_state(SessionState.STARTED)
        if self._connected:  # re-aimed mid-call (a re-INVITE): reconnect at once
            self._latched = False
            self._latch(None)
        else:
            self._latch_handle = self._loop.call_later(LATCH_TIMEOUT, self._latch, None)
        log.debug(
            "media session %s -> %s:%s %s/%s dtmf %s",
            self.local_port,
            remote_host,
            remote_port,
            self.codec,
            self.payload_type,
            dtmf_payload_type,
        )

    def secure(self, suite: str, local_key: bytes, remote_key: bytes) -> None:
        """Protect this call's RTP and RTCP with SRTP/SRTCP (RFC 3711) from now on.

        The SDES keys the SIP layer negotiated: ours protects what we send, the
        callee's opens what it sends (packets that fail authentication are
        dropped and counted). Called again with the same suite and our key, only
        the callee's key changes (a re-key); the send path encrypts per packet,
        so the shared prompt frames stay plain.
        """
        srtp = self._srtp
        if srtp is not None and srtp.same_keys(suite, local_key, remote_key):
            return
        if srtp is not None and srtp.keeps_local(suite, local_key):
            srtp.rekey_remote(remote_key)
            return
        self._srtp = SrtpContext(suite, local_key, remote_key, ssrc=self.ssrc)
        self._clock.srtp_streams += 1
        self._set_send(self._sock.send if self._connected else self._send_unconnected)

    @property
    def srtp_suite(self) -> str | None:
        """The SRTP crypto-suite in use, or None for plain RTP."""
        return self._srtp.suite if self._srtp is not None else None

    @property
    def srtp_auth_failures(self) -> int:
        """SRTP/SRTCP packets from the callee dropped for failed authentication or replay."""
        return self._srtp.auth_failures if self._srtp is not None else 0

    def _set_send(self, raw: Callable[[Packet], object]) -> None:
        self._send = raw if self._srtp is None else self._srtp.wrap_send(raw)

    async def play(self, prompt: Prompt) -> PlayResult:
        """Stream `prompt` on the shared clock; return when it ends or `stop()` is called.

        Cancelling the task stops the stream too; the digits received so far stay
        in `.dtmf_received`.
        """
        if self.state is not SessionState.STARTED:
            raise MediaError(f"media session is {self.state.value}: start() it before play()")
        if self.codec not in prompt.codecs:
            raise MediaError(f"the prompt has no {self.codec} audio (it has {prompt.codecs})")
        if self._play_future is not None and not self._play_future.done():
            raise MediaError("media session is already playing")
        fut: asyncio.Future[bool] = self._loop.create_future()
        self._play_future = fut
        self._play_error = None
        self._prompt = prompt
        router = self._router = DigitRouter(prompt.segments)
        gen = self._packets(prompt)
        self._gen = gen
        self._skipped = 0
        self._next = self._paused_tick if self._paused else gen.__next__
        self._clock.add(self)
        try:
            completed = await fut
        finally:
            self._clock.remove(self)
            self._next = self._idle
            if self._gen is not None:
                self._gen.close()
            self._gen = None
        if self._play_error is not None:
            raise MediaError(
                f"media stream failed: {self._play_error or type(self._play_error).__name__}"
            )
        return PlayResult(self.dtmf_received, router.optout, completed)

    @property
    def optout(self) -> bool:
        """The callee pressed an opt-out key of the prompt playing (or last played)."""
        return self._router is not None and self._router.optout

    def on_digit(self, digit: str) -> None:
        """One digit from the callee: RFC 4733 (here), SIP INFO or in-band tones (their
        owners call this). Kept in `dtmf_received`; while a prompt plays, it answers
        a gather, opts out, or barges in (:class:`ringcast.media.digits.DigitRouter`):
        then the stream jumps to that gather at the next tick. Call it from the event
        loop, not from inside a clock tick."""
        self.dtmf_received += digit
        router = self._router
        if self._recorder is not None:  # recording: the digit may end it, never barges in
            # an in-band digit's tone is already in the recording: cut it
            self._recorder.on_digit(digit, INBAND_TONE_TRIM if self._inband is not None else 0.0)
            if router is not None and digit in router.optout_keys:
                router.optout = True
            return
        if router is None or self._gen is None:
            return
        jump = router.on_digit(digit)
        if jump is not None:
            log.debug("media session %s: barge-in to segment %d", self.local_port, jump)
            self._restart_at(jump)

    def _restart_at(self, index: int) -> None:
        """Stop the segment playing and go on from segment `index` (barge-in)."""
        old, prompt = self._gen, self._prompt
        if old is None or prompt is None:
            return
        if inspect.getgeneratorstate(old) == inspect.GEN_RUNNING:  # called from a tick
            self._loop.call_soon(self._restart_at, index)
            return
        old.close()  # its finally writes seq/timestamp/count back
        gen = self._packets(prompt, start=index)
        self._gen = gen
        if not self._paused:
            self._next = gen.__next__

    def pause(self, paused: bool) -> None:
        """Hold (True) or resume (False) the stream; see the module docstring.

        Takes effect at the next clock tick, during `play()` or before it.
        """
        if paused == self._paused:
            return
        self._paused = paused
        log.debug("media session %s: %s", self.local_port, "paused" if paused else "resumed")
        if self._gen is not None:
            self._next = self._paused_tick if paused else self._resume_tick

    @property
    def paused(self) -> bool:
        return self._paused

    def listen(self, listener: AudioListener) -> None:
        """Hand the callee's decoded audio (16-bit PCM, 8 kHz) to `listener` from now on.

        Called in the socket's read callback for every audio packet: keep it cheap.
        """
        self._listeners.append(listener)
        self._hearing = True
        if self._connected:
            self._filter_incoming()

    def _hears(self) -> bool:
        """Whether the callee's audio is read: a listener, in-band DTMF, a relay."""
        return bool(self._listeners) or self._inband is not None or bool(self._tap) or self._lent

    def tap(self, sink: Callable[[bytes], None] | None) -> None:
        """Hand every RTP packet from the callee (audio and telephone-events, once
        latched) unparsed to `sink` (a relay, :mod:`ringcast.rtp.relay`); None stops it."""
        self._tap = sink
        self._hearing = self._hears()
        if self._connected:
            self._filter_incoming()

    def stream_position(self) -> tuple[int, int, int]:
        """Our stream's SSRC and the sequence number and timestamp of its next packet:
        for a relay that sends on this stream (one SSRC, as its SRTP context keys)."""
        return self.ssrc, self._seq, self._ts

    def srtp_opener(self) -> Callable[[bytes], bytes | None] | None:
        """What authenticates and decrypts a packet read from this session's socket
        (its SRTP context's ``open``), or None for plain RTP: for whoever borrows it."""
        return self._srtp.open if self._srtp is not None else None

    def lend_socket(self) -> socket.socket | None:
        """Stop reading RTP in the event loop and hand over the connected socket: a
        relay reads it on the clock's ticks (:mod:`ringcast.rtp.relay`), one system
        call per tick instead of a readiness callback per packet. None before the
        latch (the session still has to pick its peer). `take_back()` undoes it."""
        if not self._connected or self._lent or self.state is not SessionState.STARTED:
            return None
        self._loop.remove_reader(self._sock.fileno())
        self._lent = True
        self._hearing = True  # the socket filter lets audio through to the relay (_hears)
        self._filter_incoming()
        return self._sock

    def take_back(self) -> None:
        if not self._lent or self.state is SessionState.CLOSED:
            return
        self._lent = False
        self._loop.add_reader(self._sock.fileno(), self._on_readable)
        self._hearing = self._hears()
        self._filter_incoming()

    def unlisten(self, listener: AudioListener) -> None:
        """Stop handing audio to `listener`; with no one left, the kernel drops it again."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)
        hearing = self._hears()
        if hearing != self._hearing:
            self._hearing = hearing
            if self._connected:
                self._filter_incoming()

    @property
    def inband_dtmf(self) -> bool:
        """Digits are read from the audio (the answer had no telephone-event)."""
        return self._inband is not None

    def _paused_tick(self) -> None:
        self._skipped += 1
        return None

    def _resume_tick(self) -> Packet | None:
        """The first tick after a hold: tell the generator how many ticks it missed."""
        gen = self._gen
        assert gen is not None
        skipped, self._skipped = self._skipped, 0
        self._next = gen.__next__
        if skipped and inspect.getgeneratorstate(gen) == inspect.GEN_SUSPENDED:
            return gen.send(skipped)
        return next(gen)

    def stop(self) -> None:
        """Stop the current play (it returns with completed=False)."""
        self._clock.remove(self)
        self._clock_done(False, None)

    async def close(self) -> None:
        """Send RTCP BYE, stop streaming, close the sockets and give the ports back."""
        if self.state is SessionState.CLOSED:
            return
        self.stop()
        if self.state is SessionState.STARTED:
            self._send_rtcp(bye=True)
        if self._latch_handle is not None:
            self._latch_handle.cancel()
            self._latch_handle = None
        # A closed session keeps no bound method of its own (the send path and the
        # latch timer held one): nothing cycles back, reference counting frees it.
        self._send = _closed_send
        self._loop.remove_reader(self._sock.fileno())
        self._loop.remove_reader(self._rtcp_sock.fileno())
        self._sock.close()
        self._rtcp_sock.close()
        if self._allocator is not None:
            self._allocator.release(self.local_port)
        self._set_state(SessionState.CLOSED)
        log.debug(
            "media session %s closed: %s packets sent, %s late, %s received, dtmf %r",
            self.local_port,
            self.packets_sent,
            self.late_packets,
            self.packets_received,
            self.dtmf_received,
        )

    async def __aenter__(self) -> MediaSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- sending (runs inside the clock's tick) ---------------------------------------------

    def _send_unconnected(self, pkt: Packet) -> object:
        return self._sock.sendto(pkt, self._remote)  # type: ignore[arg-type]

    @staticmethod
    def _idle() -> Packet | None:
        return None

    def _clock_done(self, completed: bool, error: BaseException | None) -> None:
        fut = self._play_future
        if fut is not None and not fut.done():
            self._play_error = error
            fut.set_result(completed)


def _closed_send(pkt: Packet) -> None:
    """The send path of a closed session: nothing goes out."""
    return None
