"""The SSRF guard against real HTTP servers on 127.0.0.1: the media fetcher refuses
loopback targets and redirects to them unless allowed, connections are checked
after DNS, and the API refuses such URLs with 422 (through `ringcast serve` too)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e.server import RingcastServer

from ringcast.api import create_app
from ringcast.config import Settings
from ringcast.errors import MediaError
from ringcast.media.fetch import MediaFetcher
from ringcast.netguard import AddressRefused, NetPolicy, guarded_transport
from ringcast.store import Store, open_store

WAV = b"RIFF" + b"\x00" * 60  # only fetched, never decoded here


class Site:
    """An HTTP server on 127.0.0.1: /audio.wav answers, /to?url=U redirects to U."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                hits.append(self.path)
                if self.path.startswith("/to?url="):
                    self.send_response(302)
                    self.send_header("Location", self.path.split("=", 1)[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                self.send_header("Content-Length", str(len(WAV)))
                self.end_headers()
                self.wfile.write(WAV)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def target() -> Iterator[Site]:
    s = Site()
    try:
        yield s
    finally:
        s.close()


async def test_fetch_of_a_loopback_url_is_refused_unless_allowed(
    tmp_path: Path, site: Site
) -> None:
    with pytest.raises(MediaError, match=r"refused: 127\.0\.0\.1 .* loopback address"):
        await MediaFetcher(cache_dir=tmp_path / "a").fetch(site.url("/audio.wav"))
    assert site.hits == []  # refused before connecting
    got = await MediaFetcher(cache_dir=tmp_path / "b", allow_private=True).fetch(
        site.url("/audio.wav")
    )
    assert got.data == WAV
    by_cidr = MediaFetcher(cache_dir=tmp_path / "c", allow_networks=["127.0.0.0/8"])
    assert (await by_cidr.fetch(site.url("/audio.wav"))).data == WAV
    other_cidr = MediaFetcher(cache_dir=tmp_path / "d", allow_networks=["10.0.0.0/8"])
    with pytest.raises(MediaError, match="refused"):
        await other_cidr.fetch(site.url("/audio.wav"))


async def test_redirect_to_another_loopback_url_is_checked(
    tmp_path: Path, site: Site, target: Site
) -> None:
    start = site.url("/to?url=" + target.url("/audio.wav"))
    with pytest.raises(MediaError, match="refused"):
        await MediaFetcher(cache_dir=tmp_path / "a").fetch(start)
    assert site.hits == [] and target.hits == []

    # With allow-private both hops are fetched.
    ok = MediaFetcher(cache_dir=tmp_path / "b", allow_private=True)
    assert (await ok.fetch(start)).data == WAV
    assert site.hits == ["/to?url=" + target.url("/audio.wav")]
    assert target.hits == ["/audio.wav"]


async def test_redirect_hop_from_a_public_name_to_loopback_is_refused(
    tmp_path: Path, target: Site
) -> None:
    """The first hop is a (mocked) public site; its redirect to 127.0.0.1 is refused
    before any request is made to it."""
    hops: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hops.append(str(request.url))
        if request.url.host == "media.example":
            return httpx.Response(302, headers={"Location": target.url("/audio.wav")})
        return httpx.Response(200, content=WAV)

    fetcher = MediaFetcher(cache_dir=tmp_path, transport=httpx.MockTransport(handler))
    with pytest.raises(MediaError, match=r"refused: 127\.0\.0\.1"):
        await fetcher.fetch("http://media.example/hello.wav")
    assert hops == ["http://media.example/hello.wav"]
    assert target.hits == []


async def test_connections_are_checked_after_dns(target: Site) -> None:
    """`localhost` is a name: the guarded transport resolves it itself and refuses the
    loopback address it gets, whatever was checked before (DNS rebinding)."""
    async with httpx.AsyncClient(transport=guarded_transport(NetPolicy())) as client:
        with pytest.raises(AddressRefused, match="loopback"):
            await client.get(target.url("/audio.wav", host="localhost"))
    assert target.hits == []
    allowed = guarded_transport(NetPolicy.build(allow_networks=["127.0.0.0/8", "::1/128"]))
    async with httpx.AsyncClient(transport=allowed) as client:
        resp = await client.get(target.url("/audio.wav", host="localhost"))
    assert resp.content == WAV


# --- the API ----------------------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/rc.db")
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()


def body(play: str, callback: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"to": "sip:a@gw.example.com", "playlist": [{"play": play}]}
    if callback is not None:
        out["callback_url"] = callback
    return out


async def post(store: Store, payload: dict[str, Any], **settings: Any) -> httpx.Response:
    app = create_app(Settings(db=store.url, **settings), store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://rc.test"
    ) as c:
        return await c.post("/voice/call/play", json=payload)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (body("http://127.0.0.1:9/x.wav"), "playlist[0].play"),
        (body("http://localhost:9/x.wav"), "playlist[0].play"),
        (body("http://[::1]/x.wav"), "playlist[0].play"),
        (body("http://169.254.169.254/latest/meta-data"), "playlist[0].play"),
        (body("http://[::ffff:10.0.0.1]/x.wav"), "playlist[0].play"),
        (body("http://224.0.0.1/x.wav"), "playlist[0].play"),
        (body("http://0x7f000001/x.wav"), "playlist[0].play"),
        (body("http://media.example/x.wav", "http://192.168.1.10/hook"), "callback_url"),
        (body("http://media.example/x.wav", "http://localhost./hook"), "callback_url"),
    ],
)
async def test_api_refuses_private_urls_with_422(
    store: Store, payload: dict[str, Any], field: str
) -> None:
    resp = await post(store, payload)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["field"] == field
    assert "refused" in error["message"]


async def test_api_allows_them_when_configured(store: Store) -> None:
    private = body("http://127.0.0.1:9/x.wav", "http://10.1.2.3/hook")
    assert (await post(store, private, allow_private_urls=True)).status_code == 200
    allowed = await post(store, private, private_url_allowlist=("127.0.0.0/8", "10.0.0.0/8"))
    assert allowed.status_code == 200, allowed.text
    partly = await post(store, private, private_url_allowlist=("127.0.0.0/8",))
    assert partly.json()["error"]["field"] == "callback_url"
    # a name that does not resolve is accepted (the fetch reports it later)
    assert (await post(store, body("http://media.invalid/x.wav"))).status_code == 200


def test_serve_refuses_and_config_file_cidr_allows(tmp_path: Path, site: Site) -> None:
    payload = body(site.url("/audio.wav"))
    with RingcastServer(tmp_path, env={"RINGCAST_ALLOW_PRIVATE_URLS": "0"}) as rc:
        resp = httpx.post(f"{rc.base}/voice/call/play", json=payload, timeout=10)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["field"] == "playlist[0].play"
    config = tmp_path / "ringcast.toml"
    config.write_text('private_url_allowlist = ["127.0.0.1/32"]\n')
    with RingcastServer(
        tmp_path, args=["--config", str(config)], env={"RINGCAST_ALLOW_PRIVATE_URLS": "0"}
    ) as rc:
        resp = httpx.post(f"{rc.base}/voice/call/play", json=payload, timeout=10)
        assert resp.status_code == 200, resp.text
