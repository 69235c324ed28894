"""One call's life: media port, INVITE, ringing, answer, playlist, hang-up, record.

`place_call` ties the SIP engine and the media plane together for one
recipient and returns what the call record should say. It never raises for
anything the network or the callee does: every way a call can end becomes a
`CallReport`. Progress (ringing, answered) is reported through `on_progress`
so the store can show it while the call lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from ringcast import sealing
from ringcast.config import Settings
from ringcast.dialer.trunk_tls import check_trunk_tls, tls_options
from ringcast.domain import Outcome, Result, utcnow
from ringcast.errors import RingcastError, public_text
from ringcast.inet import IPV6, bind_families, hostport
from ringcast.media.amd import AnsweredBy, Decision, GreetingEnd, MachineDetector
from ringcast.media.fetch import MediaFetcher
from ringcast.media.prompt import Prompt
from ringcast.media.recorder import BridgeRecording, Recorder
from ringcast.rtp import MediaSession, PlayResult, PortAllocator, RtpClock, SessionState
from ringcast.sealing import Sealer
from ringcast.sip.call import CallSpec, CallState, OutboundCall
from ringcast.sip.causes import record_text
from ringcast.sip.crypto_sdp import new_offer, stricter
from ringcast.sip.endpoint import SipEndpoint
from ringcast.sip.sdp import MediaAnswer, MediaOffer
from ringcast.sip.transport import family_socket
from ringcast.trunks import CARRIER_KEYS

log = logging.getLogger(__name__)

DEFAULT_CODECS = ("PCMU", "PCMA")
SCRIPT_GRACE = 3.0  # seconds a script may take to finish after the callee hung up


@dataclass(frozen=True)
class CallJob:
    """Everything needed to place one attempt of one call."""

    call_id: str
    request_id: str
    to: str
    from_: str
    attempt: int
    ring_timeout: float
    max_duration: float
    sip: Mapping[str, Any] = field(default_factory=dict)
    machine_detection: Mapping[str, Any] | None = None  # {"mode", "timeout"}

    @property
    def codecs(self) -> tuple[str, ...]:
        return tuple(self.sip.get("codecs") or DEFAULT_CODECS)


@dataclass
class CallReport:
    """What the call record says once the attempt has ended."""

    result: Result
    outcome: Outcome
    setup_time: datetime | None = None
    connect_time: datetime | None = None
    disconnect_time: datetime | None = None
    disconnect_cause_code: str | None = None
    disconnect_cause_text: str | None = None
    duration: int = 0
    answered: bool = False
    codec: str | None = None
    error: str | None = None
    dtmf: str | None = None
    optout: bool = False
    answered_by: str | None = None
    machine_detection_ms: int | None = None
    voicemail: str | None = None  # drop mode on a machine: "left" or "cut"
    srtp: str | None = None  # the SRTP crypto-suite (RFC 4568), None for plain RTP
    transfer: dict[str, Any] | None = None  # gather.actions' transfer (dialer.transfer)
    # the playlist's `record` items; a bridged transfer with "record": true appends
    # its BridgeRecording (both legs mixed)
    recordings: list[Recorder | BridgeRecording] = field(default_factory=list)

    def fields(self) -> dict[str, Any]:
        """Column values for the store (everything but `optout`). `recordings` is
        None here: the owner writes this attempt's list once they are stored, so an
        attempt without any never shows an earlier attempt's (a recording belongs
        to the attempt that made it; `attempts` keeps each one's)."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("optout", "recordings")}
        out["recordings"] = None
        if self.transfer is not None:
            out["transfer"] = json.dumps(self.transfer, separators=(",", ":"))
        out["result"] = str(self.result)
        out["outcome"] = str(self.outcome)
        if self.error:
            out["error"] = public_text(self.error)  # what a user reads: no Python reprs
        return out


ProgressFn = Callable[[Result, dict[str, Any]], Awaitable[None] | None]
# What plays on an answered call instead of one prompt: a playlist with gather
# actions (ringcast.dialer.flow); it may transfer the call.
Script = Callable[["OutboundCall", MediaSession, "CallReport"], Coroutine[Any, Any, PlayResult]]


