"""Scale-out on the machine's real PostgreSQL: one `ringcast api`, two
`ringcast dialer` processes, 300 recipients answered by SIPp, one dialer
killed with -9 mid-run."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from sipp import SippUas
from sqlalchemy.engine import make_url

from e2e.server import RingcastServer

RECIPIENTS = 300
MAX_CONCURRENT = 12  # the request's own limit, enforced across the fleet


def completed_calls_peak(uas: SippUas) -> int:
    """SIPp's concurrent-call high-water mark over the calls that ended with a
    BYE. The killed dialer's calls never get one (they hang at the callee until
    its own timers end them); after the rescue they no longer count against the
    fleet's limit, so they are left out of the mark."""
    ended = set()
    for _, msg in uas.timeline():
        if msg.startswith("BYE "):
            for line in msg.splitlines():
                if line.lower().startswith(("call-id:", "i:")):
                    ended.add(line.split(":", 1)[1].strip())
    live: set[str] = set()
    peak = 0
    for _, msg in uas.timeline():
        cid = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in msg.splitlines()
                if ln.lower().startswith(("call-id:", "i:"))
            ),
            None,
        )
        if cid is None or cid not in ended:
            continue
        if msg.startswith("INVITE ") and cid not in live:
            live.add(cid)
            peak = max(peak, len(live))
        elif msg.startswith("BYE "):
            live.discard(cid)
    return peak


@contextlib.contextmanager
def fleet(
    tmp_path: Path, db: str, *, node_timeout: float, args: list[str], dialers: int = 2
) -> Iterator[tuple[RingcastServer, list[RingcastServer]]]:
    """One `ringcast api` and `dialers` `ringcast dialer` processes on `db`."""
    env = {"RINGCAST_NODE_TIMEOUT": str(node_timeout)}
    procs = [RingcastServer(tmp_path, db=db, command="api")]
    try:
        procs[0].start()
        for _ in range(dialers):
            procs.append(
                RingcastServer(tmp_path, db=db, command="dialer", args=args, env=env).start()
            )
        yield procs[0], procs[1:]
    finally:
        for p in reversed(procs):
            p.stop()


def start_broadcast(
    api: RingcastServer,
    uas: SippUas,
    prefix: str,
    n: int,
    *,
    pause: float,
    wait_invites: int,
    **extra: Any,
) -> str:
    """POST n recipients, then wait until SIPp has seen `wait_invites` INVITEs."""
    r = httpx.post(
        f"{api.base}/voice/call/play",
        json={
            "recipients": [{"to": uas.uri(f"{prefix}{i:03d}")} for i in range(n)],
            "from": "me",
            "playlist": [{"pause": pause}],
            **extra,
        },
        timeout=30,
    )
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 60
    while len(uas.invite_times()) < wait_invites and time.monotonic() < deadline:
        time.sleep(0.05)
    return str(r.json()["request_id"])


def final_records(api: RingcastServer, rid: str) -> list[dict[str, Any]]:
    status = api.wait_ready(rid, timeout=120)
    report = httpx.get(f"{api.base}/report/{status['report']['id']}", timeout=30).json()
    return list(report["records"])


def test_two_dialers_one_killed_every_recipient_final_once(
    tmp_path: Path, sipp_bin: str, pg_url: str, rtp_sink: str
) -> None:
    with (
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as uas,
        fleet(tmp_path, pg_url, node_timeout=3, args=["--max-calls", "10", "--cps", "40"]) as (
            api,
            dialers,
        ),
    ):
        rid = start_broadcast(
            api, uas, "f", RECIPIENTS, pause=0.6, wait_invites=80, max_concurrent=MAX_CONCURRENT
        )
        dialers[0].kill9()
        records = final_records(api, rid)
    assert len(records) == RECIPIENTS
    per_user = uas.invites_per_user()
    assert max(per_user.values()) == 1, "a recipient was dialed twice"
    results = [r["result"] for r in records]
    assert set(results) <= {"completed", "failed"}, set(results)
    lost = [r for r in records if r["result"] == "failed"]
    assert all(r["error"] == "node lost" for r in lost), lost[:3]
    assert len(lost) <= 10  # at most what the killed dialer had in flight
    answered = [r for r in records if r["result"] == "completed"]
    assert all(r["answered"] for r in answered)
    assert len(answered) + len(lost) == RECIPIENTS
    assert len(per_user) >= len(answered)
    peak = completed_calls_peak(uas)
    assert 2 <= peak <= MAX_CONCURRENT, peak


