"""An ``asyncio.Event`` for objects that live by the thousand: :class:`Flag`.

A stock Event allocates a deque for its waiters when it is made (~600 bytes),
whether anyone ever waits or not, and a coroutine that waits on one among
other things needs a task of its own to do it. A live call has a few such
events (its end, its cancel). A ``Flag`` is an Event (same methods, same
type, usable wherever one is) that holds one future, made only when someone
waits, and hands it out (:meth:`Flag.future`) so that its owner can wait on
the flag together with other futures (``asyncio.wait``, ``add_done_callback``)
without a task per thing waited on (bench/dialer.py memory).
"""

from __future__ import annotations

import asyncio
from typing import Literal


class Flag(asyncio.Event):
    """An Event that allocates nothing to wait until someone waits."""

    def __init__(self) -> None:  # no Event.__init__: no deque of waiters
        self._is_set = False
        self._fut: asyncio.Future[bool] | None = None

    def __repr__(self) -> str:
        return f"<Flag [{'set' if self._is_set else 'unset'}]>"

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        if self._is_set:
            return
        self._is_set = True
        fut = self._fut
        if fut is not None and not fut.done():
            fut.set_result(True)

    def clear(self) -> None:
        if self._is_set:
            self._is_set = False
            self._fut = None  # done: the next waiter gets a fresh one

    async def wait(self) -> Literal[True]:
        if self._is_set:
            return True
        # shielded: a waiter cancelled does not cancel the future the others share
        await asyncio.shield(self.future())
        return True

    def future(self) -> asyncio.Future[bool]:
        """A future done once the flag is set (shared by every caller until `clear()`):
        wait on it with others (``asyncio.wait``) or add a done callback; never
        cancel it, nor await it where the awaiting may be cancelled (use `wait()`)."""
        fut = self._fut
        if fut is None:
            fut = self._fut = asyncio.get_running_loop().create_future()
            if self._is_set:
                fut.set_result(True)
        return fut
