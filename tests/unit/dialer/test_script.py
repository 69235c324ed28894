"""gather.actions as steps (ringcast.dialer.script): pure decisions, no call."""

from __future__ import annotations

from ringcast.dialer.script import (
    Choose,
    Hangup,
    Media,
    Transfer,
    choose,
    fallback,
    gathered,
    has_actions,
    steps,
)

AGENT = "sip:agent@127.0.0.1:5090"
GATHER = {
    "gather": {
        "digits": 1,
        "timeout": 5,
        "actions": {
            "1": [{"transfer": AGENT, "timeout": 15, "from_": "sales"}],
            "2": [{"say": "Goodbye."}, {"hangup": True}],
            "default": [{"say": "Sorry."}, {"transfer": AGENT, "mode": "refer"}],
        },
    }
}
PLAYLIST = [{"say": "Press 1 or 2."}, GATHER, {"say": "Still there?"}]


def test_a_gather_with_actions_ends_its_media_step() -> None:
    out = steps(PLAYLIST)
    assert [type(s) for s in out] == [Media, Choose, Media]
    first = out[0]
    assert isinstance(first, Media)
    assert first.items == ({"say": "Press 1 or 2."}, {"gather": {"digits": 1, "timeout": 5}})
    assert has_actions(PLAYLIST) and not has_actions([{"say": "x"}, {"gather": {"digits": 1}}])


def test_the_digits_pick_their_actions_else_default() -> None:
    step = steps(PLAYLIST)[1]
    assert isinstance(step, Choose)
    key, chosen = choose(step, "1")
    assert key == "1"
    assert chosen == [Transfer(AGENT, 15.0, "bridge", "sales", ())]
    key, chosen = choose(step, "2")
    assert (key, [type(s) for s in chosen]) == ("2", [Media, Hangup])
    for digits in ("7", ""):
        key, chosen = choose(step, digits)
        assert (key, [type(s) for s in chosen]) == ("default", [Media, Transfer])
    no_default = Choose(1, {"1": [{"hangup": True}]})
    assert choose(no_default, "5") == ("", [])


def test_gathered_takes_the_last_digits_of_the_chunk() -> None:
    step = Choose(2, {})
    assert gathered("9", "9412", step) == "12"  # 4 answered an earlier gather of the chunk
    assert gathered("", "1", step) == ""  # fewer than asked: nothing matches
    assert gathered("", "34", step) == "34"


def test_a_failed_transfer_falls_back_to_default_without_transfers() -> None:
    step = steps(PLAYLIST)[1]
    assert isinstance(step, Choose)
    assert [type(s) for s in fallback(step)] == [Media]
    assert fallback(None) == []
