"""PortAllocator: even ports, RTCP on port+1, round-robin reuse."""

from __future__ import annotations

import pytest

from ringcast.rtp.ports import PortAllocator


def test_even_ports_round_robin() -> None:
    # odd lo: the first even port is 20002; 20008's RTCP would not fit
    a = PortAllocator(20001, 20008, start=20002)
    assert (a.lo, a.hi, a.capacity) == (20002, 20006, 3)
    assert [a.allocate() for _ in range(3)] == [20002, 20004, 20006]
    with pytest.raises(RuntimeError, match="no free RTP port in 20002-20007"):
        a.allocate()
    a.release(20004)
    assert a.allocate() == 20004
    assert a.in_use == 3


def test_freed_port_is_reused_last() -> None:
    a = PortAllocator(30000, 30009, start=30000)
    first = a.allocate()
    a.release(first)
    assert a.allocate() == first + 2


def test_bad_range() -> None:
    with pytest.raises(ValueError, match="RTP port range 20000-20000 holds no even port"):
        PortAllocator(20000, 20000)
    with pytest.raises(ValueError, match="start port 20003 is not an even port"):
        PortAllocator(20000, 20009, start=20003)


def test_the_round_starts_anywhere_in_the_range() -> None:
    """Processes sharing a range do not all begin at its bottom."""
    starts = {PortAllocator(20000, 29999).allocate() for _ in range(50)}
    assert all(20000 <= p <= 29998 and p % 2 == 0 for p in starts)
    assert len(starts) > 40  # 50 draws from 5,000 even ports
    a = PortAllocator(40000, 40009)  # whatever the start, every pair is handed out once
    assert sorted(a.allocate() for _ in range(5)) == [40000, 40002, 40004, 40006, 40008]