@dataclass
class CallContext:
    """Process-wide things a call uses: the SIP endpoint and the media plane."""

    sip: SipEndpoint
    clock: RtpClock
    ports: PortAllocator
    rtp_bind_host: str = "0.0.0.0"
    public_ip: str | None = None


def rtp_bind_host(settings: Settings) -> str:
    """Where RTP sockets bind: ``::`` (dual stack, a callee of either family)
    when SIP listens on IPv6, else ``0.0.0.0`` as ever."""
    return "::" if IPV6 in bind_families(settings.sip_host) else "0.0.0.0"


def check_addresses(settings: Settings) -> None:
    """Fail at start, in one line, when SIP or RTP cannot bind where the settings
    say (an address this host does not have, a family it lacks, a port in use):
    a RingcastError naming the flag, before anything else starts."""
    host, port = settings.sip_host, settings.sip_port
    kinds = [("udp", socket.SOCK_DGRAM)]
    if settings.sip_transport == "tcp":
        kinds.append(("tcp", socket.SOCK_STREAM))
    rtp = rtp_bind_host(settings)
    checks = [(f"--sip {hostport(host, port)} ({name})", host, port, kind) for name, kind in kinds]
    checks.append((f"RTP on {hostport(rtp, 0)}", rtp, 0, socket.SOCK_DGRAM))
    for what, bind_host, bind_port, kind in checks:
        try:
            with family_socket(bind_host, kind) as sock:
                sock.bind((bind_host, bind_port))
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise RingcastError(f"cannot listen for {what}: {why}") from None


def sip_endpoint(settings: Settings) -> SipEndpoint:
    """The process's SIP endpoint, as the settings say (`--sip`, `--public-ip`, T1/T2).

    The trunks' TLS files are loaded first (:func:`check_trunk_tls`)."""
    check_trunk_tls(settings.trunks)
    return SipEndpoint(
        host=settings.sip_host,
        port=settings.sip_port,
        transport=settings.sip_transport,
        public_ip=settings.public_ip,
        t1=settings.sip_t1,
        t2=settings.sip_t2,
        flood_rate=settings.sip_flood_rate or None,
        flood_burst=settings.sip_flood_burst,
        flood_total_rate=settings.sip_flood_total_rate or None,
        silent_invites=settings.sip_silent_invites,
        user_agent=settings.sip_user_agent,
        identify_to_strangers=settings.sip_identify_to_strangers,
        dns_server=settings.dns_nameserver,
    )


class TrunkGone(RingcastError):
    """The request's trunk is no longer in the config file."""


def resolve_sip(
    stored: Mapping[str, Any] | None, trunks: Mapping[str, Mapping[str, Any]], sealer: Sealer | None
) -> dict[str, Any]:
    """How to route one call, at dial time: the request's stored "sip" with its sealed
    password opened, over its trunk as the config says now (the trunk's headers
    under the request's own). TrunkGone when the trunk was removed: such a call
    is never sent around the carrier."""
    sip = sealing.unseal_sip(stored or {}, sealer)
    name = sip.pop("trunk", None)
    if not name:
        return sip
    trunk = trunks.get(name)
    if trunk is None:
        raise TrunkGone(f"trunk {name!r} is not in the config file any more")
    headers = {**dict(trunk.get("headers") or {}), **dict(sip.get("headers") or {})}
    out = {
        k: v
        for k, v in trunk.items()
        if k not in ("headers", "max_calls", "cps") and k not in CARRIER_KEYS
    }
    out.update(sip)
    if trunk.get("srtp") or sip.get("srtp"):  # a trunk's "required" holds over a request
        out["srtp"] = stricter(trunk.get("srtp"), sip.get("srtp"))
    if headers:
        out["headers"] = headers
    return out


def media_fetcher(settings: Settings) -> MediaFetcher:
    """The media fetcher with the settings' cache and SSRF policy."""
    return MediaFetcher(
        cache_dir=settings.media_cache_dir,
        allow_private=settings.allow_private_urls,
        allow_networks=settings.private_url_allowlist,  # SSRF guard CIDR allowlist
    )


