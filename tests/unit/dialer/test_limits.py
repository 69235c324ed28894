from ringcast.dialer.limits import Backoff, NodeLimits, Pacer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_pacer_spaces_calls_and_banks_no_idle_time() -> None:
    clock = FakeClock()
    p = Pacer(4.0, clock)
    assert p.ready_in() == 0
    p.take()
    assert p.ready_in() == 0.25
    clock.now += 0.25
    assert p.ready_in() == 0
    clock.now += 10  # idle: no burst afterwards
    p.take()
    assert p.ready_in() == 0.25


def test_pacer_makes_up_a_late_wakeup_but_never_a_pause() -> None:
    clock = FakeClock()
    p = Pacer(100.0, clock)  # one call per 10 ms
    p.take()  # due 100.000, started on time
    clock.now += 0.015  # the loop woke 5 ms late for the call due at 100.010
    assert p.ready_in() == 0
    p.take()  # the schedule holds: the next is due at 100.020, 5 ms from now
    assert abs(p.ready_in() - 0.005) < 1e-9
    starts = []
    for _ in range(100):  # a second of starts at the earliest moment each may start
        clock.now += p.ready_in()
        starts.append(clock.now)
        p.take()
    assert starts[-1] - starts[0] >= 0.99 - 1e-9  # 100 starts span >= 99 intervals
    clock.now += 0.5  # a pause: not made up
    p.take()
    assert abs(p.ready_in() - 0.010) < 1e-9


def test_node_limits_hold_channels_and_rate() -> None:
    clock = FakeClock()
    lim = NodeLimits(max_calls=2, cps=10.0, clock=clock)
    assert lim.ready_in() == 0
    lim.started()
    assert abs(lim.ready_in() - 0.1) < 1e-9  # cps
    clock.now += 0.1
    lim.started()
    assert lim.free_channels() == 0
    assert lim.ready_in() == float("inf")  # every channel busy
    lim.finished()
    clock.now += 1
    assert lim.ready_in() == 0


def test_backoff_holds_scopes_until_their_time() -> None:
    clock = FakeClock()
    b = Backoff(clock)
    b.hold("r1", 0.5)
    assert b.held() == ["r1"]
    clock.now += 0.6
    assert b.held() == []
