"""Full SIP call setups and teardowns per second against SIPp on loopback.

Each call is INVITE -> 200 -> ACK -> BYE -> 200 (no 180, no media), driven by
one :class:`ringcast.sip.SipEndpoint` in this process; SIPp (tests/sipp/
uas_bench.xml) is the callee on 127.0.0.1. Prints completed setups per second
and this process's CPU seconds (``time.process_time``) per 1,000 calls.

    .venv/bin/python bench/sip_setup.py --calls 5000 --concurrency 200
    .venv/bin/python bench/sip_setup.py --gc ringcast  # with a server's GC policy

``--tls`` compares SIP over TLS with UDP in the same run (issue 15): Kamailio
with its TLS module (certificates made for the run) is the proxy in front of
SIPp (tests/sipp/uas_bench_rr.xml, Record-Routed, so ACK and BYE take the proxy
too); rounds alternate UDP and TLS to ringcast's proxy, the same calls each.

    .venv/bin/python bench/sip_setup.py --tls --calls 2000 --rounds 2

The run is bounded in count (``--calls``) and time (``--max-seconds``); only the
SIPp process this script started is stopped, by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from ringcast.sip import CallSpec, MediaOffer, OutboundCall, SipEndpoint  # noqa: E402
from ringcast.sip.tls import TlsOptions  # noqa: E402

SCENARIO = ROOT / "tests" / "sipp" / "uas_bench.xml"
SCENARIO_RR = ROOT / "tests" / "sipp" / "uas_bench_rr.xml"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sipp(
    port: int, calls: int, workdir: Path, scenario: Path = SCENARIO
) -> subprocess.Popen[bytes]:
    sipp = shutil.which("sipp")
    if sipp is None:
        raise SystemExit("sipp is not installed (Debian package sip-tester)")
    cmd = [
        sipp,
        "-sf",
        str(scenario),
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-t",
        "u1",
        "-nostdin",
        "-max_recv_loops",
        "100000",
        "-max_sched_loops",
        "100000",
        "-buff_size",
        str(4 * 1024 * 1024),
    ]
    out = open(workdir / "sipp-bench.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return proc
        if proc.poll() is not None:
            raise SystemExit("sipp exited early; see " + str(workdir / "sipp-bench.log"))
        time.sleep(0.05)
    raise SystemExit("sipp did not bind its port")


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of another process (Linux /proc), for context."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_sipp(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGUSR1)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=3)


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of a process and its children (Kamailio's workers)."""
    total = process_cpu_seconds(pid)
    if total is None:
        return None
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def run(
    calls: int,
    concurrency: int,
    max_seconds: float,
    port: int,
    sipp_pid: int,
    *,
    proxy: str | None = None,
    tls: TlsOptions | None = None,
    label: str = "",
    proxy_pid: int | None = None,
    gc_policy: str = "python",
) -> None:
    endpoint = SipEndpoint(host="127.0.0.1", port=0, t1=0.5)
    await endpoint.start()
    if gc_policy == "ringcast":  # what a server runs with once ready (ringcast.heap)
        from ringcast import heap

        heap.settle()
    sem = asyncio.Semaphore(concurrency)
    answered = 0
    failed: dict[int, int] = {}
    deadline = time.monotonic() + max_seconds

    async def one(i: int) -> None:
        nonlocal answered
        async with sem:
            if time.monotonic() > deadline:
                return
            call = OutboundCall(
                endpoint,
                CallSpec(
                    to=f"sip:bench{i}@127.0.0.1:{port}",
                    from_="bench",
                    media=MediaOffer("127.0.0.1", 20000 + 2 * (i % 5000)),
                    proxy=proxy,
                    tls=tls,
                ),
            )
            if await call.setup():
                answered += 1
                await call.hangup()
            else:
                failed[call.status_code] = failed.get(call.status_code, 0) + 1

    cpu0 = time.process_time()
    sipp_cpu0 = process_cpu_seconds(sipp_pid)
    proxy_cpu0 = tree_cpu_seconds(proxy_pid) if proxy_pid else None
    wall0 = time.perf_counter()
    tasks = [asyncio.create_task(one(i), name=f"bench-call-{i}") for i in range(calls)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), max_seconds + 40)
    except TimeoutError:
        print("bench: time bound reached before every call finished")
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    sipp_cpu1 = process_cpu_seconds(sipp_pid)
    proxy_cpu1 = tree_cpu_seconds(proxy_pid) if proxy_pid else None
    tls_connections = endpoint.tls_connections
    retransmissions = endpoint.retransmissions
    await endpoint.close()
    done = answered
    if label:
        print(f"--- {label} (load average {os.getloadavg()[0]:.1f})")
        if tls is not None:
            print(f"TLS connections      {tls_connections}")
    print(f"calls requested      {calls}")
    print(f"calls answered+ended {done}")
    if failed:
        print(f"calls failed         {sum(failed.values())} by status {failed}")
    print(f"concurrency          {concurrency}")
    print(f"GC policy            {gc_policy} (thresholds {gc.get_threshold()})")
    print(f"retransmissions      {retransmissions} (Timers A and E)")
    print(f"wall seconds         {wall:.2f}")
    print(f"setups/s             {done / wall:.0f}" if wall > 0 else "setups/s n/a")
    if done:
        print(f"CPU s per 1000 calls {cpu / done * 1000:.3f} (this process only)")
        if sipp_cpu0 is not None and sipp_cpu1 is not None:
            print(f"SIPp CPU s per 1000  {(sipp_cpu1 - sipp_cpu0) / done * 1000:.3f} (the callee)")
        if proxy_cpu0 is not None and proxy_cpu1 is not None:
            per = (proxy_cpu1 - proxy_cpu0) / done * 1000
            print(f"proxy CPU s per 1000 {per:.3f} (Kamailio, all its processes)")


