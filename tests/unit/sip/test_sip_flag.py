"""ringcast.sip.flag.Flag: an asyncio.Event without a deque until someone waits."""

from __future__ import annotations

import asyncio

import pytest

from ringcast.sip.flag import Flag


async def test_wait_returns_once_set_and_at_once_when_set() -> None:
    flag = Flag()
    assert isinstance(flag, asyncio.Event) and not flag.is_set()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert flag.is_set()
    assert await asyncio.wait_for(flag.wait(), 0.1) is True
    assert "set" in repr(flag)


async def test_a_cancelled_waiter_leaves_the_others_waiting() -> None:
    flag = Flag()
    first = asyncio.create_task(flag.wait())
    second = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert not flag.future().cancelled()
    flag.set()
    assert await asyncio.wait_for(second, 0.1) is True


async def test_future_is_done_once_set_and_shared_until_clear() -> None:
    flag = Flag()
    fut = flag.future()
    assert flag.future() is fut and not fut.done()
    done, _ = await asyncio.wait({fut}, timeout=0.01)
    assert not done  # asyncio.wait neither completes nor cancels it
    flag.set()
    assert fut.done() and fut.result() is True
    flag.clear()
    assert not flag.is_set()
    again = flag.future()
    assert again is not fut and not again.done()
    flag.set()
    assert again.done()


async def test_future_of_a_flag_set_before_anyone_asked_is_done() -> None:
    flag = Flag()
    flag.set()
    flag.set()  # idempotent
    assert flag.future().done()
