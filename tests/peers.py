"""Run real SIP peers other than SIPp in tests: baresip as a callee, Kamailio as a proxy.

Each starts from a configuration generated into the test's tmp dir, listens on
and advertises 127.0.0.1 only, logs to a file there, and is stopped by its own
PID. Nothing here sends a packet anywhere but 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from conftest import free_port

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# baresip -s: "ESC[36;1m#\nUDP 127.0.0.1:a -> 127.0.0.1:b\n<message>ESC[;m"
_TRACE = re.compile(r"\x1b\[36;1m#\n(UDP|TCP) (\S+) -> (\S+)\n(.*?)\x1b\[;m", re.S)


def _tcp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class _Process:
    """A child process with its output in a log file, stopped by its PID."""

    name = "peer"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, cmd: list[str]) -> None:
        out = open(self.log, "wb")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            cmd, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        out.close()

    def raw_output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def output(self) -> str:
        return _ANSI.sub("", self.raw_output())

    def _wait_for(self, ready: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if ready in self.output():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.output()[-3000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not become ready:\n{self.output()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


class Baresip(_Process):
    """baresip 1.x as an auto-answering callee that records what it hears.

    The `sndfile` audio filter writes the decoded audio of each call to
    `recordings/dump-<time>-dec.wav` (what the callee hears) before baresip's
    player, which is `aubridge` (no sound card). `net_interface 127.0.0.1`
    keeps the machine's other addresses out of its SDP and Contact; `-s`
    traces every SIP message into the log, so a test can read them.
    `mediaenc="srtp-mand"` (or `"srtp"`, best effort) loads baresip's `srtp`
    module and makes the account answer with SDES-SRTP (RFC 4568).
    """

    name = "baresip"

    def __init__(
        self,
        workdir: Path,
        *,
        user: str = "bob",
        mediaenc: str | None = None,
        host: str = "127.0.0.1",  # or "::1": listens, answers and sends media on IPv6 only
    ) -> None:
        self.host = host
        self.hostref = f"[{host}]" if ":" in host else host  # as a URI writes it
        self.root = workdir / "baresip"
        self.root.mkdir()
        super().__init__(self.root)
        self.user = user
        self.recordings = self.root / "recordings"
        self.recordings.mkdir()
        self.mediaenc = mediaenc
        self._configure()
        # answermode=auto: answer at once; regint=0: never REGISTER anywhere.
        enc = f";mediaenc={mediaenc}" if mediaenc else ""
        (self.root / "accounts").write_text(
            f"<sip:{user}@{self.hostref}>;regint=0;answermode=auto;audio_codecs=PCMU,PCMA{enc}\n"
        )

    def _configure(self) -> None:
        """The config with free ports: SIP (UDP and TCP; baresip also opens TLS on the
        next port) and ten RTP ports."""
        for _ in range(50):  # UDP and TCP on the port, TLS on the next one
            self.port = free_port(socket.SOCK_STREAM)
            if _tcp_port_free(self.port + 1):
                break
        rtp = free_port()
        mediaenc = self.mediaenc
        (self.root / "config").write_text(
            "\n".join(
                [
                    "poll_method epoll",
                    f"sip_listen {self.hostref}:{self.port}",
                    f"net_interface {self.host}",
                    "net_af ipv6" if ":" in self.host else "net_af ipv4",
                    "call_local_timeout 60",
                    "call_max_calls 4",
                    "audio_player aubridge,nil",
                    "audio_source aubridge,nil",
                    "audio_alert aubridge,nil",
                    f"rtp_ports {rtp}-{rtp + 9}",
                    "jitter_buffer_delay 5-10",
                    "module_path /usr/lib/baresip/modules",
                    "module g711.so",
                    "module sndfile.so",
                    "module aubridge.so",
                    *(["module srtp.so"] if mediaenc else []),
                    "module_tmp account.so",
                    f"snd_path {self.recordings}",
                    "",
                ]
            )
        )

    def uri(self, transport: str = "udp") -> str:
        suffix = ";transport=tcp" if transport == "tcp" else ""
        return f"sip:{self.user}@{self.hostref}:{self.port}{suffix}"

    def start(self) -> Baresip:
        exe = shutil.which("baresip")
        if exe is None:
            raise RuntimeError("baresip is not installed (Debian package baresip-core)")
        for attempt in range(3):  # a port another worker took meanwhile: new ports
            self._spawn([exe, "-s", "-f", str(self.root)])
            try:
                self._wait_for("baresip is ready.")
                return self
            except RuntimeError:
                if "Address already in use" not in self.output() or attempt == 2:
                    raise
                self.stop()
                self.log.unlink(missing_ok=True)
                self._configure()
        raise AssertionError("unreachable")

    def __enter__(self) -> Baresip:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def messages(self) -> list[tuple[str, str, str, str]]:
        """(transport, from, to, text) of every SIP message baresip sent or received."""
        return [
            (m.group(1), m.group(2), m.group(3), m.group(4).replace("\r\n", "\n").strip())
            for m in _TRACE.finditer(self.raw_output())
        ]

    def sent(self) -> list[str]:
        mine = f"{self.hostref}:{self.port}"
        return [text for _, src, _, text in self.messages() if src == mine]

    def heard(self, timeout: float = 10.0) -> tuple[np.ndarray, int]:
        """The decoded audio of the one call baresip took, as float samples and rate.

        Read once baresip has closed the file (the call ended); a WAV header
        still holding no length means it is still being written.
        """
        deadline = time.monotonic() + timeout
        while True:
            files = sorted(self.recordings.glob("dump-*-dec.wav"))
            if len(files) == 1 and "terminated (duration" in self.output():
                samples, rate = sf.read(files[0], dtype="float64")
                return np.asarray(samples), int(rate)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no single finished recording in {self.recordings}: {files}\n"
                    f"{self.output()[-3000:]}"
                )
            time.sleep(0.1)


KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
_RCLOG = re.compile(r"RCLOG (\w+) (.*)$", re.M)

# What every Kamailio of the tests shares: loopback only (no DNS, no aliases of
# the machine's other addresses), logs on stderr, small worker pools.
_KAMAILIO_GLOBALS = """debug=2
log_stderror=yes
children={children}
tcp_children={children}
auto_aliases=no
dns=no
rev_dns=no
use_dns_cache=off
dns_try_ipv6=no
"""
_KAMAILIO_BASE_MODULES = ("tm", "sl", "pv", "maxfwd", "textops", "siputils", "xlog")

# The head of every request_route: hop limit, then one RCLOG line per request.
_ROUTE_HEAD = """    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
"""

# A proxy's in-dialog and CANCEL handling (RFC 3261 §16.12 loose routing).
PROXY_IN_DIALOG = """    if (has_totag()) {
        if (loose_route()) {
            xlog("L_NOTICE", "RCLOG routed method=$rm proto=$pr ruri=$ru callid=$ci\\n");
            t_relay();
            exit;
        }
        if (is_method("ACK") && t_check_trans()) {
            t_relay();
            exit;
        }
        xlog("L_NOTICE", "RCLOG unrouted method=$rm callid=$ci\\n");
        if (!is_method("ACK")) {
            sl_send_reply("404", "Not Here");
        }
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_check_trans()) {
            t_relay();
        }
        exit;
    }
