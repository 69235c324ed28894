"""PortAllocator: even ports, RTCP on port+1, round-robin reuse."""

from __future__ import annotations

import pytest

from ringcast.rtp.ports import PortAllocator


def test_even_ports_round_robin() -> None:
    a = PortAllocator(20001, 20008)  # odd start: first even is 20002; 20008's RTCP won't fit
    assert (a.lo, a.hi, a.capacity) == (20002, 20006, 3)
    assert [a.allocate() for _ in range(3)] == [20002, 20004, 20006]
    with pytest.raises(RuntimeError, match="no free RTP port in 20002-20007"):
        a.allocate()
    a.release(20004)
    assert a.allocate() == 20004
    assert a.in_use == 3


def test_freed_port_is_reused_last() -> None:
    a = PortAllocator(30000, 30009)
    first = a.allocate()
    a.release(first)
    assert a.allocate() == first + 2


def test_bad_range() -> None:
    with pytest.raises(ValueError, match="RTP port range 20000-20000 holds no even port"):
        PortAllocator(20000, 20000)