def sdp_address(ctx: CallContext) -> str:
    """The address written into our SDP: `--public-ip`, else the RTP bind
    address if it is a specific one, else "0.0.0.0", which the SIP layer
    replaces with the local address it uses toward the callee (cached there)."""
    if ctx.public_ip and "," not in ctx.public_ip:
        return ctx.public_ip  # one per family: the SIP layer picks the callee's
    if ctx.rtp_bind_host in ("", "::", "0.0.0.0"):
        return "0.0.0.0"
    return ctx.rtp_bind_host


async def notify(fn: ProgressFn | None, result: Result, fields: dict[str, Any]) -> None:
    if fn is None:
        return
    res = fn(result, fields)
    if res is not None:
        await res


def failed_report(error: str, *, code: str | None = None, text: str | None = None) -> CallReport:
    """A call ringcast could not place (no INVITE answered, prompt error, ...)."""
    now = utcnow()
    return CallReport(
        result=Result.FAILED,
        outcome=Outcome.FAILED,
        disconnect_time=now,
        disconnect_cause_code=code,
        disconnect_cause_text=text,
        error=error,
    )


async def place_call(
    job: CallJob,
    prompt: Prompt,
    ctx: CallContext,
    *,
    on_progress: ProgressFn | None = None,
    cancel: asyncio.Event | None = None,
    voicemail: Prompt | None = None,
    script: Script | None = None,
) -> CallReport:
    """Place one call and play `prompt` (or run `script`) to the callee; return its
    record fields.

    With `job.machine_detection`, the callee's audio is analysed after the answer
    (see `_detect`); `voicemail` is what `drop` mode plays to a machine (default:
    `prompt`). The decision is reported through `on_progress` with the fields
    `answered_by` and `machine_detection_ms`.
    """
    cancel = cancel or asyncio.Event()
    try:
        media = await MediaSession.open(ctx.clock, ctx.ports, bind_host=ctx.rtp_bind_host)
    except Exception as exc:  # noqa: BLE001 - any failure to get a port fails the call
        log.warning("call %s: no RTP port: %s", job.call_id, exc)
        return failed_report(f"no RTP port available: {exc}")
    try:
        return await _run(job, prompt, ctx, media, on_progress, cancel, voicemail, script)
    finally:
        with contextlib.suppress(Exception):
            await media.close()


async def _run(
    job: CallJob,
    prompt: Prompt,
    ctx: CallContext,
    media: MediaSession,
    on_progress: ProgressFn | None,
    cancel: asyncio.Event,
    voicemail: Prompt | None = None,
    script: Script | None = None,
) -> CallReport:
    sip = job.sip
    srtp = str(sip.get("srtp") or "off")
    offer = MediaOffer(
        host=sdp_address(ctx),
        port=media.local_port,
        codecs=list(job.codecs),
        telephone_event=True,
        srtp=srtp,
        crypto=new_offer() if srtp != "off" else (),  # fresh keys for every call
    )
    spec = CallSpec(
        to=job.to,
        from_=job.from_,
        media=offer,
        proxy=sip.get("proxy"),
        transport=sip.get("transport"),  # None: the URI's ;transport=, else the DNS
        tls=tls_options(sip),  # the trunk's CA, client certificate, tls_verify
        username=sip.get("username"),
        password=sip.get("password"),
        headers=dict(sip.get("headers") or {}),
        ring_timeout=job.ring_timeout,
    )
    events: asyncio.Queue[CallState] = asyncio.Queue()

    def on_media(answer: MediaAnswer) -> None:
        # A re-INVITE/UPDATE/ACK moved the callee's media. Before _play the
        # stream is not aimed yet: _play reads call.answer, the latest one.
        if media.state is SessionState.STARTED:
            aim(media, answer, call.signalling_host)

    try:
        call = OutboundCall(
            ctx.sip, spec, on_state=events.put_nowait, on_media=on_media, on_dtmf=media.on_digit
        )  # SIP INFO digits take the RFC 4733 path: gather, opt-out, barge-in
    except ValueError as exc:  # a recipient or header the SIP layer refuses
        return failed_report(f"cannot call {job.to}: {exc}")
    watcher = asyncio.create_task(
        _forward_progress(call, events, on_progress), name=f"call-progress-{job.call_id}"
    )
    try:
        answered = await _setup_or_cancel(call, cancel)
        report = CallReport(result=Result.COMPLETED, outcome=call.outcome)
        report.setup_time = call.invite_sent_at
        if answered and call.answer is not None and not cancel.is_set():
            if job.machine_detection:
                await _detect(
                    job,
                    prompt,
                    voicemail or prompt,
                    call,
                    media,
                    cancel,
                    report,
                    on_progress,
                    script,
                )
            else:
                await _play(job, prompt, call, media, cancel, report, script)
        elif answered:
            await call.hangup()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return _finish(call, report, cancel)


