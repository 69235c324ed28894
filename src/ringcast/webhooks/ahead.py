"""How many outbox rows the deliverer claims: a pure decision, state in, size out.

A claim takes a row per free delivery slot and some more "ahead", whoever
they are for (rows beyond a receiver's share wait in the process, leased).
When a settle-and-claim transaction is slow (on SQLite: it waited for the one
write lock, or for the dialer's group commit that carries it), each one must
carry more events, so the rows taken ahead double after a transaction that
took over `slow` seconds (up to `cap`) and shrink by a quarter after a quick
one (down to `floor`, the deliverer's `max_concurrency`).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_AHEAD = 500  # rows a claim may take beyond the free slots, when transactions are scarce
SLOW_CLAIM = 0.1  # seconds: a settle-and-claim that took longer waited for the write lock


@dataclass(frozen=True, slots=True)
class AheadPolicy:
    """`floor` rows ahead at least (and at the start), `cap` at most; a
    transaction over `slow` seconds doubles them."""

    floor: int
    cap: int = MAX_AHEAD
    slow: float = SLOW_CLAIM

    def __post_init__(self) -> None:
        if self.floor < 1 or self.cap < self.floor:
            raise ValueError("need 1 <= floor <= cap")

    def after(self, ahead: int, took: float) -> int:
        """The rows to take ahead next, after a settle-and-claim that took
        `took` seconds with `ahead` rows ahead."""
        if took > self.slow:
            return min(self.cap, max(self.floor, ahead * 2))
        return max(self.floor, min(self.cap, ahead * 3 // 4))


def claim_size(free: int, ahead: int) -> int:
    """Rows to claim with `free` delivery slots: none while every slot is busy
    (the deliveries in flight free them and wake the next pass), else a row
    per free slot and `ahead` more."""
    return free + ahead if free > 0 else 0
