"""Runs a playlist with `gather.actions` on an answered call (issue 17).

:mod:`ringcast.dialer.script` decides (steps, the choice after a gather, the
fallback of a failed transfer); `make_script` returns the coroutine
:func:`ringcast.dialer.call.place_call` runs in place of one `play()`: media
steps play as prepared prompts, a choice reports `call.digits`, a transfer
reports `call.transferred` and ends the call once connected.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ringcast.dialer import script
from ringcast.dialer.call import CallContext, CallJob, CallReport, ProgressFn, Script, notify
from ringcast.dialer.report import GATHER_FIELD
from ringcast.dialer.transfer import LegLimits, TransferOutcome, blind, bridge
from ringcast.domain import Result
from ringcast.errors import RingcastError
from ringcast.media.prompt import Prompt
from ringcast.rtp import MediaSession, PlayResult
from ringcast.sip.call import OutboundCall

log = logging.getLogger(__name__)

Prepare = Callable[[Sequence[Mapping[str, Any]]], Awaitable[Prompt]]


@dataclass
class Flow:
    """What running a call's steps needs besides the call itself."""

    job: CallJob
    ctx: CallContext
    prepare: Prepare  # items -> a prompt, through the request's prompt cache
    on_progress: ProgressFn | None = None
    limits: LegLimits | None = None
    counts: dict[tuple[str, str], int] | None = None  # (mode, result) -> transfers (metrics)
    # a transfer target -> (what is dialled or referred to, its SIP options): a number
    # goes through the request's trunk as recipients do (ringcast.dialer.carrier)
    route: Callable[[str], tuple[str, Mapping[str, Any]]] | None = None


def make_script(playlist: Sequence[Mapping[str, Any]], flow: Flow) -> Script:
    """The coroutine function that plays `playlist` step by step on an answered call."""

    async def run(call: OutboundCall, media: MediaSession, report: CallReport) -> PlayResult:
        return await _run(script.steps(playlist), flow, call, media, report)

    return run


async def _run(
    steps: list[script.Step],
    flow: Flow,
    call: OutboundCall,
    media: MediaSession,
    report: CallReport,
) -> PlayResult:
    pending: deque[script.Step] = deque(steps)
    before = media.dtmf_received  # the digits before the last media step
    chose: script.Choose | None = None  # the gather whose actions run now
    optout = False
    gathers = 0  # the choices made so far: each reports its own call.digits
    ran = 0
    while pending and ran < script.MAX_STEPS:
        ran += 1
        step = pending.popleft()
        if isinstance(step, script.Media):
            before = media.dtmf_received
            result = await _play_until_hangup(call, media, await flow.prepare(list(step.items)))
            if result.optout or not result.completed:
                return PlayResult(media.dtmf_received, result.optout, False)
        elif isinstance(step, script.Choose):
            digits = script.gathered(before, media.dtmf_received, step)
            key, more = script.choose(step, digits)
            chose = step
            log.info("call %s: digits %r -> actions %r", flow.job.call_id, digits, key)
            report.dtmf = media.dtmf_received or None
            gathers += 1
            await _report(flow, {"dtmf": report.dtmf, GATHER_FIELD: gathers})  # call.digits
            pending.extendleft(reversed(more))
        elif isinstance(step, script.Hangup):
            break
        elif isinstance(step, script.Transfer):
            outcome = TransferOutcome(step.to, step.mode, "failed")
            try:
                await _transfer(step, flow, call, media, outcome)
            finally:  # also when the call is torn down meanwhile (max_duration, cancel)
                report.transfer = outcome.fields()
                if outcome.recording is not None and outcome.recording.duration > 0:
                    report.recordings.append(outcome.recording)
                if flow.counts is not None:
                    counted = (outcome.mode, outcome.result)
                    flow.counts[counted] = flow.counts.get(counted, 0) + 1
            fields = {"transfer": json.dumps(report.transfer, separators=(",", ":"))}
            await _report(flow, fields)  # call.transferred
            if outcome.result == "answered" or call.ended.is_set():
                break  # connected: the call is the agent's (or over)
            pending.extendleft(reversed(script.fallback(chose)))
    return PlayResult(media.dtmf_received, optout, True)


async def _report(flow: Flow, fields: dict[str, Any]) -> None:
    """Record the fields (and their webhook) while the call lives; a store error is
    logged, never the end of the call."""
    try:
        await notify(flow.on_progress, Result.IN_PROGRESS, fields)
    except Exception:
        log.exception("call %s: progress update failed", flow.job.call_id)


async def _play_until_hangup(call: OutboundCall, media: MediaSession, prompt: Prompt) -> PlayResult:
    """`media.play(prompt)`, stopped at once when the callee hangs up."""

    def stop(fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled():
            media.stop()

    ended = call.ended.future()
    ended.add_done_callback(stop)
    try:
        return await media.play(prompt)
    finally:
        ended.remove_done_callback(stop)


async def _transfer(
    step: script.Transfer,
    flow: Flow,
    call: OutboundCall,
    media: MediaSession,
    out: TransferOutcome,
) -> None:
    log.info("call %s: transfer (%s) to %s", flow.job.call_id, step.mode, step.to)
    job = flow.job
    if flow.route is not None:
        try:
            target, sip = flow.route(step.to)
        except RingcastError as exc:
            out.error = f"cannot transfer to {step.to}: {exc}"
            return
        step = replace(step, to=target)
        job = replace(job, sip=dict(sip))
    if step.mode == "refer":
        await blind(step, call, out)
        return
    hold = await flow.prepare(list(step.hold)) if step.hold else None
    await bridge(step, job, flow.ctx, call, media, out, hold=hold, limits=flow.limits)