def test_a_dialer_frozen_past_its_timeout_acts_on_nothing_it_lost(
    tmp_path: Path, sipp_bin: str, pg_url: str, rtp_sink: str
) -> None:
    """SIGSTOP one dialer for longer than node_timeout, then SIGCONT it: the
    other rescues its calls; the frozen one, back, must not dial or record
    anything it no longer owns (fencing), and rejoins."""
    n = 120
    with (
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as uas,
        fleet(tmp_path, pg_url, node_timeout=2, args=["--max-calls", "8", "--cps", "30"]) as (
            api,
            dialers,
        ),
    ):
        rid = start_broadcast(api, uas, "z", n, pause=0.8, wait_invites=30)
        frozen = dialers[0]
        assert frozen.proc is not None
        frozen.proc.send_signal(signal.SIGSTOP)
        time.sleep(5.0)  # > node_timeout: declared dead, its calls rescued
        frozen.proc.send_signal(signal.SIGCONT)
        records = final_records(api, rid)
        time.sleep(1.0)  # let the thawed dialer finish reacting
        log = frozen.log.read_text(errors="replace")
    per_user = uas.invites_per_user()
    assert max(per_user.values()) == 1, "a recipient was dialed twice"
    assert len(records) == n
    assert {r["result"] for r in records} <= {"completed", "failed"}
    lost = [r for r in records if r["result"] == "failed"]
    assert lost and all(r["error"] == "node lost" for r in lost)
    assert "was declared dead" in log
    # every answered record is the dialer's that really placed the call
    assert all(r["answered"] for r in records if r["result"] == "completed")


class CuttableRelay:
    """A TCP relay on 127.0.0.1 to `target` that can lose the database for a
    while: `cut()` resets every connection through it and refuses new ones
    until `restore()`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.down = threading.Event()
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.down.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
            with self.lock:
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.down.set()
        with self.lock:
            conns, self.open = self.open, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self.closed.set()
        self.cut()
        self.listener.close()
        self.thread.join(timeout=2)


def test_a_dialer_that_loses_the_database_is_replaced_and_fenced(
    tmp_path: Path, sipp_bin: str, pg_url: str, rtp_sink: str
) -> None:
    """One dialer reaches PostgreSQL through a relay that drops for longer than
    node_timeout: the other dialer rescues its calls (undialed back to the
    queue, in flight 'node lost'); when the database is back, the cut-off dialer
    writes nothing it lost, learns it was declared dead and rejoins. Nobody is
    dialed twice and every recipient ends final once."""
    n = 80
    url = make_url(pg_url)
    relay = CuttableRelay((url.host or "127.0.0.1", url.port or 5432))
    via_relay = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    env = {"RINGCAST_NODE_TIMEOUT": "2"}
    args = ["--max-calls", "6", "--cps", "30"]
    procs: list[RingcastServer] = []
    try:
        with SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as uas:
            api = RingcastServer(tmp_path, db=pg_url, command="api").start()
            procs.append(api)
            cut_off = RingcastServer(
                tmp_path, db=via_relay, command="dialer", args=args, env=env
            ).start()
            procs.append(cut_off)
            procs.append(
                RingcastServer(tmp_path, db=pg_url, command="dialer", args=args, env=env).start()
            )
            rid = start_broadcast(api, uas, "d", n, pause=1.0, wait_invites=20)
            relay.cut()
            time.sleep(5.0)  # > node_timeout: declared dead by the other dialer
            relay.restore()
            records = final_records(api, rid)
            deadline = time.monotonic() + 20
            while (
                "was declared dead" not in cut_off.log.read_text() and time.monotonic() < deadline
            ):
                time.sleep(0.2)
            log = cut_off.log.read_text()
            assert cut_off.proc is not None and cut_off.proc.poll() is None, log[-3000:]  # still up
    finally:
        for p in reversed(procs):
            p.stop()
        relay.close()
    per_user = uas.invites_per_user()
    assert max(per_user.values()) == 1, "a recipient was dialed twice"
    assert len(records) == n
    assert {r["result"] for r in records} <= {"completed", "failed"}
    lost = [r for r in records if r["result"] == "failed"]
    assert lost and all(r["error"] == "node lost" for r in lost), lost[:3]
    assert all(r["answered"] for r in records if r["result"] == "completed")
    assert "was declared dead" in log and "rejoining" in log
    # the outage is one warning per loop, not a traceback on every pass
    assert "database unreachable" in log and "Traceback" not in log, log[-3000:]
