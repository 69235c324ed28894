"""`ringcast call`: one call from the terminal, in this process, no server.

The same call path as the dialer (prompt preparation, `place_call`), with the
record printed instead of stored.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ringcast.config import Settings
from ringcast.dialer.call import (
    CallContext,
    CallJob,
    CallReport,
    TrunkGone,
    failed_report,
    media_fetcher,
    place_call,
    resolve_sip,
    rtp_bind_host,
    sip_endpoint,
)
from ringcast.dialer.carrier import NotRoutable, TrunkRegistrations, route
from ringcast.domain import utcnow
from ringcast.errors import MediaError
from ringcast.media.prompt import prepare_prompt
from ringcast.rtp import PortAllocator, RtpClock
from ringcast.store.records import record_dict


@dataclass
class _Record:
    """A call row's fields, filled from a CallReport (what record_dict reads)."""

    id: str
    result: str
    request_time: datetime
    to_uri: str
    from_uri: str
    setup_time: datetime | None
    connect_time: datetime | None
    disconnect_time: datetime | None
    disconnect_cause_code: str | None
    disconnect_cause_text: str | None
    duration: int
    answered: bool
    outcome: str | None
    attempt: int
    codec: str | None
    error: str | None
    dtmf: str | None
    answered_by: str | None = None
    machine_detection_ms: int | None = None
    voicemail: str | None = None
    srtp: str | None = None
    transfer: str | None = None  # JSON text, as stored (a gather action's transfer)
    recordings: str | None = None  # JSON text (`ringcast call` stores none)


def report_record(
    call_id: str, to: str, from_: str, request_time: datetime, report: CallReport
) -> dict[str, Any]:
    f = report.fields()
    return record_dict(
        _Record(
            id=call_id,
            request_time=request_time,
            to_uri=to,
            from_uri=from_,
            attempt=1,
            **{k: f[k] for k in f if k not in ("optout",)},
        )
    )


async def run_single_call(
    settings: Settings,
    to: str,
    *,
    play: str | None = None,
    say: str | None = None,
    from_: str = "ringcast",
    ring_timeout: float = 30.0,
    max_duration: float = 3600.0,
    sip_options: dict[str, Any] | None = None,
    machine_detection: str | None = None,
    trunk: str | None = None,
    country: str | None = None,
) -> dict[str, Any]:
    """Place one call to `to` playing `play` (URL) and/or `say` (text); return its record.

    `to` may be a number (DESIGN "Phone numbers and carriers"): it goes through
    `trunk` (else the config's `default_trunk`), read in `country` when national;
    a trunk with ``register = true`` is registered for the call and unregistered after."""
    playlist: list[dict[str, Any]] = []
    if play:
        playlist.append({"play": play})
    if say:
        playlist.append({"say": say})
    if not playlist:
        raise ValueError("give --play URL or --say TEXT")
    call_id = str(uuid.uuid4())
    request_time = utcnow()
    body: dict[str, Any] = {"sip": {"trunk": trunk} if trunk else None, "country": country}
    try:
        dial = route(body, to, from_, settings)
        via_trunk = resolve_sip({"trunk": dial.trunk}, settings.trunks, None) if dial.trunk else {}
    except (NotRoutable, TrunkGone) as exc:
        return report_record(call_id, to, from_, request_time, failed_report(exc.message))
    sip_options = {**via_trunk, **dict(sip_options or {})}
    if dial.headers:
        sip_options["headers"] = {**dial.headers, **dict(sip_options.get("headers") or {})}
    codecs = tuple(sip_options.get("codecs") or ("PCMU", "PCMA"))
    try:
        fetcher = media_fetcher(settings)
        prompt = await prepare_prompt(
            playlist, codecs=codecs, max_duration=max_duration, http=fetcher
        )
    except MediaError as exc:
        report = failed_report(f"prompt could not be prepared: {exc.message}")
        return report_record(call_id, to, from_, request_time, report)
    sip = sip_endpoint(settings)
    clock = RtpClock()
    await sip.start()
    clock.start()
    trunks = {dial.trunk: settings.trunks[dial.trunk]} if dial.trunk else {}
    registrations = TrunkRegistrations(sip, trunks)
    registrations.start()
    try:
        await registrations.ready(dial.trunk)
        ctx = CallContext(
            sip=sip,
            clock=clock,
            ports=PortAllocator(settings.rtp_port_min, settings.rtp_port_max),
            public_ip=settings.public_ip,
            rtp_bind_host=rtp_bind_host(settings),
        )
        job = CallJob(
            call_id=call_id,
            request_id=call_id,
            to=dial.request_uri,
            from_=from_,
            attempt=1,
            ring_timeout=ring_timeout,
            max_duration=max_duration,
            sip=sip_options,
            machine_detection={"mode": machine_detection} if machine_detection else None,
        )
        report = await place_call(job, prompt, ctx)
    except NotRoutable as exc:  # its trunk's registration stayed down
        report = failed_report(exc.message)
    finally:
        await registrations.stop()
        await clock.stop()
        await sip.close()
    return report_record(call_id, to, from_, request_time, report)
