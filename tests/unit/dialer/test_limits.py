from ringcast.dialer.limits import Limits, Pacer


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


def test_limits_hold_node_and_request_caps() -> None:
    clock = FakeClock()
    lim = Limits(max_calls=3, cps=1000.0, clock=clock)
    lim.request("r1", {"max_concurrent": 1})
    lim.request("r2", {"cps": 1})
    assert lim.may_start("r1")
    lim.started("r1")
    clock.now += 1
    assert not lim.may_start("r1")  # its own max_concurrent
    assert lim.blocked_requests() == ["r1"]
    assert lim.may_start("r2")
    lim.started("r2")
    clock.now += 0.01
    assert not lim.may_start("r2")  # its own cps
    clock.now += 1
    assert lim.may_start("r2")
    lim.started("r2")
    clock.now += 1
    assert lim.free_channels() == 0
    assert not lim.may_start("r3")  # node full
    lim.finished("r1")
    assert lim.may_start("r1")
