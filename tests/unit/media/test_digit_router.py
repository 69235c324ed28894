"""DigitRouter: gather, opt-out and barge-in decided without sockets or clocks."""

from __future__ import annotations

from types import MappingProxyType

from ringcast.media.digits import DigitRouter
from ringcast.media.prompt import AudioSegment, GatherSegment

SPEECH = AudioSegment(MappingProxyType({"PCMU": ((b"\xff" * 160,) * 10,)}))


def test_a_digit_during_a_prompt_jumps_to_the_next_gather_and_answers_it() -> None:
    gather = GatherSegment(digits=1, timeout=5, optout="9")
    router = DigitRouter([SPEECH, SPEECH, gather, SPEECH])
    router.enter(0)
    assert router.on_digit("1") == 2
    assert (router.index, router.collected, router.gather_done) == (2, "1", True)
    router.enter(2)  # the runner starting the gather after the jump changes nothing
    assert router.collected == "1" and router.gather_done
    router.enter(3)
    assert router.gather is None and router.collected == ""
    assert router.on_digit("5") is None  # no gather ahead: only kept
    assert (router.digits, router.optout, router.barged) == ("15", False, 1)


def test_the_optout_key_counts_at_any_moment() -> None:
    router = DigitRouter([SPEECH, GatherSegment(digits=3, timeout=5, optout="9"), SPEECH])
    router.enter(0)
    assert router.on_digit("9") == 1
    assert router.optout and router.gather_done  # opting out ends the gather at once
    router.enter(2)
    after = DigitRouter([GatherSegment(digits=1, timeout=5, optout="9"), SPEECH])
    after.enter(1)  # the gather is over; its key still opts out
    assert after.on_digit("9") is None and after.optout


def test_barge_in_false_keeps_the_prompt_playing() -> None:
    gather = GatherSegment(digits=2, timeout=5, optout="9", barge_in=False)
    router = DigitRouter([SPEECH, gather])
    router.enter(0)
    assert router.on_digit("1") is None
    assert router.collected == "" and router.index == 0
    assert router.on_digit("9") is None and router.optout  # opt-out still works
    router.enter(1)
    assert router.gather_done  # the callee opted out: the gather does not wait
    plain = DigitRouter([SPEECH, GatherSegment(digits=2, timeout=5, barge_in=False)])
    plain.enter(1)
    plain.on_digit("4")
    assert not plain.gather_done
    plain.on_digit("2")
    assert plain.gather_done and plain.collected == "42"


def test_digits_during_a_gather_fill_it_and_the_next_gather_starts_empty() -> None:
    first = GatherSegment(digits=2, timeout=5)
    second = GatherSegment(digits=1, timeout=5)
    router = DigitRouter([first, SPEECH, second])
    router.enter(0)
    for d in "12":
        assert router.on_digit(d) is None
    assert router.gather_done and router.collected == "12"
    router.enter(1)
    assert router.on_digit("3") == 2 and router.collected == "3"
    assert router.digits == "123"
