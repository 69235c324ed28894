"""Run real SIPp processes as callees in tests.

A `SippUas` starts `sipp` with one XML scenario on a free 127.0.0.1 port, keeps
its message log, and is stopped by its own PID. Nothing here sends a packet
anywhere but 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from conftest import free_port

SCENARIOS = Path(__file__).parent / "sipp"
# Whether the running test carries the `sipp` marker (set by tests/conftest.py;
# None outside pytest, e.g. in a benchmark). A test that starts SIPp without it
# fails, so `-m "not sipp"` can be trusted to leave SIPp out.
current_test_marked: bool | None = None
_RECEIVED = re.compile(
    r"^-+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\s*\n"
    r"(?:UDP|TCP) message received \[\d+\] bytes :\s*\n(.*?)(?=^-{10,} \d{4}-|\Z)",
    re.M | re.S,
)


def _header(msg: str, name: str) -> str:
    m = re.search(rf"^{name}\s*:.*$", msg, flags=re.M | re.I)
    return m.group(0) if m else ""


# Answer (180, then 200 with SDP: PCMU, and telephone-event when asked), then
# play media from the ACK on with the SIPp action `{action}` (`play_pcap_audio=...`
# or `rtp_stream=...`), wait for our BYE.
_ANSWER_AND_PLAY = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uas answer, play media">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=sipp 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio [media_port] RTP/AVP 0{formats}
a=rtpmap:0 PCMU/8000
{rtpmap}
    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <nop>
    <action>
      <exec {action}/>
    </action>
  </nop>
  <recv request="BYE"/>
  <send>
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

    ]]>
  </send>
  <timewait milliseconds="500"/>
</scenario>
"""


def answer_and_play(path: Path, action: str, *, telephone_event: bool = True) -> Path:
    """Write the answer-and-play scenario with the SIPp media `action` to `path`."""
    rtpmap = "a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15\n" if telephone_event else ""
    xml = _ANSWER_AND_PLAY.replace("{action}", action)
    xml = xml.replace("{formats}", " 101" if telephone_event else "").replace("{rtpmap}", rtpmap)
    path.write_text(xml)
    return path


