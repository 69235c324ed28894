"""Where a callee's digit goes while a prompt plays: gather, opt-out, barge-in.

A pure state machine (no sockets, no clock), owned by the stream that plays
the prompt (:class:`ringcast.rtp.session.MediaSession`). Its inputs are "the
runner starts segment i" (:meth:`DigitRouter.enter`) and "the callee pressed
a digit" (:meth:`DigitRouter.on_digit`, the one entry for RFC 4733 events,
SIP INFO and in-band tones alike); its only output is the segment the runner
must jump to (barge-in), which the owner applies.

Rules (DESIGN.md, "Listening to the callee"):

- Every digit is kept in :attr:`DigitRouter.digits` (the record's ``dtmf``).
- Opt-out: a digit that is the ``optout`` key of any gather of the playlist
  sets :attr:`DigitRouter.optout`, at any moment: during a prompt too.
- A digit while a gather waits answers it; the gather is over when it holds
  ``digits`` digits, or on opt-out (:attr:`DigitRouter.gather_done`).
- Barge-in: a digit while anything else plays (speech, a file, a pause, our
  own DTMF) stops it and answers the next gather, unless that gather says
  ``barge_in: false`` (then the prompt plays on and the digit is only kept).
  A digit with no gather ahead is only kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ringcast.media.prompt import GatherSegment, Segment


@dataclass(slots=True)
class DigitRouter:
    """The digits of one playing prompt (see the module docstring)."""

    segments: Sequence[Segment]
    index: int = -1  # the segment playing now (-1: before the first)
    gather: GatherSegment | None = None  # the gather waiting now
    collected: str = ""  # the digits answering `gather`
    digits: str = ""  # every digit, in order
    optout: bool = False
    barged: int = 0  # prompts cut short by a digit

    @property
    def optout_keys(self) -> frozenset[str]:
        return frozenset(
            s.optout for s in self.segments if isinstance(s, GatherSegment) and s.optout
        )

    @property
    def gather_done(self) -> bool:
        """The waiting gather has its digits (or the callee opted out)."""
        gather = self.gather
        return gather is not None and (len(self.collected) >= gather.digits or self.optout)

    def enter(self, index: int) -> None:
        """The runner starts segment `index` (again after a barge-in: no change)."""
        if index == self.index:
            return
        self.index = index
        segment = self.segments[index] if 0 <= index < len(self.segments) else None
        self.gather = segment if isinstance(segment, GatherSegment) else None
        self.collected = ""

    def on_digit(self, digit: str) -> int | None:
        """Take one digit; the index of the gather to jump to on barge-in, else None."""
        self.digits += digit
        if digit in self.optout_keys:
            self.optout = True
        if self.gather is not None:
            self.collected += digit
            return None
        ahead = self._next_gather()
        if ahead is None or not ahead[1].barge_in:
            return None
        self.barged += 1
        self.enter(ahead[0])
        self.collected = digit
        return ahead[0]

    def _next_gather(self) -> tuple[int, GatherSegment] | None:
        for i in range(max(self.index, 0), len(self.segments)):
            segment = self.segments[i]
            if isinstance(segment, GatherSegment):
                return i, segment
        return None
