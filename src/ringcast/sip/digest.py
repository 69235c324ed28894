"""Digest credentials for every request of one call, across several challengers.

RFC 3261 §22.3: a request can cross more than one server that wants
credentials (an outbound proxy answering 407, then the callee's registrar
answering 401, in either order), and the retried request must carry an
answer for every realm challenged so far: ``Proxy-Authorization`` and
``Authorization`` together, each once per realm. A realm challenged again
means the credentials were refused, unless the challenge says ``stale=true``
(RFC 7616 §3.3: the nonce expired, the password was right), which is answered
once with the new nonce. A response may list several challenges for one realm
(RFC 8760 §2.4, RFC 7616 §3.7): the first whose scheme and algorithm we can
answer (Digest; MD5 or SHA-256) is used, not just the first.

The password only ever goes into the hash: it is never logged, stored in an
error, or put in a header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiosipua.auth import SipDigestAuth, build_credentials
from aiosipua.headers import AuthChallenge, parse_auth, stringify_auth
from aiosipua.message import SipResponse

MAX_AUTH_ROUNDS = 3  # challenges one INVITE answers: proxy + callee + one stale nonce
ALGORITHMS = frozenset({"MD5", "SHA-256"})

# "Digest a=1, b=2, Newauth c=3": a new challenge starts where a comma is
# followed by "scheme param=" (a token, blanks, then a parameter), RFC 7235 §4.1.
_NEXT_CHALLENGE = re.compile(r",\s*(?=[A-Za-z][\w.+-]*\s+[A-Za-z][\w-]*\s*=)")


class AuthFailure(Exception):
    """The challenge cannot be answered; ``str()`` is safe to show (no secret)."""


def split_challenges(value: str) -> list[str]:
    """One header value may hold several challenges, comma-joined (§7.3.1)."""
    out: list[str] = []
    start = 0
    quoted = False
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and quoted:
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted and _NEXT_CHALLENGE.match(value, i):
            out.append(value[start:i].strip())
            start = i + 1
        i += 1
    out.append(value[start:].strip())
    return [c for c in out if c]


def answerable(challenge: AuthChallenge) -> bool:
    """Digest with a nonce, an algorithm we hash, and plain ``auth`` qop if any."""
    if challenge.scheme.lower() != "digest" or not challenge.params.get("nonce"):
        return False
    if challenge.params.get("algorithm", "MD5").upper() not in ALGORITHMS:
        return False
    qop = [q.strip().lower() for q in challenge.params.get("qop", "").split(",") if q.strip()]
    return not qop or "auth" in qop


def pick_challenges(response: SipResponse) -> dict[str, tuple[str, AuthChallenge]]:
    """realm -> (credential header name, the first answerable challenge) in a 401/407.

    A 407 aggregated by a forking proxy may challenge for several realms; each
    gets one answer. Proxy-Authenticate and WWW-Authenticate are both read,
    whatever the status (a proxy may pass a 401 through unchanged).
    """
    picked: dict[str, tuple[str, AuthChallenge]] = {}
    for header, answer_header in (
        ("proxy-authenticate", "Proxy-Authorization"),
        ("www-authenticate", "Authorization"),
    ):
        for value in response.headers.get(header):
            for text in split_challenges(value):
                parsed = parse_auth(text)
                challenge = AuthChallenge(
                    scheme=parsed.scheme,
                    params={k.lower(): v for k, v in parsed.params.items()},
                )
                realm = challenge.params.get("realm", "")
                key = f"{answer_header.lower()}:{realm}"
                if key not in picked and answerable(challenge):
                    picked[key] = (answer_header, challenge)
    return picked


@dataclass
class _Realm:
    header: str  # Authorization or Proxy-Authorization
    challenge: AuthChallenge
    nonce_count: int = 0  # requests sent with this nonce so far


class DigestSession:
    """The realms one call has been challenged for, and their current nonces.

    §22.3: credentials are cached per realm and sent again with every later
    request of the call (its ACK, BYE, re-INVITE, UPDATE), each with the next
    nonce count. Each request's own challenges are answered through one
    :class:`AuthAttempt`: the same rules for the INVITE and every request after it.
    """

    def __init__(self, username: str, password: str) -> None:
        self._auth = SipDigestAuth(username, password)
        self._realms: dict[str, _Realm] = {}

    def reset(self) -> None:
        """A new target (a 3xx): its servers challenge afresh."""
        self._realms.clear()

    def attempt(self) -> AuthAttempt:
        """The challenge rounds of one new request."""
        return AuthAttempt(self)

    def headers(self, method: str, uri: str) -> list[tuple[str, str]]:
        """Credentials for every realm, for the next request (a fresh nonce count each)."""
        out: list[tuple[str, str]] = []
        for entry in sorted(self._realms.values(), key=lambda r: r.header != "Proxy-Authorization"):
            entry.nonce_count += 1
            creds = build_credentials(
                self._auth, entry.challenge, method, uri, nonce_count=entry.nonce_count
            )
            if creds is not None:  # answerable() checked what build_credentials needs
                out.append((entry.header, stringify_auth(creds)))
        return out

    def _learn(self, key: str, header: str, challenge: AuthChallenge) -> None:
        self._realms[key] = _Realm(header, challenge)


class AuthAttempt:
    """The 401/407 rounds of one request (an INVITE and its retries, a BYE, a refresh).

    A realm challenged again after this request answered its challenge means the
    credentials were refused, unless the nonce was merely stale (once). Cached
    credentials sent unasked do not count: a server may want a fresh nonce for
    each new request. At most :data:`MAX_AUTH_ROUNDS` rounds.
    """

    def __init__(self, session: DigestSession) -> None:
        self._session = session
        self._answered: set[str] = set()
        self._stale_retried: set[str] = set()
        self.rounds = 0

    @property
    def exhausted(self) -> bool:
        return self.rounds >= MAX_AUTH_ROUNDS

    def on_challenge(self, response: SipResponse) -> list[str]:
        """Take in a 401/407; return the realms now answered, or raise :class:`AuthFailure`."""
        self.rounds += 1
        picked = pick_challenges(response)
        if not picked:
            raise AuthFailure(
                "cannot answer the digest challenge (unsupported scheme or algorithm)"
            )
        for key, (_, challenge) in picked.items():
            if key not in self._answered:
                continue
            realm = challenge.params.get("realm", "")
            stale = challenge.params.get("stale", "").lower() == "true"
            if not stale:
                raise AuthFailure(
                    f"authentication failed: challenged again after sending credentials "
                    f"(realm {realm!r})"
                )
            if key in self._stale_retried:
                raise AuthFailure(
                    f"authentication failed: nonce for realm {realm!r} stale again after a retry"
                )
            self._stale_retried.add(key)
        for key, (header, challenge) in picked.items():
            self._session._learn(key, header, challenge)
            self._answered.add(key)
        return [c.params.get("realm", "") for _, c in picked.values()]
