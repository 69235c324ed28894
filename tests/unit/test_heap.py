"""heap.settle: a ready server's startup objects leave the collector's sight."""

from __future__ import annotations

import gc

from ringcast import heap


def test_settle_freezes_the_heap_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        heap.settle()
        assert gc.get_freeze_count() > 1000  # this interpreter's modules, at least
        assert gc.get_threshold()[0] == heap.GEN0_THRESHOLD
        assert gc.get_threshold()[1:] == before[1:]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