async def _setup_or_cancel(call: OutboundCall, cancel: asyncio.Event) -> bool:
    setup = asyncio.create_task(call.setup(), name="call-setup")
    stop = asyncio.create_task(cancel.wait(), name="call-cancel-wait")
    try:
        done, _ = await asyncio.wait({setup, stop}, return_when=asyncio.FIRST_COMPLETED)
        if setup not in done:
            await call.hangup(reason="canceled")
        return bool(await setup)
    finally:
        stop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stop


async def _forward_progress(
    call: OutboundCall, events: asyncio.Queue[CallState], on_progress: ProgressFn | None
) -> None:
    while True:
        state = await events.get()
        try:
            if state is CallState.RINGING:
                await notify(on_progress, Result.RINGING, {})
            elif state is CallState.ANSWERED:
                answered = {"connect_time": call.answered_at, "answered": True}
                await notify(on_progress, Result.IN_PROGRESS, answered)
        except Exception:
            log.exception("progress update failed")


async def _play(
    job: CallJob,
    prompt: Prompt,
    call: OutboundCall,
    media: MediaSession,
    cancel: asyncio.Event,
    report: CallReport,
    script: Script | None = None,
) -> bool:
    """Play `prompt` (or run `script`) until it ends, the callee hangs up, cancel or
    max_duration; hang up. True when the prompt played to its end."""
    answer = call.answer
    assert answer is not None  # checked by the caller
    report.codec = answer.codec
    report.srtp = answer.srtp.suite if answer.srtp is not None else None
    aim(media, answer, call.signalling_host)
    completed = False
    playing = script(call, media, report) if script is not None else media.play(prompt)
    play = asyncio.create_task(playing, name=f"call-play-{job.call_id}")
    ended = asyncio.create_task(call.ended.wait(), name=f"call-ended-{job.call_id}")
    stop = asyncio.create_task(cancel.wait(), name=f"call-stop-{job.call_id}")
    try:
        done, _ = await asyncio.wait(
            {play, ended, stop}, timeout=job.max_duration, return_when=asyncio.FIRST_COMPLETED
        )
        if script is not None and play not in done and ended in done:
            # a bridged transfer ends with the callee's BYE on its own: let it record that
            done, _ = await asyncio.wait({play}, timeout=SCRIPT_GRACE)
            done |= {ended}
        if play in done and play.exception() is None:
            result = play.result()
            report.dtmf = result.dtmf or None
            report.optout = result.optout
            completed = result.completed
        elif play in done:
            log.error("call %s: playback failed: %s", job.call_id, play.exception())
            report.error = f"playback failed: {play.exception()}"
        else:  # the callee hung up, or max_duration: what was pressed still counts
            report.dtmf = media.dtmf_received or None
            report.optout = media.optout
            if not done:
                log.info("call %s: max_duration %.0fs reached", job.call_id, job.max_duration)
    finally:
        for task in (play, ended, stop):
            task.cancel()
        for task in (play, ended, stop):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    # the playlist's record items (closed with the play task), and a bridged transfer's
    report.recordings = [*media.recordings, *report.recordings]
    if not call.ended.is_set():
        await call.hangup()
    return completed


# --- answering-machine detection -----------------------------------------------------------

GREETING_WAIT = 30.0  # seconds a machine's greeting may last before the voicemail starts anyway
AMD_BATCH = 4  # packets of the callee's audio analysed together (80 ms: cheaper per frame)


