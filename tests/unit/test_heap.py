"""heap.settle: a ready server's startup objects leave the collector's sight."""

from __future__ import annotations

import gc

from ringcast import heap


def test_settle_freezes_the_heap_and_sets_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        heap.settle()
        assert gc.get_freeze_count() > 1000  # this interpreter's modules, at least
        assert heap.STATS.callback in gc.callbacks  # /metrics hears every collection
        assert gc.get_threshold() == (
            heap.GEN0_THRESHOLD,
            heap.GEN1_THRESHOLD,
            heap.GEN2_THRESHOLD,
        )
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        while heap.STATS.callback in gc.callbacks:  # settle installed it: not this process's
            gc.callbacks.remove(heap.STATS.callback)


def test_a_full_collection_waits_until_no_call_is_live() -> None:
    """Full collections scan every object live calls hold: run one only when idle."""
    gc.collect()
    for _ in range(heap.IDLE_FULL_AFTER):
        gc.collect(1)  # each ages the old generation by one generation-1 collection
    stats = heap.GcStats()
    gc.callbacks.append(stats.callback)
    try:
        assert not heap.collect_when_idle(live_calls=3)
        assert stats.collections[2] == 0
        assert heap.collect_when_idle(live_calls=0)
        assert stats.collections[2] == 1
        assert not heap.collect_when_idle(live_calls=0)  # nothing has aged since
    finally:
        gc.callbacks.remove(stats.callback)


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
    # its own CPU time, never more than the wall-clock pause it took
    assert 0.0 < stats.max_pause_cpu <= stats.max_pause + 1e-3
