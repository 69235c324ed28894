"""The client commands, against a running server (`--url`, `--key`): `broadcast`
(a CSV, live progress, a summary), `pause`, `resume`, `replay`, `status`,
`report`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ringcast.cli.common import (
    DEFAULT_URL,
    ApiKey,
    Priority,
    Url,
    client,
    client_errors,
    fail,
)


def broadcast(
    csv_file: Annotated[
        Path,
        typer.Argument(
            help="CSV with a header row: to (SIP URI, tel: URI or phone number), optional "
            "from and timezone; "
            "other columns become say variables ({name})",
            metavar="RECIPIENTS.csv",
        ),
    ],
    play: Annotated[str | None, typer.Option("--play", help="URL of audio to play")] = None,
    say: Annotated[
        str | None, typer.Option("--say", help='text to speak, e.g. "Hello {name}"')
    ] = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="From user, SIP URI or E.164 caller ID")
    ] = None,
    ring_timeout: Annotated[
        int | None, typer.Option("--ring-timeout", help="seconds of ringing before no-answer")
    ] = None,
    trunk: Annotated[
        str | None, typer.Option("--trunk", help="the server's trunk numbers go through")
    ] = None,
    country: Annotated[
        str | None, typer.Option("--country", help="country of national numbers, e.g. US")
    ] = None,
    interval: Annotated[float, typer.Option("--interval", help="seconds between polls")] = 1.0,
    priority: Priority = None,
    url: Url = DEFAULT_URL,
    key: ApiKey = None,
) -> None:
    """Submit a broadcast from a CSV, show live progress until its report is ready,
    then a summary table of outcomes."""
    import uuid

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Table

    from ringcast import client as rc

    if (play is None) == (say is None):
        raise fail("give exactly one of --play URL or --say TEXT")
    if interval <= 0:
        raise fail("--interval must be above 0")
    with client_errors(), client(url, key) as api:
        recipients = rc.read_recipients(csv_file)
        body = rc.build_request(
            recipients,
            play=play,
            say=say,
            from_=from_,
            ring_timeout=ring_timeout,
            priority=priority,
            trunk=trunk,
            country=country,
        )
        request_id = api.submit(body, idempotency_key=str(uuid.uuid4()))
        err = Console(stderr=True)
        err.print(f"request [bold]{request_id}[/] accepted: {len(recipients)} calls")
        progress = Progress(
            TextColumn("[bold]calls"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        try:
            with progress:
                task = progress.add_task("calls", total=len(recipients), counts="queued")

                def show(p: dict[str, Any]) -> None:
                    progress.update(
                        task,
                        total=p["total"],
                        completed=p["done"],
                        counts=rc.counts_text(p["counts"]),
                    )

                final = rc.wait_until_done(api, request_id, show, interval=interval)
        except KeyboardInterrupt:
            err.print(f"still running: ringcast status {request_id}")
            raise typer.Exit(130) from None
        summary = rc.summarize(api.iter_records(final["report_id"]))
        table = Table()
        table.add_column("outcome")
        table.add_column("calls", justify="right")
        table.add_column("share", justify="right")
        for outcome, n in summary.rows():
            table.add_row(outcome, str(n), f"{100 * n / max(summary.total, 1):.0f}%")
        table.add_section()
        table.add_row("total", str(summary.total), "100%")
        out = Console(width=max(Console().width, 60))
        out.print(f"request {request_id}: {summary.total} calls, report ready")
        out.print(table)
        out.print(
            f"connected seconds: {summary.connected_seconds}"
            f" · pace: {final['calls_per_minute']:.1f} calls/min"
        )
        out.print(f"report: ringcast report {final['report_id']} --format csv > report.csv")


def pause(
    request_id: Annotated[str, typer.Argument(help="request id")],
    url: Url = DEFAULT_URL,
    key: ApiKey = None,
) -> None:
    """Stop dialing a request's queued calls (POST /voice/call/ID/pause); live calls finish."""
    with client_errors(), client(url, key) as api:
        answer = api.pause(request_id)
        typer.echo(f"request {request_id} paused: {answer['queued']} calls wait")


def resume(
    request_id: Annotated[str, typer.Argument(help="request id")],
    url: Url = DEFAULT_URL,
    key: ApiKey = None,
) -> None:
    """Dial a paused request's queued calls again (POST /voice/call/ID/resume)."""
    with client_errors(), client(url, key) as api:
        answer = api.pause(request_id, resume=True)
        typer.echo(f"request {request_id} resumed: {answer['queued']} calls queued")


def replay(
    request_id: Annotated[str, typer.Argument(help="the earlier request's id")],
    play: Annotated[str | None, typer.Option("--play", help="URL of audio to play")] = None,
    say: Annotated[
        str | None, typer.Option("--say", help='text to speak, e.g. "Hello {name}"')
    ] = None,
    only: Annotated[
        str | None,
        typer.Option("--only", help="only recipients with these outcomes, e.g. busy,no-answer"),
    ] = None,
    from_: Annotated[str | None, typer.Option("--from", help="From user or SIP URI")] = None,
    priority: Priority = None,
    url: Url = DEFAULT_URL,
    key: ApiKey = None,
) -> None:
    """Call a request's recipients again with a new message
    (POST /voice/call/ID/replay); prints the new request id."""
    import uuid

    from ringcast import client as rc

    if (play is None) == (say is None):
        raise fail("give exactly one of --play URL or --say TEXT")
    body = rc.build_request(None, play=play, say=say, from_=from_, priority=priority)
    if only is not None:
        body["only"] = [o.strip() for o in only.split(",") if o.strip()]
    with client_errors(), client(url, key) as api:
        typer.echo(api.replay(request_id, body, idempotency_key=str(uuid.uuid4())))


def status(
    id: Annotated[str, typer.Argument(help="request id or call id")],
    json_: Annotated[
        bool | None,
        typer.Option("--json/--text", help="raw JSON (default when stdout is not a terminal)"),
    ] = None,
    url: Url = DEFAULT_URL,
    key: ApiKey = None,
) -> None:
    """Print the status of a request or a call (GET /voice/call/status/ID)."""
    from ringcast import client as rc

    with client_errors(), client(url, key) as api:
        body = api.status(id)
        as_json = json_ if json_ is not None else not sys.stdout.isatty()
        if as_json:
            typer.echo(json.dumps(body, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(show_header=False, box=None)
        if "report" in body:
            ref = body["report"]
            p = api.progress(id)
            table.add_row("request", id)
            table.add_row("status", f"{p['status']} (report {ref['status']})")
            table.add_row("done", f"{ref['done']} / {ref['total']}")
            table.add_row("calls", rc.counts_text(p["counts"]))
            table.add_row("calls/min", f"{p['calls_per_minute']:.1f}")
            table.add_row("report", f"{ref['id']} ({ref['location']})")
        else:
            for name, value in body.get("record", {}).items():
                table.add_row(name, str(value))
        Console().print(table)


def report(
    id: Annotated[str, typer.Argument(help="report id (from status), or a request id")],
    format: Annotated[str, typer.Option("--format", help="json, csv or ndjson")] = "json",
    url: Url = DEFAULT_URL,
    key: ApiKey = None,
) -> None:
    """Print a report (GET /report/ID), streamed: `--format csv > out.csv`."""
    if format not in ("json", "csv", "ndjson"):
        raise fail("--format must be json, csv or ndjson")
    with client_errors(), client(url, key) as api:
        out = sys.stdout
        for chunk in api.stream_report(api.report_id_for(id), format):
            out.write(chunk)
        if format == "json":
            out.write("\n")
        out.flush()
