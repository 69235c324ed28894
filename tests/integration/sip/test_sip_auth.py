"""Digest authentication against real SIPp challengers (RFC 3261 §22.2, §22.3).

Several challengers on one path (a proxy's 407 and the callee's 401), a nonce
gone stale, several challenges in one response. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

import pytest
from sipp import SippUas

from ringcast.domain import Outcome
from ringcast.sip import CallSpec, MediaOffer, OutboundCall, SipEndpoint
from ringcast.sip.digest import MAX_AUTH_ROUNDS

pytestmark = pytest.mark.sipp

T1 = 0.05
T2 = 0.4
USER = "alice"
PASSWORD = "pw-s3cret-9"


def start_uas(tmp_path: Path, scenario: str, keys: dict[str, str]) -> SippUas:
    uas = SippUas(scenario, tmp_path, keys=keys, max_calls=1)
    try:
        return uas.start()
    except BaseException:
        uas.stop()
        raise


def make_spec(uas: SippUas, password: str = PASSWORD) -> CallSpec:
    return CallSpec(
        to=uas.uri("alice"),
        from_="me",
        media=MediaOffer(host="127.0.0.1", port=40000),
        username=USER,
        password=password,
    )


async def sipp_done(uas: SippUas, within: float = 5.0) -> int:
    return await asyncio.to_thread(uas.wait, within)


def invites(uas: SippUas) -> list[str]:
    return [m for m in uas.received() if m.startswith("INVITE ")]


def credentials(msg: str, header: str) -> list[dict[str, str]]:
    """Every `header` (Authorization or Proxy-Authorization) in `msg`, as params."""
    out = []
    for line in msg.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() != header.lower():
            continue
        params: dict[str, str] = {}
        for key, quoted, bare in re.findall(r'([\w-]+)\s*=\s*(?:"([^"]*)"|([^\s,]+))', value):
            params[key.lower()] = quoted or bare
        out.append(params)
    return out


def digest_ok(params: dict[str, str], method: str, password: str = PASSWORD) -> bool:
    """Check one MD5 qop=auth digest response the way a server would (RFC 7616 §3.4.1)."""

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - the digest under test

    ha1 = md5(f"{params['username']}:{params['realm']}:{password}")
    ha2 = md5(f"{method}:{params['uri']}")
    want = md5(f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:{params['qop']}:{ha2}")
    return params.get("response") == want


@pytest.mark.parametrize(
    ("scenario", "first", "second"),
    [
        ("uas_auth_proxy_then_callee.xml", "407", "401"),
        ("uas_auth_callee_then_proxy.xml", "401", "407"),
    ],
)
async def test_proxy_and_callee_both_challenge(
    endpoint: SipEndpoint,
    tmp_path: Path,
    scenario: str,
    first: str,
    second: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    uas = start_uas(tmp_path, scenario, {})
    try:
        call = OutboundCall(endpoint, make_spec(uas))
        with caplog.at_level("DEBUG"):
            assert await call.setup() is True, call.error
            assert call.status_code == 200
            await call.hangup()
        assert await sipp_done(uas) == 0, uas.errors()
        sent = invites(uas)
        assert len(sent) == 3
        last = sent[2]
        proxy = credentials(last, "Proxy-Authorization")
        www = credentials(last, "Authorization")
        assert len(proxy) == 1 and len(www) == 1
        realms = {"407": proxy[0]["realm"], "401": www[0]["realm"]}
        assert realms[first] == "first.test" and realms[second] == "second.test"
        assert digest_ok(proxy[0], "INVITE") and digest_ok(www[0], "INVITE")
        # The first challenger's nonce is used again, with the next nonce count
        # (RFC 7616 §3.4: a repeated nc looks like a replay).
        first_name = "Proxy-Authorization" if first == "407" else "Authorization"
        (earlier,) = credentials(sent[1], first_name)
        (again,) = credentials(last, first_name)
        assert earlier["nonce"] == again["nonce"]
        assert (earlier["nc"], again["nc"]) == ("00000001", "00000002")
        assert PASSWORD not in "".join(uas.received())
        assert PASSWORD not in caplog.text and PASSWORD not in repr(call.spec)
    finally:
        uas.stop()


@pytest.mark.parametrize(("password", "answered"), [(PASSWORD, True), ("wrong", False)])
async def test_stale_nonce_is_retried_once(
    endpoint: SipEndpoint, tmp_path: Path, password: str, answered: bool
) -> None:
    uas = start_uas(tmp_path, "uas_auth_stale.xml", {"auth_user": USER, "auth_password": PASSWORD})
    try:
        call = OutboundCall(endpoint, make_spec(uas, password))
        assert await call.setup() is answered, call.error
        sent = invites(uas)
        if answered:
            await call.hangup()
            assert len(sent) == 3
            nonces = [credentials(m, "Authorization")[0]["nonce"] for m in sent[1:]]
            assert re.fullmatch(r"\d+a\d+", nonces[0]) and re.fullmatch(r"\d+b\d+", nonces[1])
            assert len(credentials(sent[2], "Authorization")) == 1  # the stale one replaced
        else:
            assert call.status_code == 403 and call.outcome is Outcome.REJECTED
            assert len(sent) == 2
        assert await sipp_done(uas) == 0, uas.errors()
    finally:
        uas.stop()


async def test_supported_challenge_picked_among_several(
    endpoint: SipEndpoint, tmp_path: Path
) -> None:
    uas = start_uas(
        tmp_path, "uas_auth_algorithms.xml", {"auth_user": USER, "auth_password": PASSWORD}
    )
    try:
        call = OutboundCall(endpoint, make_spec(uas))
        assert await call.setup() is True, call.error
        await call.hangup()
        assert await sipp_done(uas) == 0, uas.errors()
        sent = invites(uas)
        assert len(sent) == 2
        creds = credentials(sent[1], "Authorization")
        assert len(creds) == 1 and creds[0]["algorithm"] == "MD5"
        assert digest_ok(creds[0], "INVITE")
    finally:
        uas.stop()


async def test_auth_rounds_are_bounded(
    endpoint: SipEndpoint, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uas = start_uas(tmp_path, "uas_auth_endless.xml", {})
    try:
        call = OutboundCall(endpoint, make_spec(uas))
        with caplog.at_level("DEBUG"):
            assert await asyncio.wait_for(call.setup(), 5) is False
        assert call.status_code == 407 and call.outcome is Outcome.REJECTED
        assert call.error is not None and "authentication failed" in call.error
        await asyncio.sleep(0.3)  # an extra INVITE, if any, would be in by now
        sent = invites(uas)
        assert len(sent) == MAX_AUTH_ROUNDS + 1  # the first, then one per round
        assert len(credentials(sent[-1], "Proxy-Authorization")) == MAX_AUTH_ROUNDS
        assert PASSWORD not in caplog.text and PASSWORD not in call.error
    finally:
        uas.stop()


@pytest.mark.parametrize(
    ("scenario", "method", "header"),
    [
        ("uas_refresh_auth_reinvite.xml", "INVITE", "Authorization"),
        ("uas_refresh_auth_update.xml", "UPDATE", "Proxy-Authorization"),
    ],
)
async def test_challenged_session_refresh_is_answered_with_digest(
    endpoint: SipEndpoint, tmp_path: Path, scenario: str, method: str, header: str
) -> None:
    """An SBC that challenges in-dialog requests: the refresh re-INVITE (401) or
    UPDATE (407) is answered through the INVITE's digest path (RFC 3261 §22.2), so
    the session is kept rather than dropped when it expires."""
    keys = {"session_expires": "2", "auth_user": USER, "auth_password": PASSWORD}
    uas = start_uas(tmp_path, scenario, keys)
    try:
        call = OutboundCall(endpoint, make_spec(uas))
        assert await call.setup() is True
        wanted = 3 if method == "INVITE" else 2  # the initial INVITE counts for re-INVITEs
        deadline = asyncio.get_running_loop().time() + 6
        while sum(m.startswith(method) for m in uas.received()) < wanted:
            assert asyncio.get_running_loop().time() < deadline, "no retried refresh"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the 200 to the retried refresh (and its ACK)
        assert call.answered and not call.ended.is_set()
        await call.hangup()
        assert await sipp_done(uas) == 0
        sent = [m for m in uas.received() if m.startswith(method)]
        first, retried = sent[-2], sent[-1]
        assert not credentials(first, header)  # no challenge for it before
        (creds,) = credentials(retried, header)
        assert creds["realm"] == "ringcast.test" and digest_ok(creds, method)
        cseq = [int(re.findall(r"\nCSeq: (\d+)", m)[0]) for m in (first, retried)]
        assert cseq[1] == cseq[0] + 1  # §22.2: the retried request has a new CSeq
        assert "SIP/2.0 403" not in uas.messages()
    finally:
        uas.stop()