def compare_tls(calls: int, concurrency: int, max_seconds: float, rounds: int) -> None:
    """UDP and TLS to the same Kamailio in front of the same SIPp, rounds alternating."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tlspeers import KamailioTls, Pki

    port = free_udp_port()
    with tempfile.TemporaryDirectory(prefix="ringcast-bench-tls-") as tmp:
        workdir = Path(tmp)
        pki = Pki(workdir / "pki")
        proxy = KamailioTls(workdir, pki.issue("server"), shm_mb=512)
        sipp = start_sipp(port, calls, workdir, SCENARIO_RR)
        try:
            proxy.start()
            assert proxy.proc is not None
            tls = TlsOptions(ca_file=str(pki.ca_file))
            for n in range(1, rounds + 1):
                for label, uri, options in (
                    ("UDP", f"sip:127.0.0.1:{proxy.udp_port}", None),
                    ("TLS", proxy.uri("sips"), tls),
                ):
                    asyncio.run(
                        run(
                            calls,
                            concurrency,
                            max_seconds,
                            port,
                            sipp.pid,
                            proxy=uri,
                            tls=options,
                            label=f"round {n}: {label} via Kamailio",
                            proxy_pid=proxy.proc.pid,
                        )
                    )
                    time.sleep(2.5)  # SIPp's timewait of the last calls
        finally:
            proxy.stop()
            stop_sipp(sipp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--tls", action="store_true", help="TLS against UDP via Kamailio")
    parser.add_argument("--rounds", type=int, default=2, help="UDP/TLS pairs with --tls")
    parser.add_argument(
        "--gc",
        choices=("python", "ringcast"),
        default="python",
        help="the interpreter's GC thresholds, or ringcast.heap.settle() as a server does",
    )
    args = parser.parse_args()
    calls = max(1, min(args.calls, 100_000))
    logging.basicConfig(level=logging.WARNING)
    if args.tls:
        compare_tls(calls, args.concurrency, args.max_seconds, max(1, min(args.rounds, 10)))
        return
    port = free_udp_port()
    with tempfile.TemporaryDirectory(prefix="ringcast-bench-") as tmp:
        if os.environ.get("BENCH_KEEP"):
            tmp = tempfile.mkdtemp(prefix="ringcast-bench-keep-")
            print("SIPp log in", tmp)
        proc = start_sipp(port, calls, Path(tmp))
        try:
            asyncio.run(
                run(calls, args.concurrency, args.max_seconds, port, proc.pid, gc_policy=args.gc)
            )
        finally:
            stop_sipp(proc)


if __name__ == "__main__":
    main()
