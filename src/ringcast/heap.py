"""Garbage-collector settings for a long-running server process.

A ringcast process holds a few hundred thousand long-lived objects once it
has started (FastAPI, SQLAlchemy, pydantic, numpy and their caches). CPython's
full collections walk all of them: measured at ~200 ms each under call load,
a stall that every RTP stream of the process feels as a late packet. Objects
alive at readiness live as long as the process, so `settle` moves them out of
the collector's sight (gc.freeze) and makes young collections rarer, as
calls allocate many short-lived containers.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 10_000  # CPython's default is 700


def settle() -> None:
    """Call once the process is ready to work."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
