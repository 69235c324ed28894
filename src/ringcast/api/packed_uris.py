"""A long list of bare recipients (``[{"to": "<uri>"}, ...]``) read straight from
the body's bytes into one newline-joined text and the offsets of its lines: no
Python object per recipient while the body is decoded, and ~31 bytes a
recipient held after (a list of `str` costs ~88: bench/RESULTS.md, 2026-12-03
"big POSTs").

Only an array whose every item is exactly one `"to"` whose JSON string needs no
unescaping and holds no whitespace, brace or non-ASCII character is read here
(then the string's bytes are the URI's characters); anything else answers
None and is decoded item by item as before.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np
import numpy.typing as npt

_WS = rb"[ \t\n\r]*+"  # JSON whitespace (RFC 8259 §2)
_WHITESPACE = b" \t\n\r"
# The characters of a `to` read here: no '"' or '\' (no escapes), no control or
# space (a line each in the text), no brace (every '}' ends an item), ASCII only.
_BARE_ITEM = (
    rb"\{" + _WS + rb'"to"' + _WS + rb":" + _WS + rb'"[^"\\\x00-\x20{}\x7f-\xff]*+"' + _WS + rb"\}"
)
_BARE_ARRAY = re.compile(
    rb"\[" + _WS + _BARE_ITEM + _WS + rb"(?:," + _WS + _BARE_ITEM + _WS + rb")*+\]"
)
_ITEM_END = re.compile(rb"\}")
_HEAD = b'{"to":"'  # an item's start, once whitespace is gone
_JOINT = b'"},{"to":"'  # one item's end and the next one's start
_PIECE = 1 << 20  # bytes of the array turned into text at once
_CHUNK = 10_000  # lines split at once when iterated


class PackedUris(Sequence[str]):
    """Strings held as one text, each on its own line (none holds a line feed),
    with the offset of each line's start and one past the last line's end + 1:
    line `i` is ``text[starts[i] : starts[i + 1] - 1]``. A slice shares the text."""

    __slots__ = ("starts", "text")

    def __init__(self, text: str, starts: npt.NDArray[np.integer]) -> None:
        self.text = text
        self.starts = starts

    @classmethod
    def of(cls, items: Sequence[str]) -> PackedUris:
        """`items` (none holding a line feed) packed."""
        lengths = np.fromiter((len(s) + 1 for s in items), dtype=np.int64, count=len(items))
        starts = np.zeros(len(items) + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        return cls("\n".join(items), _narrow(starts))

    def __len__(self) -> int:
        return len(self.starts) - 1

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> PackedUris: ...
    def __getitem__(self, index: int | slice) -> str | PackedUris:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return PackedUris.of([self[i] for i in range(start, stop, step)])
            return PackedUris(self.text, self.starts[start : max(start, stop) + 1])
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("PackedUris index out of range")
        return self.text[int(self.starts[index]) : int(self.starts[index + 1]) - 1]

    def __iter__(self) -> Iterator[str]:
        return itertools.chain.from_iterable(self._chunks())

    def _chunks(self) -> Iterator[list[str]]:
        """The strings, _CHUNK at a time (made when asked for)."""
        text, starts, n = self.text, self.starts, len(self)
        for first in range(0, n, _CHUNK):
            last = min(first + _CHUNK, n)
            yield text[int(starts[first]) : int(starts[last]) - 1].split("\n")

    def lines(self) -> str:
        """The strings joined by line feeds (the text itself when not a slice)."""
        if not len(self):
            return ""
        return self.text[int(self.starts[0]) : int(self.starts[-1]) - 1]

    def longest(self) -> int:
        """The length of the longest string (0 when empty)."""
        return int(np.diff(self.starts).max()) - 1 if len(self) else 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PackedUris({len(self)} strings)"


def _narrow(starts: npt.NDArray[np.int64]) -> npt.NDArray[np.integer]:
    """`starts` in 4 bytes each when the text allows (always, below 4 GiB)."""
    if len(starts) and int(starts[-1]) < 2**32:
        return starts.astype(np.uint32)
    return starts


def bare_uris(array: bytes | memoryview) -> PackedUris | None:
    """The `to` of every item of the JSON array `array` (a valid JSON value: the
    caller's decoder checked its syntax) when each item is a bare recipient as
    the module docstring says; else None. One regex pass checks the shape, then
    the array is turned into text a piece (_PIECE bytes) at a time: whitespace
    dropped, each item's ``{"to":"`` and ``"}`` cut, items joined by line feeds."""
    if _BARE_ARRAY.fullmatch(array) is None:
        return None
    view = memoryview(array)
    end = len(view) - 1  # the closing ']'
    while view[end - 1] in _WHITESPACE:
        end -= 1  # now just past the last item's '}'
    pieces: list[str] = []
    starts: list[npt.NDArray[np.int64]] = []
    at, base = 1, 0  # after the '['
    while at < end:
        found = _ITEM_END.search(array, min(at + _PIECE, end - 1))
        cut = end if found is None else found.end()
        piece = view[at:cut].tobytes().translate(None, _WHITESPACE)
        skip = len(_HEAD) + (piece[0] == ord(","))  # the pieces after the first start with ','
        text = piece[skip:-2].replace(_JOINT, b"\n")
        del piece
        breaks = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == ord("\n"))
        starts.append(base + np.concatenate(([0], breaks + 1)))
        pieces.append(text.decode("ascii"))
        base += len(text) + 1
        at = cut
    starts.append(np.array([base], dtype=np.int64))
    offsets = _narrow(np.concatenate(starts))
    del starts
    joined = "\n".join(pieces)
    del pieces
    return PackedUris(joined, offsets)
