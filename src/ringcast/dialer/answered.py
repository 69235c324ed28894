"""An answered call: its playlist (or script) played until it ends, the callee
hangs up, cancel or max_duration (:func:`play`), and answering-machine detection
before or while it plays (:func:`detect`, DESIGN "Listening to the callee")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import Any

import numpy as np

from ringcast.dialer.report import CallJob, CallReport, ProgressFn, Script, notify
from ringcast.domain import Result, now_precise
from ringcast.media.amd import AnsweredBy, Decision, GreetingEnd, MachineDetector
from ringcast.media.prompt import Prompt
from ringcast.rtp import MediaSession, SessionState
from ringcast.sip.call import OutboundCall
from ringcast.sip.flag import Flag
from ringcast.sip.sdp import MediaAnswer

log = logging.getLogger(__name__)

SCRIPT_GRACE = 3.0  # seconds a script may take to finish after the callee hung up


async def play(
    job: CallJob,
    prompt: Prompt,
    call: OutboundCall,
    media: MediaSession,
    cancel: Flag,
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
    ended, stop = call.ended.future(), cancel.future()  # waited on with no task each
    try:
        await first_of((play, ended, stop), job.max_duration)
        done = {fut for fut in (play, ended, stop) if fut.done()}
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
        play.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await play
    # the playlist's record items (closed with the play task), and a bridged transfer's
    report.recordings = [*media.recordings, *report.recordings]
    if not call.ended.is_set():
        await call.hangup()
    return completed


def first_of(futures: tuple[asyncio.Future[Any], ...], timeout: float) -> asyncio.Future[None]:
    """A future done as soon as one of `futures` is, or after `timeout` seconds: what
    ``asyncio.wait(FIRST_COMPLETED)`` waits for, without its two coroutines, sets and
    closure held for as long as a call plays. Once it is done or cancelled, it lets
    go of `futures` and of its timer."""
    return _FirstOf(futures, timeout).wake


class _FirstOf:
    """The one callback of :func:`first_of`: on each of its futures, its timer and its
    own future (one small object, not a closure and its cells per call)."""

    __slots__ = ("futures", "timer", "wake")

    def __init__(self, futures: tuple[asyncio.Future[Any], ...], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        self.futures = futures
        self.wake: asyncio.Future[None] = loop.create_future()
        for fut in futures:
            fut.add_done_callback(self)
        self.timer = loop.call_later(timeout, self, None)
        self.wake.add_done_callback(self)

    def __call__(self, fut: asyncio.Future[Any] | None) -> None:
        if fut is self.wake:  # done or cancelled: let go of the rest
            self.timer.cancel()
            for other in self.futures:
                other.remove_done_callback(self)
        elif not self.wake.done():  # one of the futures, or the timer (None)
            self.wake.set_result(None)


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
    fut: asyncio.Future[Any], call: OutboundCall, cancel: Flag, seconds: float
) -> bool:
    """Wait for `fut`, the callee's hang-up, cancel or `seconds`; True when `fut` is done."""
    await first_of((fut, call.ended.future(), cancel.future()), seconds)
    return fut.done()


async def _decide(
    listener: _AmdListener,
    job: CallJob,
    call: OutboundCall,
    cancel: Flag,
    report: CallReport,
    on_progress: ProgressFn | None,
    limit: float,
) -> AnsweredBy:
    """Wait for the detector's decision (or its timeout on the wall clock: a callee
    sending no audio); record and report it."""
    connected = call.answered_at or now_precise()
    if not await _first(listener.decision, call, cancel, limit + 0.5):
        elapsed = (now_precise() - connected).total_seconds() * 1000
        listener.apply(listener.detector.expire(max(elapsed, limit * 1000)))
    decision = listener.decision.result() if listener.decision.done() else None
    who = decision.answered_by if decision is not None else AnsweredBy.UNKNOWN
    report.answered_by = str(who)
    report.machine_detection_ms = max(0, int((now_precise() - connected).total_seconds() * 1000))
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


async def detect(
    job: CallJob,
    prompt: Prompt,
    voicemail: Prompt,
    call: OutboundCall,
    media: MediaSession,
    cancel: Flag,
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
                await play(job, prompt, call, media, cancel, report, script)
            finally:
                if not decide.done():
                    decide.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await decide
            if report.answered_by is None:  # the call ended before a decision
                report.answered_by = str(AnsweredBy.UNKNOWN)
            return
        connected = call.answered_at or now_precise()

        def rest() -> CallJob:  # max_duration counts from the answer, detection included
            spent = (now_precise() - connected).total_seconds()
            return replace(job, max_duration=max(0.1, job.max_duration - spent))

        who = await _decide(listener, job, call, cancel, report, on_progress, timeout)
        if call.ended.is_set() or cancel.is_set():
            return
        if who in (AnsweredBy.HUMAN, AnsweredBy.UNKNOWN):
            media.unlisten(listener)
            await play(rest(), prompt, call, media, cancel, report, script)
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
        completed = await play(rest(), voicemail, call, media, cancel, report)
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
