"""A call's recordings on their way to the store, and the retention sweep.

:func:`stored` turns the recorders a call's media session kept
(:class:`ringcast.media.recorder.Recorder`) into WAV rows for
:func:`ringcast.store.recordings.add`; the dialer writes them in the same
transaction as the call's final fields, with the request's tenant.

:class:`RetentionSweep` runs in every dialer process's watcher loop (several
dialers of a fleet may sweep at once: deleting the same rows twice is
harmless): every `recording_sweep_interval` seconds it deletes the recordings
older than `recording_retention_days`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from ringcast.domain import utcnow
from ringcast.media.recorder import BridgeRecording, Recorder, wav_bytes
from ringcast.store import recordings as store_recordings
from ringcast.store.db import Store
from ringcast.store.recordings import NewRecording

log = logging.getLogger(__name__)


def stored(recorders: Sequence[Recorder | BridgeRecording]) -> list[NewRecording]:
    """One row per recorder (an empty recording too: the record says it was made):
    a `record` item's, or a bridged transfer's two legs mixed."""
    out = []
    for r in recorders:
        wav = wav_bytes(r.pcm())
        reason = r.reason.value if r.reason is not None else "hangup"
        out.append(NewRecording(store_recordings.new_id(), wav, r.duration, reason))
    return out


class RetentionSweep:
    """Deletes expired recordings; `tick(elapsed)` from the watcher loop."""

    def __init__(self, retention_days: float, interval: float) -> None:
        self.retention_days = retention_days
        self.interval = interval
        self._waited = interval  # the first sweep comes with the first tick
        self.deleted = 0

    async def tick(self, store: Store, elapsed: float) -> int:
        if self.retention_days <= 0:
            return 0
        self._waited += elapsed
        if self._waited < self.interval:
            return 0
        self._waited = 0.0
        before = utcnow() - timedelta(days=self.retention_days)
        gone = await store_recordings.sweep(store, before=before)
        if gone:
            log.info("retention: %d recordings older than %s deleted", gone, before)
        self.deleted += gone
        return gone
