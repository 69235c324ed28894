"""The CLI's client side: talk to a running ringcast over its public HTTP API.

`ringcast broadcast`, `status` and `report` (in :mod:`ringcast.cli`) are thin
wrappers around this module. A server error becomes one :class:`ClientError`
line (`HTTP 422: recipients[1].to: must be a SIP URI ...`); nothing here
prints a traceback.
"""

from __future__ import annotations

import csv
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ringcast.errors import RingcastError

logger = logging.getLogger(__name__)

RESERVED_COLUMNS = ("to", "from", "timezone")  # every other CSV column is a say variable
MAX_CSV_BYTES = 64 * 1024 * 1024
REQUEST_TIMEOUT = 30.0  # seconds per HTTP request
SUBMIT_TIMEOUT = 300.0  # seconds for POST (a large broadcast is committed before the answer)
ORDER = (
    "answered",
    "busy",
    "no-answer",
    "declined",
    "rejected",
    "failed",
    "canceled",
    "suppressed",
)


class ClientError(RingcastError):
    """The server could not be reached or answered with an error."""


class CsvError(ClientError):
    """The recipients file cannot be used."""


def read_recipients(path: Path) -> list[dict[str, Any]]:
    """Recipients from a CSV file with a header row: `to` (required), optional
    `from` and `timezone`; every other non-empty column becomes a `say` variable."""
    try:
        if path.stat().st_size > MAX_CSV_BYTES:
            raise CsvError(f"{path}: larger than {MAX_CSV_BYTES // (1024 * 1024)} MiB")
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            if "to" not in columns:
                raise CsvError(f"{path}: the header row has no 'to' column")
            reader.fieldnames = columns
            out = []
            for line, row in enumerate(reader, start=2):
                if None in row:
                    raise CsvError(f"{path}:{line}: more fields than the header has")
                values = {k: (v or "").strip() for k, v in row.items()}
                if not any(values.values()):
                    continue  # blank line
                recipient: dict[str, Any] = {"to": values["to"]}
                if values.get("from"):
                    recipient["from"] = values["from"]
                if values.get("timezone"):
                    recipient["timezone"] = values["timezone"]
                variables = {
                    k: v for k, v in values.items() if k not in RESERVED_COLUMNS and k and v
                }
                if variables:
                    recipient["variables"] = variables
                out.append(recipient)
    except OSError as exc:
        raise CsvError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CsvError(f"{path}: not UTF-8 text") from None
    except csv.Error as exc:
        raise CsvError(f"{path}: {exc}") from None
    if not out:
        raise CsvError(f"{path}: no recipients")
    return out


def build_request(
    recipients: list[dict[str, Any]] | None,
    *,
    play: str | None,
    say: str | None,
    from_: str | None,
    ring_timeout: int | None = None,
    priority: int | None = None,
    trunk: str | None = None,
    country: str | None = None,
) -> dict[str, Any]:
    """The POST /voice/call/play body (without `recipients` when None: a replay);
    `trunk` and `country` route recipients given as numbers."""
    playlist: list[dict[str, Any]] = []
    if play is not None:
        playlist.append({"play": play})
    if say is not None:
        playlist.append({"say": say})
    body: dict[str, Any] = {"playlist": playlist}
    if recipients is not None:
        body = {"recipients": recipients, **body}
    if from_ is not None:
        body["from"] = from_
    if ring_timeout is not None:
        body["ring_timeout"] = ring_timeout
    if priority is not None:
        body["priority"] = priority
    if trunk is not None:
        body["sip"] = {"trunk": trunk}
    if country is not None:
        body["country"] = country
    return body


def error_line(response: httpx.Response) -> str:
    """One line for an error answer: `HTTP 422: <the envelope's message>`."""
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        message = message or response.reason_phrase
    return f"HTTP {response.status_code}: {' '.join(message.split())}"


