"""A media session's states and what a `play()` gives: plain data, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SessionState(enum.Enum):
    OPEN = "open"  # ports bound, no remote yet
    STARTED = "started"  # remote known, may play
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class PlayResult:
    """What a `play()` gave: digits received, opt-out pressed, reached the end."""

    dtmf: str
    optout: bool
    completed: bool
