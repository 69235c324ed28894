"""Instructions per SIP call setup, this tree against a baseline revision, by callgrind.

`bench/sip_setup.py` times CPU seconds, which move with the machine's load
by more than the few per cent a change to the SIP core makes. Callgrind
counts the instructions the process executes instead: the same figure run
after run (here within ~0.2 %), whatever else the machine does. Each tree's
own `bench/sip_setup.py` runs under `valgrind --tool=callgrind` twice, with
a few calls and with many (SIPp the callee, concurrency 2 so that nothing
retransmits at valgrind's speed); the difference divided by the extra calls
is what one call costs, start-up and imports cancelled out. Rounds alternate
the trees; PYTHONHASHSEED is fixed so dict layouts are the same each run.

    .venv/bin/python bench/sip_setup_callgrind.py --base 139f53b
    .venv/bin/python bench/sip_setup_callgrind.py --base HEAD~3 --rounds 1 --calls 50,550

Needs valgrind (Debian package) and SIPp. Bounded in count (``--calls``) and
time (each run by ``--max-seconds``); only the processes it starts are waited
for (valgrind, and SIPp through the bench it runs).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def export(rev: str, into: Path) -> Path:
    """`src`, `bench` and `tests/sipp` of `rev`, as that revision's bench expects them."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "src", "bench", "tests/sipp"],
        check=True,
        capture_output=True,
    ).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def instructions(tree: Path, calls: int, workdir: Path, max_seconds: float) -> int:
    """Instructions callgrind counted for `tree`'s bench/sip_setup.py with `calls` calls."""
    out = workdir / f"callgrind-{tree.name}-{calls}.out"
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        str(tree / "bench" / "sip_setup.py"),
        "--calls",
        str(calls),
        "--concurrency",
        "2",
        "--max-seconds",
        str(max_seconds),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=max_seconds + 120)
    answered = re.search(r"calls answered\+ended\s+(\d+)", run.stdout)
    if answered is None or int(answered.group(1)) != calls:
        why = f"{run.stdout}\n{run.stderr[-2000:]}"
        raise SystemExit(f"{tree}: not every call was answered:\n{why}")
    retransmitted = re.search(r"retransmissions\s+(\d+)", run.stdout)
    if retransmitted is not None and int(retransmitted.group(1)):
        print(f"  note: {tree.name} retransmitted {retransmitted.group(1)} requests")
    totals = re.search(r"^totals:\s+(\d+)", out.read_text(), re.MULTILINE)
    out.unlink()
    if totals is None:
        raise SystemExit(f"no totals in callgrind's output for {tree}")
    return int(totals.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="baseline revision (git)")
    parser.add_argument("--calls", default="100,1100", help="few,many calls per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="bound per run")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian package valgrind)")
    few, many = (int(n) for n in args.calls.split(","))
    with tempfile.TemporaryDirectory(prefix="ringcast-callgrind-") as tmp:
        work = Path(tmp)
        trees = {"base": export(args.base, work / "base"), "this": ROOT}
        per_call: dict[str, list[float]] = {"base": [], "this": []}
        for round_ in range(args.rounds):
            order = ["base", "this"] if round_ % 2 == 0 else ["this", "base"]
            for name in order:
                low = instructions(trees[name], few, work, args.max_seconds)
                high = instructions(trees[name], many, work, args.max_seconds)
                per_call[name].append((high - low) / (many - few))
                figure = per_call[name][-1]
                print(f"round {round_ + 1} {name:4}: {figure:,.0f} instructions per call")
    base = sum(per_call["base"]) / len(per_call["base"])
    this = sum(per_call["this"]) / len(per_call["this"])
    print(f"base ({args.base}) {base:,.0f}  this tree {this:,.0f}  ratio {this / base:.4f}")


if __name__ == "__main__":
    main()