class _AmdListener:
    """Feeds the callee's audio to a `MachineDetector` (in the RTP read callback) and
    applies its actions: futures resolved, nothing else."""

    def __init__(self, detector: MachineDetector) -> None:
        loop = asyncio.get_running_loop()
        self.detector = detector
        self.decision: asyncio.Future[Decision] = loop.create_future()
        self.greeting_end: asyncio.Future[GreetingEnd] = loop.create_future()
        self._held: list[Any] = []

    def __call__(self, pcm: Any) -> None:
        self._held.append(pcm)
        if len(self._held) >= AMD_BATCH:
            chunk = self._held[0] if len(self._held) == 1 else np.concatenate(self._held)
            self._held = []
            self.apply(self.detector.feed(chunk))

    def apply(self, actions: list[Decision | GreetingEnd]) -> None:
        for action in actions:
            fut: asyncio.Future[Any] = (
                self.decision if isinstance(action, Decision) else self.greeting_end
            )
            if not fut.done():
                fut.set_result(action)


async def _first(
    fut: asyncio.Future[Any], call: OutboundCall, cancel: asyncio.Event, seconds: float
) -> bool:
    """Wait for `fut`, the callee's hang-up, cancel or `seconds`; True when `fut` is done."""
    ended = asyncio.create_task(call.ended.wait(), name="amd-call-ended")
    stop = asyncio.create_task(cancel.wait(), name="amd-cancel")
    try:
        await asyncio.wait({fut, ended, stop}, timeout=seconds, return_when="FIRST_COMPLETED")
    finally:
        for task in (ended, stop):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return fut.done()


async def _decide(
    listener: _AmdListener,
    job: CallJob,
    call: OutboundCall,
    cancel: asyncio.Event,
    report: CallReport,
    on_progress: ProgressFn | None,
    limit: float,
) -> AnsweredBy:
    """Wait for the detector's decision (or its timeout on the wall clock: a callee
    sending no audio); record and report it."""
    connected = call.answered_at or utcnow()
    if not await _first(listener.decision, call, cancel, limit + 0.5):
        elapsed = (utcnow() - connected).total_seconds() * 1000
        listener.apply(listener.detector.expire(max(elapsed, limit * 1000)))
    decision = listener.decision.result() if listener.decision.done() else None
    who = decision.answered_by if decision is not None else AnsweredBy.UNKNOWN
    report.answered_by = str(who)
    report.machine_detection_ms = max(0, int((utcnow() - connected).total_seconds() * 1000))
    log.info(
        "call %s: answered by %s (%s) after %d ms",
        job.call_id,
        who,
        decision.cause if decision else "hung up",
        report.machine_detection_ms,
    )
    if not call.ended.is_set():
        fields = {
            "answered_by": report.answered_by,
            "machine_detection_ms": report.machine_detection_ms,
        }
        await notify(on_progress, Result.IN_PROGRESS, fields)
    return who


