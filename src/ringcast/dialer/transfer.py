"""A transfer of an answered call (issue 17): bridged through ringcast, or a blind REFER.

Bridged: ringcast dials the agent with the request's routing, the callee hears
ringback (or the transfer's `hold` playlist) while it rings, and once the agent
answers both legs' audio is relayed through the shared clock
(:class:`ringcast.rtp.relay.Bridge`) until either side hangs up; then both
legs end. The agent leg holds a channel of the node, trunk and request limits
while it lives (`LegLimits`). REFER: :func:`ringcast.sip.refer.refer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np

from ringcast.dialer.bridge_digits import hear_digits, relay_info_digit
from ringcast.dialer.call import CallContext, CallJob, aim, call_spec
from ringcast.dialer.script import Transfer
from ringcast.domain import Outcome, utcnow
from ringcast.media.codecs import get_codec
from ringcast.media.prompt import AudioSegment, Prompt, encode_frames
from ringcast.media.recorder import BridgeRecording
from ringcast.rtp import MediaSession
from ringcast.rtp.relay import Bridge
from ringcast.sip.call import OutboundCall
from ringcast.sip.refer import ReferState, refer, transfer_result

log = logging.getLogger(__name__)

RINGBACK_HZ = (440.0, 480.0)  # ITU-T E.180 / North American ringback: 2 s on, 4 s off
RINGBACK_ON, RINGBACK_OFF = 2.0, 4.0  # seconds
RINGBACK_LEVEL = 0.12  # of full scale, each tone
SAMPLE_RATE = 8000  # Hz


class LegLimits(Protocol):
    """The channel an agent leg takes: `acquire` gives a refusal text or None."""

    async def acquire(self, leg_id: str) -> str | None: ...
    async def release(self, leg_id: str) -> None: ...


@dataclass
class TransferOutcome:
    """The record's `transfer` object."""

    to: str
    mode: str
    result: str  # answered, busy, no-answer, failed
    connect_time: datetime | None = None
    duration: int = 0
    cause: str | None = None  # the agent leg's (or the REFER's / sipfrag's) status code
    error: str | None = None
    recording: BridgeRecording | None = None  # "record": true: both legs, mixed (not a field)

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"to": self.to, "mode": self.mode, "result": self.result}
        if self.connect_time is not None:
            out["connect_time"] = self.connect_time.strftime("%Y-%m-%d %H:%M:%S")
        out["duration"] = self.duration
        if self.cause is not None:
            out["cause"] = self.cause
        if self.error:
            out["error"] = self.error
        return out


_RINGBACK: dict[tuple[str, ...], Prompt] = {}


def ringback(codecs: tuple[str, ...]) -> Prompt:
    """One ringback cadence (2 s tone, 4 s silence) as a prompt, built once per codec set."""
    prompt = _RINGBACK.get(codecs)
    if prompt is None:
        t = np.arange(int(RINGBACK_ON * SAMPLE_RATE)) / SAMPLE_RATE
        tone = sum(np.sin(2 * np.pi * f * t) for f in RINGBACK_HZ) * RINGBACK_LEVEL
        pcm = np.concatenate([tone, np.zeros(int(RINGBACK_OFF * SAMPLE_RATE))]).astype(np.float32)
        chunks = {c: (encode_frames(pcm, c),) for c in codecs}
        prompt = Prompt(
            (AudioSegment(MappingProxyType(chunks)),), codecs, RINGBACK_ON + RINGBACK_OFF
        )
        _RINGBACK[codecs] = prompt
    return prompt


