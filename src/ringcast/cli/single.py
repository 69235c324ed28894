"""`ringcast call`: one call from the terminal, no server and no database; prints
the call's record."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from ringcast.cli.common import (
    ConfigFile,
    PublicIp,
    RtpPorts,
    Sip,
    SipTransport,
    fail,
    run,
    settings_from,
)
from ringcast.errors import RingcastError


def call(
    uri: Annotated[
        str,
        typer.Argument(
            help="SIP URI to call, e.g. sip:alice@192.0.2.1:5060, or a number "
            "(+15550100001, tel:...) dialled through --trunk or the config's default_trunk"
        ),
    ],
    play: Annotated[str | None, typer.Option("--play", help="URL of audio to play")] = None,
    say: Annotated[str | None, typer.Option("--say", help="text to speak")] = None,
    from_: Annotated[str, typer.Option("--from", help="From user or SIP URI")] = "ringcast",
    ring_timeout: Annotated[float, typer.Option("--ring-timeout", help="seconds")] = 30.0,
    max_duration: Annotated[float, typer.Option("--max-duration", help="seconds")] = 3600.0,
    machine_detection: Annotated[
        str | None,
        typer.Option(
            "--machine-detection",
            help="detect | drop | hangup: tell a person from a machine (record: answered_by)",
        ),
    ] = None,
    trunk: Annotated[
        str | None, typer.Option("--trunk", help="trunk of the config file to call through")
    ] = None,
    country: Annotated[
        str | None, typer.Option("--country", help="country of a national number, e.g. US")
    ] = None,
    srtp: Annotated[
        str,
        typer.Option("--srtp", help="off | optional | required: SDES-SRTP media (record: srtp)"),
    ] = "off",
    sip: Sip = None,
    sip_transport: SipTransport = None,
    rtp_ports: RtpPorts = None,
    public_ip: PublicIp = None,
    config: ConfigFile = None,
) -> None:
    """Place one call from the terminal and print its record (no server, no database)."""
    if play is None and say is None:
        raise fail("give --play URL and/or --say TEXT")
    if machine_detection not in (None, "detect", "drop", "hangup"):
        raise fail("--machine-detection is detect, drop or hangup")
    if srtp not in ("off", "optional", "required"):
        raise fail("--srtp is off, optional or required")
    settings = settings_from(
        sip=sip,
        sip_transport=sip_transport,
        rtp_ports=rtp_ports,
        public_ip=public_ip,
        config=config,
    )
    if trunk is not None and trunk not in settings.trunks:
        raise fail(f"--trunk {trunk}: no [trunks.{trunk}] table in the config file (--config)")
    try:
        from ringcast.dialer.single import run_single_call
    except ImportError as exc:
        raise fail(f"single calls are not available in this build ({exc})") from None
    from ringcast.dialer.call import check_addresses

    try:
        check_addresses(settings)
    except RingcastError as exc:
        raise fail(exc.message, 1) from None
    record: dict[str, Any] = {}

    async def one() -> None:
        record.update(
            await run_single_call(
                settings,
                uri,
                play=play,
                say=say,
                from_=from_,
                ring_timeout=ring_timeout,
                max_duration=max_duration,
                machine_detection=machine_detection,
                trunk=trunk,
                country=country,
                sip_options={"srtp": srtp} if srtp != "off" else None,
            )
        )

    run(one(), settings.event_loop)
    typer.echo(json.dumps(record, indent=2))
    if record.get("result") == "failed":
        raise typer.Exit(1)