async def _detect(
    job: CallJob,
    prompt: Prompt,
    voicemail: Prompt,
    call: OutboundCall,
    media: MediaSession,
    cancel: asyncio.Event,
    report: CallReport,
    on_progress: ProgressFn | None,
    script: Script | None = None,
) -> None:
    """A call with machine detection (DESIGN "Listening to the callee").

    `detect`: the playlist starts at once while the detector listens. `drop` and
    `hangup`: nothing is sent until the decision; a person (or `unknown`) then
    hears the playlist; a fax is hung up on; a machine is hung up on (`hangup`)
    or, after its greeting's end (beep, silence, or GREETING_WAIT), hears
    `voicemail`, and then the call ends.
    """
    settings = job.machine_detection or {}
    mode = str(settings.get("mode", "detect"))
    timeout = float(settings.get("timeout", 6.0))
    answer = call.answer
    assert answer is not None  # checked by the caller
    report.codec = answer.codec
    report.srtp = answer.srtp.suite if answer.srtp is not None else None
    aim(media, answer, call.signalling_host)
    listener = _AmdListener(MachineDetector(timeout))
    media.listen(listener)
    try:
        if mode == "detect":
            decide = asyncio.create_task(
                _decide(listener, job, call, cancel, report, on_progress, timeout),
                name=f"call-amd-{job.call_id}",
            )
            decide.add_done_callback(lambda _: media.unlisten(listener))
            try:
                await _play(job, prompt, call, media, cancel, report, script)
            finally:
                if not decide.done():
                    decide.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await decide
            if report.answered_by is None:  # the call ended before a decision
                report.answered_by = str(AnsweredBy.UNKNOWN)
            return
        connected = call.answered_at or utcnow()

        def rest() -> CallJob:  # max_duration counts from the answer, detection included
            spent = (utcnow() - connected).total_seconds()
            return replace(job, max_duration=max(0.1, job.max_duration - spent))

        who = await _decide(listener, job, call, cancel, report, on_progress, timeout)
        if call.ended.is_set() or cancel.is_set():
            return
        if who in (AnsweredBy.HUMAN, AnsweredBy.UNKNOWN):
            media.unlisten(listener)
            await _play(rest(), prompt, call, media, cancel, report, script)
            return
        if who is AnsweredBy.FAX or mode == "hangup":
            await call.hangup()
            return
        # drop: a machine; the voicemail starts when its greeting has ended
        await _first(listener.greeting_end, call, cancel, min(GREETING_WAIT, rest().max_duration))
        media.unlisten(listener)
        if call.ended.is_set() or cancel.is_set():
            return
        end = listener.greeting_end.result() if listener.greeting_end.done() else None
        log.info(
            "call %s: greeting ended (%s); voicemail starts",
            job.call_id,
            end.reason if end else "wait over",
        )
        completed = await _play(rest(), voicemail, call, media, cancel, report)
        report.voicemail = "left" if completed else "cut"
    finally:
        media.unlisten(listener)


def aim(media: MediaSession, answer: MediaAnswer, signalling_host: str | None) -> None:
    """Point the RTP stream at the callee's current media description (RFC 3264 §8),
    and pause it while the callee does not want to receive (hold, §8.4).

    A ``c=0.0.0.0`` hold names no address: the stream keeps the old one, to
    resume there unless the resuming offer says otherwise. Symmetric RTP may
    latch on the SDP address or on the IP the call's SIP goes to (a callee
    behind NAT), never on another (RTP bleed; see ringcast.rtp.session).
    """
    if answer.srtp is not None:  # SDES keys (RFC 4568): SRTP/SRTCP both ways
        media.secure(answer.srtp.suite, answer.srtp.local_key, answer.srtp.remote_key)
    if answer.host != "0.0.0.0" or media.state is not SessionState.STARTED:
        media.start(
            answer.host,
            answer.port,
            answer.payload_type,
            answer.codec,
            answer.dtmf_payload_type,
            answer.receive_dtmf_payload_type,
            latch_hosts=[signalling_host] if signalling_host else [],
        )
    media.pause(not answer.receives)


def _finish(call: OutboundCall, report: CallReport, cancel: asyncio.Event) -> CallReport:
    report.setup_time = call.invite_sent_at or report.setup_time
    report.disconnect_time = call.ended_at or utcnow()
    report.disconnect_cause_code = str(call.status_code)
    report.disconnect_cause_text = record_text(call.status_code)
    if call.answered_at is not None:
        report.result = Result.COMPLETED
        report.outcome = Outcome.ANSWERED
        report.answered = True
        report.connect_time = call.answered_at
        seconds = (report.disconnect_time - call.answered_at).total_seconds()
        report.duration = max(0, int(seconds))
        if call.error and not report.error:
            report.error = call.error  # e.g. our BYE went unanswered (408)
    elif cancel.is_set():
        report.result = Result.CANCELED
        report.outcome = Outcome.CANCELED
    elif call.error or call.outcome is Outcome.FAILED:
        report.result = Result.FAILED
        report.outcome = Outcome.FAILED
        report.error = call.error or f"{call.status_code} {report.disconnect_cause_text}"
    else:
        report.result = Result.COMPLETED
        report.outcome = call.outcome
    return report
