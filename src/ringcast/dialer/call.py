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
import logging
from collections.abc import Sequence

from ringcast.dialer.answered import aim, detect, play
from ringcast.dialer.context import (
    CallContext,
    TrunkGone,
    check_addresses,
    media_fetcher,
    resolve_sip,
    rtp_bind_host,
    sdp_address,
    sip_endpoint,
)
from ringcast.dialer.report import (
    DEFAULT_CODECS,
    CallJob,
    CallReport,
    ProgressFn,
    Script,
    failed_report,
    notify,
)
from ringcast.dialer.trunk_tls import tls_options
from ringcast.domain import Outcome, Result, utcnow
from ringcast.media.prompt import Prompt
from ringcast.rtp import MediaSession, SessionState
from ringcast.sip.call import CallSpec, CallState, OutboundCall
from ringcast.sip.causes import record_text
from ringcast.sip.crypto_sdp import new_offer
from ringcast.sip.flag import Flag
from ringcast.sip.sdp import MediaAnswer, MediaOffer

log = logging.getLogger(__name__)

# the names callers import from here (the dialer service, `ringcast call`, tests)
__all__ = [
    "DEFAULT_CODECS",
    "CallContext",
    "CallJob",
    "CallReport",
    "ProgressFn",
    "Script",
    "TrunkGone",
    "aim",
    "call_spec",
    "check_addresses",
    "failed_report",
    "media_fetcher",
    "notify",
    "place_call",
    "resolve_sip",
    "rtp_bind_host",
    "sdp_address",
    "sip_endpoint",
]


def call_spec(
    job: CallJob,
    ctx: CallContext,
    rtp_port: int,
    *,
    to: str | None = None,
    from_: str | None = None,
    codecs: Sequence[str] | None = None,
    ring_timeout: float | None = None,
) -> CallSpec:
    """The INVITE of one leg: the job's routing (proxy, transport, TLS, credentials,
    headers) and SRTP policy, and an SDP offer for our RTP port with fresh SDES keys
    (RFC 4568) for every leg. A transfer's agent leg names its own target, caller,
    codecs and ring timeout; a call uses the job's."""
    sip = job.sip
    srtp = str(sip.get("srtp") or "off")
    offer = MediaOffer(
        host=sdp_address(ctx),
        port=rtp_port,
        codecs=list(codecs if codecs is not None else job.codecs),
        telephone_event=True,
        srtp=srtp,
        crypto=new_offer() if srtp != "off" else (),
    )
    return CallSpec(
        to=to or job.to,
        from_=from_ or job.from_,
        media=offer,
        proxy=sip.get("proxy"),
        transport=sip.get("transport"),  # None: the URI's ;transport=, else the DNS
        tls=tls_options(sip),  # the trunk's CA, client certificate, tls_verify
        username=sip.get("username"),
        password=sip.get("password"),
        headers=dict(sip.get("headers") or {}),
        ring_timeout=job.ring_timeout if ring_timeout is None else ring_timeout,
    )


async def place_call(
    job: CallJob,
    prompt: Prompt,
    ctx: CallContext,
    *,
    on_progress: ProgressFn | None = None,
    cancel: Flag | None = None,
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
    cancel = cancel or Flag()
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
    cancel: Flag,
    voicemail: Prompt | None = None,
    script: Script | None = None,
) -> CallReport:
    spec = call_spec(job, ctx, media.local_port)
    progress = _Progress(job.call_id, on_progress)

    def on_media(answer: MediaAnswer) -> None:
        # A re-INVITE/UPDATE/ACK moved the callee's media. Before _play the
        # stream is not aimed yet: _play reads call.answer, the latest one.
        if media.state is SessionState.STARTED:
            aim(media, answer, call.signalling_host)

    try:
        call = OutboundCall(
            ctx.sip, spec, on_state=progress.on_state, on_media=on_media, on_dtmf=media.on_digit
        )  # SIP INFO digits take the RFC 4733 path: gather, opt-out, barge-in
    except ValueError as exc:  # a recipient or header the SIP layer refuses
        return failed_report(f"cannot call {job.to}: {exc}")
    progress.call = call
    try:
        answered = await _setup_or_cancel(call, cancel)
        report = CallReport(result=Result.COMPLETED, outcome=call.outcome)
        report.setup_time = call.invite_sent_at
        if answered and call.answer is not None and not cancel.is_set():
            if job.machine_detection:
                await detect(
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
                await play(job, prompt, call, media, cancel, report, script)
        elif answered:
            await call.hangup()
    finally:
        await progress.close()
    return _finish(call, report, cancel)


async def _setup_or_cancel(call: OutboundCall, cancel: Flag) -> bool:
    setup = asyncio.create_task(call.setup(), name="call-setup")
    done, _ = await asyncio.wait({setup, cancel.future()}, return_when=asyncio.FIRST_COMPLETED)
    if setup not in done:
        await call.hangup(reason="canceled")
    return bool(await setup)


class _Progress:
    """Forwards the call's ringing and answer to `on_progress`, in order, from the
    SIP layer's `on_state` (a plain callback): a task runs only while there is
    something to forward, not one per call for its whole life."""

    __slots__ = ("call", "call_id", "on_progress", "pending", "task")

    def __init__(self, call_id: str, on_progress: ProgressFn | None) -> None:
        self.call: OutboundCall | None = None  # set once made
        self.call_id = call_id
        self.on_progress = on_progress
        self.pending: list[CallState] = []
        self.task: asyncio.Task[None] | None = None

    def on_state(self, state: CallState) -> None:
        if self.on_progress is None or state not in (CallState.RINGING, CallState.ANSWERED):
            return
        self.pending.append(state)
        if self.task is None:
            self.task = asyncio.create_task(self._forward(), name=f"call-progress-{self.call_id}")

    async def _forward(self) -> None:
        try:
            while self.pending:
                state = self.pending.pop(0)
                try:
                    if state is CallState.RINGING:
                        await notify(self.on_progress, Result.RINGING, {})
                    else:
                        assert self.call is not None  # it changed state
                        answered = {"connect_time": self.call.answered_at, "answered": True}
                        await notify(self.on_progress, Result.IN_PROGRESS, answered)
                except Exception:
                    log.exception("progress update failed")
        finally:
            self.task = None

    async def close(self) -> None:
        """The call is over: what was not forwarded yet is dropped."""
        self.pending.clear()
        task = self.task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _finish(call: OutboundCall, report: CallReport, cancel: Flag) -> CallReport:
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
