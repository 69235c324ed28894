"""The `ringcast` command line.

Server commands (`serve`, `api`, `dialer`, `call`) share the flags of
:mod:`ringcast.cli.common`; each flag is also read from `RINGCAST_<NAME>`, and
a `--config` TOML file sits under both. Client commands (`broadcast`, `status`,
`report`, ...) talk to a running server at `--url` (`RINGCAST_URL`); `keys` and
`dnc` work on the database.

Hook points: `serve` and `dialer` run `ringcast.dialer.service.dialer_lifespan
(settings)` (a factory `hook(app_state) -> AsyncContextManager`); `call` runs
`ringcast.dialer.single.run_single_call(settings, to, play=, say=, from_=,
ring_timeout=, max_duration=)`. Either module missing gives a clear error.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Annotated

import typer

import ringcast
from ringcast.cli import admin, remote, server, single
from ringcast.cli.common import fail
from ringcast.cli.recordings import recordings_app

app = typer.Typer(
    name="ringcast",
    help="Self-hosted voice broadcast: SIP calls that play audio, with call records.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(
    log_level: Annotated[
        str, typer.Option("--log-level", envvar="RINGCAST_LOG_LEVEL", help="debug, info, warning")
    ] = "info",
    log_json: Annotated[
        bool,
        typer.Option("--log-json", envvar="RINGCAST_JSON_LOGS", help="one JSON object per line"),
    ] = False,
) -> None:
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise fail(f"--log-level must be debug, info, warning or error, not {log_level!r}")
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from ringcast.logfmt import install_key_redaction

    install_key_redaction()  # SDES-SRTP keys never reach a log line
    if log_json:
        from ringcast.logfmt import JsonFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    if level > logging.DEBUG:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    # aiosqlite's debug lines are every SQL statement with its parameters: request
    # bodies (SIP passwords) and webhook secrets. Never at any --log-level.
    logging.getLogger("aiosqlite").setLevel(max(level, logging.INFO))


for command in (
    server.serve,
    server.api,
    server.dialer,
    single.call,
    remote.broadcast,
    remote.pause,
    remote.resume,
    remote.replay,
    remote.status,
    remote.report,
):
    app.command()(command)
app.add_typer(admin.keys_app, name="keys")
app.add_typer(admin.dnc_app, name="dnc")
app.add_typer(recordings_app, name="recordings")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(ringcast.__version__)


def main() -> None:
    """Console-script entry point."""
    with contextlib.suppress(BrokenPipeError):
        app()