"""

# A proxy's relay of a new request: Record-Route on INVITE (after `before`).
PROXY_RELAY = """    t_check_trans();
    loose_route();  # the caller's pre-loaded Route naming this proxy
    if (is_method("INVITE")) {
%s        record_route();
    }
    if (!t_relay()) {
        sl_reply_error();
    }
    exit;
"""


def kamailio_cfg(
    about: str,
    *,
    globals_: Sequence[str],
    modules: Sequence[str] = (),
    modparams: Sequence[str] = (),
    load_first: Sequence[str] = (),
    route: str,
    children: int = 2,
) -> str:
    """A whole kamailio.cfg: `about` as its comment, the shared globals, `globals_`
    (listen=, alias=, ...), `load_first` (TLS sets OpenSSL up before the rest), the
    base modules and `modules`, `modparams`, and a request_route of the hop check
    followed by `route`."""
    lines = ["#!KAMAILIO", *(f"# {line}" for line in about.strip().splitlines())]
    lines.append(_KAMAILIO_GLOBALS.format(children=children).rstrip())
    lines += globals_
    lines.append(f'mpath="{KAMAILIO_MODULES}"')
    lines += [f'loadmodule "{m}.so"' for m in (*load_first, *_KAMAILIO_BASE_MODULES, *modules)]
    lines += modparams
    return "\n".join(lines) + "\n\nrequest_route {\n" + _ROUTE_HEAD + route + "}\n"


def proxy_cfg(port: int, *, username: str, password: str, realm: str) -> str:
    """The digest-challenging, Record-Routing proxy of :class:`Kamailio`."""
    check = f'$au != "{username}" || !pv_proxy_authenticate("{realm}", "{password}", "0")'
    authorize = f"""        if ({check}) {{
            xlog("L_NOTICE", "RCLOG challenge callid=$ci\\n");
            proxy_challenge("{realm}", "1");
            exit;
        }}
        consume_credentials();
        xlog("L_NOTICE", "RCLOG authorized user=$au callid=$ci\\n");