class SippUas:
    """One SIPp process answering calls on 127.0.0.1:<port> with a scenario.

    `keys` become SIPp `-key name value` keywords usable as `[name]` in the XML
    (for example `rtp_port`, the RTP port a test owns, written into the answer's
    SDP; a key cannot override a SIPp built-in such as `[media_port]`).
    """

    def __init__(
        self,
        scenario: str | Path,
        workdir: Path,
        *,
        port: int | None = None,
        transport: str = "u1",
        keys: dict[str, str] | None = None,
        max_calls: int | None = None,
        extra: list[str] | None = None,
        trace: bool = True,
        host: str = "127.0.0.1",
    ) -> None:
        path = Path(scenario)
        self.host = host  # 127.0.0.1, or ::1 for SIPp on IPv6 (`-i ::1`)
        if not path.is_absolute():
            path = SCENARIOS / path
        self.scenario = path
        self.workdir = workdir
        self.transport = transport
        self._port_given = port is not None
        self.port = port or self._free_port()
        self.keys = {"rtp_port": "6000", **(keys or {})}
        self.max_calls = max_calls
        self.extra = extra or []
        self.trace = trace  # keep SIPp's message log (benchmarks at high rates turn it off)
        self._name_logs()
        self.proc: subprocess.Popen[bytes] | None = None

    def _free_port(self) -> int:
        return free_port(
            socket.SOCK_STREAM if self.transport.startswith("t") else socket.SOCK_DGRAM
        )

    def _name_logs(self) -> None:
        self.message_log = self.workdir / f"sipp-{self.port}-messages.log"
        self.error_log = self.workdir / f"sipp-{self.port}-errors.log"
        self.stdout_log = self.workdir / f"sipp-{self.port}-stdout.log"

    @property
    def uri_host(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def uri(self, user: str = "service") -> str:
        return f"sip:{user}@{self.uri_host}"

    def start(self) -> SippUas:
        """Start SIPp; a port it picked itself that another process took meanwhile (the
        suite runs in several workers) is picked again, up to three times."""
        for attempt in range(3):
            try:
                return self._start()
            except RuntimeError as exc:
                if self._port_given or "Unable to bind main socket" not in str(exc) or attempt == 2:
                    raise
                self.stop()
                self.port = self._free_port()
                self._name_logs()
        raise AssertionError("unreachable")

    def _start(self) -> SippUas:
        if current_test_marked is False:
            raise RuntimeError(
                "this test starts SIPp without the sipp marker: name how it does in "
                "PEER_FIXTURES / PEER_NAMES (tests/conftest.py)"
            )
        sipp = shutil.which("sipp")
        if sipp is None:
            raise RuntimeError("sipp is not installed (Debian package sip-tester)")
        cmd = [
            sipp,
            "-sf",
            str(self.scenario),
            "-i",
            self.host,
            "-p",
            str(self.port),
            "-t",
            self.transport,
            "-nostdin",
            "-trace_err",
            "-error_file",
            str(self.error_log),
            "-max_recv_loops",
            "10000",
        ]
        if self.trace:
            cmd += ["-trace_msg", "-message_file", str(self.message_log)]
        for name, value in self.keys.items():
            cmd += ["-key", name, value]
        if self.max_calls is not None:
            cmd += ["-m", str(self.max_calls)]
        cmd += self.extra
        self._out = open(self.stdout_log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.workdir,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self._wait_listening()
        return self

    def _wait_listening(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"sipp exited early: {self.output()}")
            kind = socket.SOCK_STREAM if self.transport.startswith("t") else socket.SOCK_DGRAM
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            with socket.socket(family, kind) as s:
                try:
                    s.bind((self.host, self.port))
                except OSError:
                    return  # sipp holds the port
            time.sleep(0.05)
        raise RuntimeError("sipp did not bind its port in time")

    def wait(self, timeout: float) -> int:
        """Wait for SIPp to finish its `-m` calls; return its exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)  # SIPp: dump stats and quit
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=3)
        if getattr(self, "_out", None) is not None:
            self._out.close()
            self._out = None  # type: ignore[assignment]

    def __enter__(self) -> SippUas:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def output(self) -> str:
        try:
            return self.stdout_log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def errors(self) -> str:
        """SIPp's own account of what went wrong: its error log (unexpected
        messages, retransmission limits) and the end of its stdout, for
        assertion messages."""
        try:
            err = self.error_log.read_text(errors="replace")[-6000:]
        except OSError:
            err = ""
        return f"sipp errors:\n{err}\nsipp output:\n{self.output()[-2000:]}"

    def messages(self) -> str:
        try:
            return self.message_log.read_text(errors="replace")
        except OSError:
            return ""

    def received(self) -> list[str]:
        """Every SIP message SIPp received, as text, in order."""
        return [msg for _, msg in self.timeline()]

    def timeline(self) -> list[tuple[datetime, str]]:
        """(time received, message text) for every SIP message SIPp received."""
        out = []
        for m in _RECEIVED.finditer(self.messages()):
            when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
            out.append((when, m.group(2).strip("\n")))
        return out

    def max_concurrent_calls(self) -> int:
        """The high-water mark of calls between their INVITE and their BYE or
        non-2xx ACK, as SIPp saw them (by Call-ID)."""
        live: set[str] = set()
        peak = 0
        for _, msg in self.timeline():
            first = msg.split("\n", 1)[0]
            cid = re.search(r"^(?:Call-ID|i)\s*:\s*(\S+)", msg, flags=re.M | re.I)
            if cid is None:
                continue
            if first.startswith("INVITE ") and ";tag=" not in _header(msg, "To"):
                live.add(cid.group(1))
                peak = max(peak, len(live))
            elif first.startswith(("BYE ", "CANCEL ")):
                live.discard(cid.group(1))
        return peak

    def invite_times(self) -> list[datetime]:
        return [
            t
            for t, msg in self.timeline()
            if msg.startswith("INVITE ") and ";tag=" not in _header(msg, "To")
        ]

    def requests_per_call(self, method: str) -> Counter[str]:
        """How many `method` requests SIPp received for each Call-ID."""
        counts: Counter[str] = Counter()
        for msg in self.received():
            if not msg.startswith(method + " "):
                continue
            cid = re.search(r"^(?:Call-ID|i)\s*:\s*(\S+)", msg, flags=re.M | re.I)
            if cid is not None:
                counts[cid.group(1)] += 1
        return counts

    def invites_per_user(self) -> Counter[str]:
        """How many initial INVITEs (no To tag) each request-URI user received."""
        counts: Counter[str] = Counter()
        for msg in self.received():
            first = msg.split("\n", 1)[0]
            m = re.match(r"INVITE sips?:([^@;> ]+)@", first)
            if not m:
                continue
            if ";tag=" in _header(msg, "(?:To|t)"):
                continue  # re-INVITE inside a dialog
            counts[m.group(1)] += 1
        return counts