def leg_id(call_id: str) -> str:
    """The agent leg's id for the limits' leases (36 characters, like a call id)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ringcast:{call_id}:agent"))


def _result(outcome: Outcome) -> str:
    if outcome is Outcome.ANSWERED:
        return "answered"
    if outcome is Outcome.BUSY:
        return "busy"
    if outcome is Outcome.NO_ANSWER:
        return "no-answer"
    return "failed"


async def _hold(media: MediaSession, prompt: Prompt, until: asyncio.Future[Any]) -> None:
    """Play `prompt` to the callee over and over until `until` is done."""
    while not until.done():
        await media.play(prompt)


async def bridge(
    step: Transfer,
    job: CallJob,
    ctx: CallContext,
    call: OutboundCall,
    media: MediaSession,
    out: TransferOutcome,
    *,
    hold: Prompt | None,
    limits: LegLimits | None,
) -> None:
    """Dial the agent, hold the callee, relay both ways; the agent leg has ended on
    return (also when cancelled). `out` says how far it got."""
    lid = leg_id(job.call_id)
    if limits is not None:
        refusal = await limits.acquire(lid)
        if refusal is not None:
            out.error = f"no channel for the agent leg: {refusal}"
            return
    try:
        await _bridge(step, job, ctx, call, media, hold, out)
    finally:
        if limits is not None:
            with contextlib.suppress(Exception):
                await limits.release(lid)


async def _bridge(
    step: Transfer,
    job: CallJob,
    ctx: CallContext,
    call: OutboundCall,
    media: MediaSession,
    hold: Prompt | None,
    out: TransferOutcome,
) -> None:
    try:
        agent_media = await MediaSession.open(ctx.clock, ctx.ports, bind_host=ctx.rtp_bind_host)
    except Exception as exc:  # noqa: BLE001 - no port fails the transfer, not the call
        out.error = f"no RTP port for the agent leg: {exc}"
        return
    try:
        spec = call_spec(
            job,
            ctx,
            agent_media.local_port,
            to=step.to,
            from_=step.from_ or job.from_,
            codecs=[media.codec, *(c for c in job.codecs if c != media.codec)],  # no transcoding
            ring_timeout=step.timeout,
        )

        def on_media(answer: Any) -> None:
            aim(agent_media, answer, agent.signalling_host)

        try:
            agent = OutboundCall(ctx.sip, spec, on_media=on_media)
        except ValueError as exc:
            out.error = f"cannot call {step.to}: {exc}"
            return
        setup = asyncio.create_task(agent.setup(), name=f"transfer-setup-{job.call_id}")
        holding = asyncio.create_task(
            _hold(media, hold or ringback(tuple(dict.fromkeys([media.codec]))), setup),
            name=f"transfer-hold-{job.call_id}",
        )
        try:
            answered = await _agent_setup(setup, call, agent)
        finally:
            media.stop()
            holding.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await holding
        out.cause = str(agent.status_code) if agent.status_code else None
        if not answered or agent.answer is None:
            out.result = "failed" if agent.error else _result(agent.outcome)
            out.error = agent.error
            if answered:
                await agent.hangup()
            return
        out.result = "answered"
        out.connect_time = agent.answered_at
        aim(agent_media, agent.answer, agent.signalling_host)
        try:
            if step.record:
                out.recording = BridgeRecording(started=time.monotonic())
            await _relay(ctx, call, media, agent, agent_media, out.recording)
        finally:
            out.cause = str(agent.status_code)
            ended = agent.ended_at or utcnow()
            if agent.answered_at is not None:
                out.duration = max(0, int((ended - agent.answered_at).total_seconds()))
    finally:
        with contextlib.suppress(Exception):
            await agent_media.close()


async def _agent_setup(setup: asyncio.Task[bool], call: OutboundCall, agent: OutboundCall) -> bool:
    """The agent's answer, or False when the callee hung up first (the agent is canceled)."""
    ended = asyncio.create_task(call.ended.wait(), name="transfer-callee-ended")
    try:
        try:
            await asyncio.wait({setup, ended}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await asyncio.shield(agent.hangup(reason="canceled"))
            raise
        if not setup.done():
            await agent.hangup(reason="canceled")
        return bool(await setup) and not call.ended.is_set()
    finally:
        ended.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ended


async def _relay(
    ctx: CallContext,
    call: OutboundCall,
    media: MediaSession,
    agent: OutboundCall,
    agent_media: MediaSession,
    recording: BridgeRecording | None = None,
) -> None:
    """Relay until either leg ends (or this task is cancelled); then hang up both.
    With `recording`, what each leg says is fed to it (leg 0 the callee, 1 the agent)."""
    relay = Bridge(ctx.clock, media, agent_media)
    if recording is not None:
        relay.a_to_b.listener = _feeder(recording, 0, media.codec)
        relay.b_to_a.listener = _feeder(recording, 1, agent_media.codec)
    # the callee's digits go on into the record (its session no longer reads them);
    # INFO digits of either leg reach the other as RFC 4733 events
    hear_digits(relay.a_to_b, media.on_digit)
    callee_dtmf = call.on_dtmf

    def callee_info(digit: str) -> None:
        if callee_dtmf is not None:
            callee_dtmf(digit)
        relay_info_digit(relay.a_to_b, digit)

    call.on_dtmf = callee_info
    agent.on_dtmf = lambda digit: _relayed(relay_info_digit(relay.b_to_a, digit), digit)
    relay.start()
    waits = [
        asyncio.create_task(call.ended.wait(), name="bridge-callee-ended"),
        asyncio.create_task(agent.ended.wait(), name="bridge-agent-ended"),
    ]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        relay.stop()
        call.on_dtmf = callee_dtmf
        agent.on_dtmf = None
        for task in waits:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        a, b = relay.a_to_b.stats(), relay.b_to_a.stats()
        log.info(
            "bridge ended: callee->agent %s packets (%s dropped), agent->callee %s (%s dropped)",
            a.packets,
            a.dropped,
            b.packets,
            b.dropped,
        )
        if not agent.ended.is_set():
            await asyncio.shield(agent.hangup())
        if not call.ended.is_set():
            await asyncio.shield(call.hangup())


def _relayed(sent: bool, digit: str) -> None:
    if not sent:
        log.info("bridge: agent's INFO digit %s not relayed (the callee takes no events)", digit)


def _feeder(recording: BridgeRecording, leg: int, codec: str) -> Callable[[bytes, int], None]:
    decode = get_codec(codec).decode

    def feed(payload: bytes, rtp_timestamp: int) -> None:
        recording.feed(leg, decode(payload), rtp_timestamp, time.monotonic())

    return feed


async def blind(step: Transfer, call: OutboundCall, out: TransferOutcome) -> None:
    """REFER the callee to the target (RFC 3515) and follow its NOTIFYs."""
    by = call.dialog.local_uri if call.dialog is not None else ""
    machine = await refer(call, step.to, by, wait=step.timeout + 12.0)
    out.result = transfer_result(machine.state, machine.status)
    out.cause = str(machine.status) if machine.status else None
    if machine.state is ReferState.REFUSED:
        out.error = f"REFER refused: {machine.status} {machine.reason}".strip()
    elif machine.state is ReferState.FAILED:
        out.error = f"transfer failed: {machine.status or ''} {machine.reason}".strip()
    else:
        out.connect_time = utcnow()