"""
    return kamailio_cfg(
        """Generated by tests/peers.py: a proxy on 127.0.0.1 only that challenges every
INVITE with digest (qop=auth, password checked by pv_proxy_authenticate, no
database), Record-Routes, and logs each request with its route (RCLOG lines).""",
        globals_=[f"listen=udp:127.0.0.1:{port}", f"listen=tcp:127.0.0.1:{port}"],
        modules=("rr", "auth"),
        modparams=['modparam("rr", "append_fromtag", 1)'],
        route='    xlog("L_NOTICE", "RCLOG in method=$rm proto=$pr ruri=$ru route=$hdr(Route) '
        'callid=$ci\\n");\n' + PROXY_IN_DIALOG + PROXY_RELAY % authorize,
    )


class _KamailioProcess(_Process):
    """A Kamailio run in the foreground from `self.cfg`, ready once `ready_port`
    takes a TCP connection."""

    name = "kamailio"
    root: Path
    cfg: Path
    shm_mb = 32

    def _start_kamailio(self, ready_port: int, timeout: float = 10.0) -> None:
        exe = shutil.which("kamailio") or "/usr/sbin/kamailio"
        if not os.path.exists(exe):
            raise RuntimeError("kamailio is not installed (Debian package kamailio)")
        run = self.root / "run"
        run.mkdir()
        # -DD: stay in the foreground (workers are its children and end with it);
        # -E: log to stderr, i.e. our log file; small shared/private memory.
        self._spawn(
            [exe, "-DD", "-E", "-f", str(self.cfg), "-Y", str(run), "-P", str(run / "pid")]
            + ["-m", str(self.shm_mb), "-M", "8"]
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"kamailio exited early:\n{self.output()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", ready_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"kamailio did not listen in time:\n{self.output()[-3000:]}")

    def rclog(self) -> list[tuple[str, str]]:
        """The RCLOG lines of the script: (what, the rest of the line), in order."""
        return [(m.group(1), m.group(2)) for m in _RCLOG.finditer(self.output())]


class Kamailio(_KamailioProcess):
    """Kamailio as a digest-challenging, Record-Routing proxy on 127.0.0.1 (UDP and TCP)."""

    def __init__(
        self,
        workdir: Path,
        *,
        username: str = "acct",
        password: str = "s3cret-kama",
        realm: str = "ringcast.test",
    ) -> None:
        self.root = workdir / "kamailio"
        self.root.mkdir()
        super().__init__(self.root)
        self.port = free_port(socket.SOCK_STREAM)
        self.username = username
        self.password = password
        self.realm = realm
        self.cfg = self.root / "kamailio.cfg"
        self.cfg.write_text(proxy_cfg(self.port, username=username, password=password, realm=realm))

    def uri(self) -> str:
        return f"sip:127.0.0.1:{self.port}"

    def start(self) -> Kamailio:
        self._start_kamailio(self.port)
        return self

    def __enter__(self) -> Kamailio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def listening(self) -> set[tuple[str, str]]:
        """(protocol, address) of every socket Kamailio said it listens on."""
        block = self.output().split("Listening on", 1)[-1].split("Aliases:", 1)[0]
        return set(re.findall(r"^\s*(udp|tcp|tls|sctp): (\S+)", block, re.M))

    def events(self) -> list[tuple[str, dict[str, str]]]:
        """The RCLOG lines of the script: (what, {field: value}) in order."""
        return [
            (what, dict(re.findall(r"(\w+)=(<[^>]*>(?:;\S*)?|\S+)", rest)))
            for what, rest in self.rclog()
        ]


def registrar_cfg(
    port: int, *, username: str, password: str, realm: str, max_expires: int, rpc_socket: Path
) -> str:
    """The registrar of :class:`KamailioRegistrar`."""
    route = f"""    if (is_method("REGISTER")) {{
        xlog("L_NOTICE", "RCLOG register expires=$hdr(Expires) contact=$ct auth=$au\\n");
        if ($au != "{username}" || !pv_www_authenticate("{realm}", "{password}", "0")) {{
            xlog("L_NOTICE", "RCLOG challenge callid=$ci\\n");
            www_challenge("{realm}", "1");
            exit;
        }}
        consume_credentials();
        if (!save("location")) {{
            sl_reply_error();
        }}
        xlog("L_NOTICE", "RCLOG saved expires=$hdr(Expires) callid=$ci\\n");
        exit;
    }}
    sl_send_reply("403", "Registrar Only");
    exit;
