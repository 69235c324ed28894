"""Reading 401/407 challenges (ringcast.sip.digest; RFC 3261 §22.3, RFC 8760 §2.4)."""

from __future__ import annotations

from aiosipua.headers import CaseInsensitiveDict
from aiosipua.message import SipResponse

from ringcast.sip.digest import pick_challenges, split_challenges


def test_comma_joined_challenges_are_split_outside_quotes() -> None:
    value = 'Newauth realm="a, Digest x=1", Digest realm="b", nonce="n", algorithm=MD5'
    assert split_challenges(value) == [
        'Newauth realm="a, Digest x=1"',
        'Digest realm="b", nonce="n", algorithm=MD5',
    ]


def test_first_answerable_challenge_per_realm() -> None:
    h = CaseInsensitiveDict()
    h.append("WWW-Authenticate", 'Digest realm="r", nonce="1", algorithm=SHA-512-256')
    h.append("WWW-Authenticate", 'Digest realm="r", nonce="2", qop="auth-int"')
    h.append("WWW-Authenticate", 'Digest realm="r", nonce="3", algorithm=SHA-256')
    h.append("WWW-Authenticate", 'Digest realm="r", nonce="4", algorithm=MD5')
    h.append("Proxy-Authenticate", 'Digest REALM="p", NONCE="5"')
    picked = pick_challenges(SipResponse(status_code=401, headers=h))
    assert {k: (name, c.params["nonce"]) for k, (name, c) in picked.items()} == {
        "authorization:r": ("Authorization", "3"),
        "proxy-authorization:p": ("Proxy-Authorization", "5"),
    }
