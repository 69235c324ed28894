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


def test_gc_stats_measure_each_collection() -> None:
    """What /metrics reports as ringcast_gc_*: the pauses and what cycles held."""
    stats = heap.GcStats()
    gc.callbacks.append(stats.callback)
    try:
        for _ in range(100):
            a: list[object] = []
            a.append(a)  # a reference cycle only the collector can free
            del a
        gc.collect()
    finally:
        gc.callbacks.remove(stats.callback)
    assert stats.collections[2] == 1 and stats.collected >= 100
    assert 0.0 < stats.pause_seconds[2] == stats.max_pause