"""
    return kamailio_cfg(
        f"""Generated by tests/peers.py: a registrar on 127.0.0.1 only (registrar +
usrloc in memory) that challenges every REGISTER with digest (password
checked by pv_www_authenticate, no database) and grants at most
{max_expires} s; the bindings are read over jsonrpcs' datagram socket.""",
        globals_=[
            f"listen=udp:127.0.0.1:{port}",
            f"listen=tcp:127.0.0.1:{port}",
            f'alias="{realm}"',
        ],
        modules=("auth", "usrloc", "registrar", "jsonrpcs", "kex"),
        modparams=[
            'modparam("usrloc", "db_mode", 0)',
            'modparam("registrar", "min_expires", 1)',
            f'modparam("registrar", "max_expires", {max_expires})',
            'modparam("jsonrpcs", "transport", 4)',
            f'modparam("jsonrpcs", "dgram_socket", "{rpc_socket}")',
        ],
        route=route,
    )


class KamailioRegistrar(Kamailio):
    """Kamailio as a digest-authenticating registrar on 127.0.0.1 (registrar/usrloc)."""

    def __init__(
        self,
        workdir: Path,
        *,
        username: str = "acct",
        password: str = "s3cret-reg",
        realm: str = "ringcast.test",
        max_expires: int = 5,
    ) -> None:
        super().__init__(workdir, username=username, password=password, realm=realm)
        # unix socket paths are limited to 107 bytes: a short directory of its own, not
        # the test's tmp_path (long under pytest-xdist); removed by stop()
        self.sockdir = Path(tempfile.mkdtemp(prefix="kam-", dir="/tmp"))
        self.rpc_socket = self.sockdir / "rpc.sock"
        self.cfg.write_text(
            registrar_cfg(
                self.port,
                username=username,
                password=password,
                realm=realm,
                max_expires=max_expires,
                rpc_socket=self.rpc_socket,
            )
        )

    def __enter__(self) -> KamailioRegistrar:
        self.start()
        return self

    def aor(self) -> str:
        return self.username  # usrloc keys bindings by user alone (use_domain 0)

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            shutil.rmtree(self.sockdir, ignore_errors=True)

    def rpc(self, method: str, *params: str, timeout: float = 5.0) -> Any:
        """One JSON-RPC call over Kamailio's datagram socket; its `result` (or `error`)."""
        me = self.sockdir / f"c-{os.getpid()}-{time.monotonic_ns()}.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(me))
            sock.settimeout(timeout)
            request = {"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}
            sock.sendto(json.dumps(request).encode(), str(self.rpc_socket))
            data = sock.recv(65536)
        me.unlink(missing_ok=True)
        reply = json.loads(data)
        return reply.get("result", reply.get("error"))

    def contacts(self) -> list[str]:
        """The Contact URIs bound to the AOR now (usrloc's `location` table)."""
        reply = self.rpc("ul.lookup", "location", self.aor())
        if not isinstance(reply, dict) or "AoR" not in reply:
            return []  # {"code": 404, "message": "AOR not found"}
        return [c["Contact"]["Address"] for c in reply.get("Contacts", [])]
