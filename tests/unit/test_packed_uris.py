"""Bare recipients read straight from the body's bytes (api/packed_uris.py): the
same strings json gives, or None (then the item-by-item decoder decides)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringcast.api import packed_uris
from ringcast.api.packed_uris import PackedUris, bare_uris
from ringcast.api.recipients import BareRecipients, checked_uris, decode_play_lean

PLAY = [{"pause": 1}]


@pytest.mark.parametrize(
    "text",
    [
        b'[{"to":"sip:a@b.c"}]',
        b'[{"to": "sip:a@b.c"}, {"to": "sip:d@e.f:5060"}]',
        b' [ \n{ "to" :\t"sip:a@b.c" } ,\r\n{"to":"tel:+1"}\n] ',
        b'[{"to":""},{"to":"x"}]',
        b"[" + b",".join(b'{"to":"sip:%d@h"}' % i for i in range(1000)) + b"]",
    ],
)
def test_bare_arrays_give_the_strings_json_gives(text: bytes) -> None:
    got = bare_uris(text.strip())
    assert got is not None
    assert list(got) == [item["to"] for item in json.loads(text)]
    assert len(got) == len(json.loads(text))


@pytest.mark.parametrize(
    "text",
    [
        b"[]",
        b'[{"to":"sip:a@b.c "}]',  # whitespace in the string
        b'[{"to":"sip:a b@c"}]',
        b'[{"to":"sip:a\\/b@c"}]',  # an escape
        b'[{"to":"sip:a\\u0040b"}]',
        b'[{"\\u0074o":"sip:a@b.c"}]',
        b'[{"to":"sip:a@b.c}"}]',  # a brace
        b'[{"to":"sip:{a}@b.c"}]',
        b'[{"to":"sip:\xc3\xa4@b.c"}]',  # non-ASCII
        b'[{"to":"sip:\x7f@b.c"}]',
        b'[{"to":"sip:a@b.c","from":"me"}]',  # another key
        b'[{"to":"sip:a@b.c","to":"sip:d@e.f"}]',
        b'[{"to":"sip:a@b.c"},{}]',
        b'[{"to":"sip:a@b.c"},null]',
        b'[{"to":"sip:a@b.c"},"sip:d@e.f"]',
        b'[{"to":null}]',
        b'[{"to":5}]',
        b'[{"to":["sip:a@b.c"]}]',
        b'[[{"to":"sip:a@b.c"}]]',
        b'[{"to":"sip:a@b.c"},]',
        b'[{"to":"sip:a@b.c"}{"to":"sip:d@e.f"}]',
    ],
)
def test_anything_else_is_left_to_the_decoder(text: bytes) -> None:
    assert bare_uris(text) is None


# Characters a `to` may hold here, and some that send it to the decoder.
_KEPT = st.text(st.sampled_from("sip:@.-_;=+%?&!~*'()/[]$,0123456789abcXYZ<>#|^`"), max_size=20)
_ANY = st.text(max_size=12)
_SPACE = st.text(st.sampled_from(" \t\r\n"), max_size=2)


@given(
    st.lists(st.one_of(_KEPT, _ANY), min_size=1, max_size=40),
    st.lists(_SPACE, min_size=6, max_size=6),
    st.integers(min_value=1, max_value=64),
)
def test_any_array_gives_json_strings_or_none(
    tos: list[str], spaces: list[str], piece: int
) -> None:
    a, b, c, d, e, f = spaces
    text = (
        "[" + a + f"{b},{c}".join(f'{{{d}"to"{e}:{f}{json.dumps(t)}{d}}}' for t in tos) + "]"
    ).encode()
    old = packed_uris._PIECE
    packed_uris._PIECE = piece  # the array in many pieces
    try:
        got = bare_uris(text)
    finally:
        packed_uris._PIECE = old
    plain = all(
        t.isascii() and not any(ch in t for ch in '"\\{}\x7f') and all(ord(ch) > 32 for ch in t)
        for t in tos
    )
    if plain:
        assert got is not None
        assert list(got) == tos
    else:
        assert got is None


def test_packed_uris_is_a_sequence_of_its_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packed_uris, "_CHUNK", 3)  # iteration over several chunks
    items = [f"sip:{i}@h" for i in range(10)] + [""]
    packed = PackedUris.of(items)
    assert len(packed) == 11
    assert list(packed) == items
    assert packed == items
    assert [packed[i] for i in range(-11, 11)] == items + items
    for index in (11, -12):
        with pytest.raises(IndexError):
            packed[index]
    for s in (slice(2, 7), slice(None, 4), slice(8, None), slice(5, 2), slice(1, 9, 3)):
        assert list(packed[s]) == items[s]
        assert len(packed[s]) == len(items[s])
    assert packed[2:9].lines() == "\n".join(items[2:9])
    assert packed[2:9][1:3] == items[3:5]
    assert packed.longest() == max(map(len, items))
    assert PackedUris.of([]).longest() == 0
    assert list(PackedUris.of([])) == []
    assert packed.starts.dtype.itemsize == 4  # 4 bytes a string


@pytest.mark.parametrize(
    "tos",
    [
        ["sip:a@b.c", "sips:d@[2001:db8::1]:5061;transport=tls"],
        ["sip:a@b.c", "sip:a@b.c:99999"],
        ["sip:a@b.c", "tel:+1555"],
        ["sip:a@b.c", ""],
        ["sip:" + "a" * 520 + "@b.c"],
    ],
)
def test_checked_uris_says_the_same_of_packed_and_listed_uris(tos: list[str]) -> None:
    assert checked_uris(PackedUris.of(tos)) == checked_uris(tos)
    assert checked_uris(PackedUris.of(tos)[1:]) == checked_uris(tos[1:])


def test_a_bare_body_is_held_packed() -> None:
    data: dict[str, Any] = {
        "recipients": [{"to": f"sip:{i}@example.com"} for i in range(100)],
        "playlist": PLAY,
    }
    lean = decode_play_lean(json.dumps(data).encode())
    assert lean is not None
    assert isinstance(lean.recipients, BareRecipients)
    assert isinstance(lean.recipients.tos, PackedUris)
    assert [r.to for r in lean.recipients] == [r["to"] for r in data["recipients"]]
    assert lean.recipients[5:7] == [r for r in lean.recipients][5:7]