class Client:
    """A small synchronous client for one server (`url`) and an optional API key."""

    def __init__(self, url: str, key: str | None = None) -> None:
        if not logger.isEnabledFor(logging.DEBUG):
            logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll is noise
        self.url = url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "ringcast-cli"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=REQUEST_TIMEOUT)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise ClientError(error_line(response))
        return response

    def get_json(self, path: str, **params: Any) -> dict[str, Any]:
        response = self._call("GET", path, params=params or None)
        try:
            body = response.json()
        except ValueError:
            raise ClientError(f"{path}: the server did not answer JSON") from None
        if not isinstance(body, dict):
            raise ClientError(f"{path}: unexpected answer")
        return body

    def submit(self, body: dict[str, Any], idempotency_key: str | None = None) -> str:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        response = self._call(
            "POST", "/voice/call/play", json=body, headers=headers, timeout=SUBMIT_TIMEOUT
        )
        return str(response.json()["request_id"])

    def status(self, id: str) -> dict[str, Any]:
        return self.get_json(f"/voice/call/status/{id}")

    def post_json(
        self, path: str, body: dict[str, Any] | None = None, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        response = self._call("POST", path, json=body, headers=headers, timeout=SUBMIT_TIMEOUT)
        try:
            answer = response.json()
        except ValueError:
            raise ClientError(f"{path}: the server did not answer JSON") from None
        if not isinstance(answer, dict):
            raise ClientError(f"{path}: unexpected answer")
        return answer

    def pause(self, request_id: str, *, resume: bool = False) -> dict[str, Any]:
        """POST /voice/call/ID/pause (or /resume)."""
        return self.post_json(f"/voice/call/{request_id}/{'resume' if resume else 'pause'}")

    def replay(
        self, request_id: str, body: dict[str, Any], idempotency_key: str | None = None
    ) -> str:
        """POST /voice/call/ID/replay: the new request's id."""
        answer = self.post_json(
            f"/voice/call/{request_id}/replay", body, idempotency_key=idempotency_key
        )
        return str(answer["request_id"])

    def progress(self, request_id: str) -> dict[str, Any]:
        """The dashboard's view of a request: counts by state, pace, ETA."""
        return dict(self.get_json(f"/requests/{request_id}")["request"])

    def report_id_for(self, id: str) -> str:
        """`id` itself when it is a report id, else the report id of request `id`."""
        try:
            self._call("GET", f"/report/{id}", params={"limit": 1})
            return id
        except ClientError as first:
            try:
                return str(self.progress(id)["report_id"])
            except ClientError:
                raise first from None

    def stream_report(self, report_id: str, format: str) -> Iterator[str]:
        """The report as text chunks (json, csv or ndjson), streamed."""
        try:
            with self.http.stream(
                "GET", f"/report/{report_id}", params={"format": format}, timeout=None
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ClientError(error_line(response))
                yield from response.iter_text()
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.url}: {exc}") from None

    def download_recording(self, recording_id: str, out: Any) -> int:
        """Write GET /recordings/ID (a WAV) to the binary file `out`; the bytes written."""
        written = 0
        try:
            with self.http.stream("GET", f"/recordings/{recording_id}", timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ClientError(error_line(response))
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    written += len(chunk)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.url}: {exc}") from None
        return written

    def delete_recording(self, recording_id: str) -> None:
        self._call("DELETE", f"/recordings/{recording_id}")

    def iter_records(self, report_id: str) -> Iterator[dict[str, Any]]:
        import json

        buffer = ""
        for chunk in self.stream_report(report_id, "ndjson"):
            buffer += chunk
            *lines, buffer = buffer.split("\n")
            for line in lines:
                if line.strip():
                    yield json.loads(line)
        if buffer.strip():
            yield json.loads(buffer)


def wait_until_done(
    client: Client,
    request_id: str,
    on_progress: Callable[[dict[str, Any]], None],
    *,
    interval: float = 1.0,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Poll the request's progress until every call is final (or `timeout` seconds)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        progress = client.progress(request_id)
        on_progress(progress)
        if progress["done"] >= progress["total"]:
            return progress
        if deadline is not None and time.monotonic() >= deadline:
            raise ClientError(f"request {request_id} not finished after {timeout:.0f}s")
        time.sleep(interval)


@dataclass(slots=True)
class Summary:
    """Outcomes of a finished report."""

    total: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    connected_seconds: int = 0

    def add(self, record: dict[str, Any]) -> None:
        self.total += 1
        self.outcomes[str(record.get("outcome") or record.get("result") or "unknown")] += 1
        if record.get("answered"):
            self.connected_seconds += int(record.get("duration") or 0)

    def rows(self) -> list[tuple[str, int]]:
        known = [(o, self.outcomes[o]) for o in ORDER if self.outcomes[o]]
        other = sorted((o, n) for o, n in self.outcomes.items() if o not in ORDER)
        return known + other


def summarize(records: Iterator[dict[str, Any]]) -> Summary:
    summary = Summary()
    for record in records:
        summary.add(record)
    return summary


def counts_text(counts: dict[str, int]) -> str:
    """`answered 3 · busy 1 · in progress 2 · queued 4` (states with calls only)."""
    names = [*ORDER, "in-progress", "queued"]
    parts = [f"{s.replace('-', ' ')} {counts[s]}" for s in names if counts.get(s)]
    parts += [f"{s} {n}" for s, n in counts.items() if s not in names and n]
    return " · ".join(parts) or "queued"
