"""Intake cost of recipients given as numbers (issue 15), against SIP URIs in the same run.

Validates N recipients the way POST /voice/call/play does (the lean schema path,
then the number check of api.intake) for four spellings of `to`, and prints
microseconds per recipient. The SIP URI row is the same-run baseline.
Then the parser alone, before and after its fast path in the same run
(alternating rounds, medians): phonenumbers.parse for every number (`before`),
numbers.e164 with its answers cache emptied (`after`), and numbers.e164
reading the same numbers again (`again`: dial time after intake).

    .venv/bin/python bench/phone_numbers.py [N]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from ringcast import numbers
from ringcast.api.intake import numbers_checked
from ringcast.api.recipients import decode_play_lean, validate_play
from ringcast.config import Settings

SETTINGS = Settings(trunks={"c": {"proxy": "sip:127.0.0.1"}}, default_trunk="c")
KINDS = {
    "sip URI (baseline)": lambda i: f"sip:+1555{i:07d}@127.0.0.1:5070",
    "E.164": lambda i: f"+1555{i:07d}",
    "tel: URI": lambda i: f"tel:+1-555-{i:07d}",
    "national (US)": lambda i: f"(201) {500 + i % 400:03d}-{i % 10000:04d}",
}


def one(kind: str, n: int) -> tuple[float, float]:
    tos = [KINDS[kind](i) for i in range(n)]
    body: dict[str, object] = {"recipients": [{"to": t} for t in tos], "playlist": [{"pause": 1}]}
    if kind.startswith("national"):
        body["country"] = "US"
    raw = json.dumps(body).encode()
    start = time.perf_counter()
    parsed = decode_play_lean(raw) or validate_play(json.loads(raw))
    schema = time.perf_counter() - start
    assert parsed.recipients is not None
    fields = [(f"recipients[{i}].to", r.to) for i, r in enumerate(parsed.recipients)]
    start = time.perf_counter()
    numbers_checked(
        fields, trunk=None, country=str(body.get("country") or "") or None, settings=SETTINGS
    )
    return schema, time.perf_counter() - start


def _before(tos: list[str], country: str | None) -> float:
    start = time.perf_counter()
    for t in tos:
        numbers._e164_parsed(t, numbers.number_text(t), country)
    return time.perf_counter() - start


def _after(tos: list[str], country: str | None) -> float:
    start = time.perf_counter()
    for t in tos:
        numbers.e164(t, country)
    return time.perf_counter() - start


def parser(n: int, rounds: int = 5) -> None:
    print(f"\nparser alone: N={n} numbers, {rounds} alternating rounds, medians")
    print("| to | before µs | after µs | again µs | before/after |")
    print("|---|---|---|---|---|")
    for kind in ("E.164", "tel: URI", "national (US)"):
        tos = [KINDS[kind](i) for i in range(n)]
        country = "US" if kind.startswith("national") else None
        before, after, again = [], [], []
        for _ in range(rounds):
            before.append(_before(tos, country))
            numbers._e164.cache_clear()
            after.append(_after(tos, country))
            again.append(_after(tos, country))
        b, a, g = (statistics.median(x) / n * 1e6 for x in (before, after, again))
        print(f"| {kind} | {b:.1f} | {a:.1f} | {g:.1f} | {b / a:.1f}x |")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    print(f"N={n} recipients, load average {os.getloadavg()[0]:.1f}")
    print("| to | schema µs/recipient | number check µs/recipient | total s for 100k |")
    print("|---|---|---|---|")
    for kind in KINDS:
        schema, check = one(kind, n)
        per = (schema + check) / n
        print(f"| {kind} | {schema / n * 1e6:.1f} | {check / n * 1e6:.1f} | {per * 1e5:.1f} |")
        numbers._e164.cache_clear()
    parser(min(n, 5000))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
