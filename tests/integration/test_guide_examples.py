"""The user's guide (docs/guide.md) works as written: every JSON example marked
`<!-- example -->` is accepted by a real ringcast (both databases), and its
do-not-call examples do what the guide says."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from ringcast.api import create_app
from ringcast.config import Settings
from ringcast.sealing import new_key_text
from ringcast.store import Store

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide.md"
EXAMPLES = re.findall(r"<!-- example -->\n```json\n(.*?)\n```", GUIDE.read_text(), re.S)
TRUNKS = {"carrier": {"proxy": "sip:127.0.0.1:5080", "username": "acct", "password": "s3cret"}}


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        db=store.url, trunks=TRUNKS, allow_private_urls=True, secret_key=new_key_text()
    )
    app = create_app(settings, store)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        yield c


def test_the_guide_has_examples() -> None:
    assert len(EXAMPLES) >= 8


@pytest.mark.parametrize("example", EXAMPLES, ids=[str(i) for i in range(len(EXAMPLES))])
async def test_each_example_is_accepted(client: httpx.AsyncClient, example: str) -> None:
    resp = await client.post("/voice/call/play", json=json.loads(example))
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"] == "accepted"


async def test_the_do_not_call_examples(client: httpx.AsyncClient) -> None:
    entries = ["+1 (555) 010-0001", "sip:optme@127.0.0.1:5070", "alice"]
    assert (await client.post("/dnc", json={"entries": entries})).json()["added"] == 3
    listed = (await client.get("/dnc", params={"limit": 100})).json()["entries"]
    assert [e["entry"] for e in listed] == ["+15550100001", "alice", "optme"]
    assert (await client.delete("/dnc/%2B15550100001")).status_code == 200
    # an open server is its operator's: the install-wide list is there too
    assert (await client.get("/dnc", params={"list": "install"})).json()["entries"] == []


TOML_BLOCKS = re.findall(r"```toml\n(.*?)```", GUIDE.read_text(), re.S)


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=[str(i) for i in range(len(TOML_BLOCKS))])
def test_each_config_example_loads(tmp_path: Path, block: str) -> None:
    """Every config file the guide shows is one ringcast starts with, and it sets what
    it says. Files it names under /etc/ringcast (TLS certificates) are made empty in
    tmp_path: here only their presence is checked; tests/unit/test_trunk_tls.py loads
    the TLS example with real certificates."""
    for name in re.findall(r"/etc/ringcast/([\w.-]+)", block):
        (tmp_path / name).write_text("")
    block = block.replace("/etc/ringcast/", f"{tmp_path}/")
    path = tmp_path / "ringcast.toml"
    path.write_text(block)
    settings = Settings.from_sources({"config": str(path)}, env={})
    for key, value in tomllib.loads(block).items():
        if isinstance(value, dict):
            assert set(getattr(settings, key)) == set(value), key
        else:
            assert getattr(settings, key) == value, key
