"""`bench/dialer.py memory --trace`: tracemalloc inside `ringcast serve`.

Put on PYTHONPATH of the server with RINGCAST_BENCH_TRACEMALLOC=<dir>: tracing
starts at interpreter start-up (FRAMES frames per allocation), and every
SIGUSR1 writes a snapshot to <dir>/snap-<k>.pickle (k = 0, 1, ...) then
touches <dir>/snap-<k>.done. Without the variable this module does nothing
but what the system's sitecustomize does.
"""

from __future__ import annotations

import os

FRAMES = 12  # deep enough to reach ringcast's frame under asyncio's

_dir = os.environ.get("RINGCAST_BENCH_TRACEMALLOC")
if _dir:
    import gc
    import signal
    import tracemalloc
    from pathlib import Path
    from types import FrameType

    tracemalloc.start(FRAMES)
    _count = [0]

    def _dump(signum: int, frame: FrameType | None) -> None:
        gc.collect()
        snap = tracemalloc.take_snapshot()
        path = Path(_dir) / f"snap-{_count[0]}.pickle"
        snap.dump(str(path))
        path.with_suffix(".done").touch()
        _count[0] += 1

    signal.signal(signal.SIGUSR1, _dump)

try:  # what the system's sitecustomize does (this one shadows it)
    import apport_python_hook
except ImportError:
    pass
else:
    apport_python_hook.install()
