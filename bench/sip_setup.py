"""Full SIP call setups and teardowns per second against SIPp on loopback.

Each call is INVITE -> 200 -> ACK -> BYE -> 200 (no 180, no media), driven by
one :class:`ringcast.sip.SipEndpoint` in this process; SIPp (tests/sipp/
uas_bench.xml) is the callee on 127.0.0.1. Prints completed setups per second
and this process's CPU seconds (``time.process_time``) per 1,000 calls.

    .venv/bin/python bench/sip_setup.py --calls 5000 --concurrency 200

The run is bounded in count (``--calls``) and time (``--max-seconds``); only the
SIPp process this script started is stopped, by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
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

SCENARIO = ROOT / "tests" / "sipp" / "uas_bench.xml"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sipp(port: int, calls: int, workdir: Path) -> subprocess.Popen[bytes]:
    sipp = shutil.which("sipp")
    if sipp is None:
        raise SystemExit("sipp is not installed (Debian package sip-tester)")
    cmd = [
        sipp,
        "-sf",
        str(SCENARIO),
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


async def run(calls: int, concurrency: int, max_seconds: float, port: int, sipp_pid: int) -> None:
    endpoint = SipEndpoint(host="127.0.0.1", port=0, t1=0.5)
    await endpoint.start()
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
                ),
            )
            if await call.setup():
                answered += 1
                await call.hangup()
            else:
                failed[call.status_code] = failed.get(call.status_code, 0) + 1

    cpu0 = time.process_time()
    sipp_cpu0 = process_cpu_seconds(sipp_pid)
    wall0 = time.perf_counter()
    tasks = [asyncio.create_task(one(i), name=f"bench-call-{i}") for i in range(calls)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), max_seconds + 40)
    except TimeoutError:
        print("bench: time bound reached before every call finished")
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    sipp_cpu1 = process_cpu_seconds(sipp_pid)
    await endpoint.close()
    done = answered
    print(f"calls requested      {calls}")
    print(f"calls answered+ended {done}")
    if failed:
        print(f"calls failed         {sum(failed.values())} by status {failed}")
    print(f"concurrency          {concurrency}")
    print(f"wall seconds         {wall:.2f}")
    print(f"setups/s             {done / wall:.0f}" if wall > 0 else "setups/s n/a")
    if done:
        print(f"CPU s per 1000 calls {cpu / done * 1000:.3f} (this process only)")
        if sipp_cpu0 is not None and sipp_cpu1 is not None:
            print(f"SIPp CPU s per 1000  {(sipp_cpu1 - sipp_cpu0) / done * 1000:.3f} (the callee)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args()
    calls = max(1, min(args.calls, 100_000))
    logging.basicConfig(level=logging.WARNING)
    port = free_udp_port()
    with tempfile.TemporaryDirectory(prefix="ringcast-bench-") as tmp:
        if os.environ.get("BENCH_KEEP"):
            tmp = tempfile.mkdtemp(prefix="ringcast-bench-keep-")
            print("SIPp log in", tmp)
        proc = start_sipp(port, calls, Path(tmp))
        try:
            asyncio.run(run(calls, args.concurrency, args.max_seconds, port, proc.pid))
        finally:
            stop_sipp(proc)


if __name__ == "__main__":
    main()
