"""`ringcast recordings get ID -o file.wav` and `ringcast recordings delete ID`.

Against a server (`--url`, `--key` as the other client commands); ID is the
last part of a record's `recordings[].url` (the whole `/recordings/ID` works too).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from ringcast.cli.common import DEFAULT_URL, ApiKey, Url, fail

recordings_app = typer.Typer(
    help="Recordings of what callees said (GET/DELETE /recordings/ID).", no_args_is_help=True
)


def _id(value: str) -> str:
    return value.rstrip("/").rsplit("/", 1)[-1]


@recordings_app.command("get")
def recordings_get(
    id: Annotated[str, typer.Argument(help="recording id (or its /recordings/ID url)")],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="WAV file to write (- for stdout)"),
    ] = None,
    url: Url = DEFAULT_URL,
    key: ApiKey = None,
) -> None:
    """Download a recording as an 8 kHz mono WAV file (default: recording-ID.wav)."""
    from ringcast.client import Client, ClientError  # httpx only when used

    rid = _id(id)
    target = output or Path(f"recording-{rid}.wav")
    to_stdout = str(target) == "-"
    partial = target.with_name(target.name + ".part")
    try:
        with Client(url, key) as api:
            if to_stdout:
                api.download_recording(rid, sys.stdout.buffer)
                sys.stdout.buffer.flush()
                return
            with open(partial, "wb") as out:
                size = api.download_recording(rid, out)
            os.replace(partial, target)  # a failed download leaves no half file behind
    except ClientError as exc:
        raise fail(exc.message, 1) from None
    except OSError as exc:
        raise fail(f"cannot write {target}: {exc.strerror or exc}", 1) from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()
    typer.echo(f"{target}: {size} bytes", err=True)


@recordings_app.command("delete")
def recordings_delete(
    id: Annotated[str, typer.Argument(help="recording id (or its /recordings/ID url)")],
    url: Url = DEFAULT_URL,
    key: ApiKey = None,
) -> None:
    """Delete a recording (DELETE /recordings/ID)."""
    from ringcast.client import Client, ClientError

    try:
        with Client(url, key) as api:
            api.delete_recording(_id(id))
    except ClientError as exc:
        raise fail(exc.message, 1) from None
    typer.echo("deleted")
