"""The "srtp" setting: request schema, trunk config, and which one wins at dial time."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ringcast.api.schemas import PlayRequest
from ringcast.config import Settings
from ringcast.dialer.call import resolve_sip
from ringcast.errors import ConfigError


def _request(srtp: object) -> PlayRequest:
    return PlayRequest.model_validate(
        {"to": "sip:bob@127.0.0.1:5070", "playlist": [{"pause": 1}], "sip": {"srtp": srtp}}
    )


def test_request_schema() -> None:
    sip = _request("required").sip
    assert sip is not None and sip.srtp == "required"
    with pytest.raises(ValidationError) as err:
        _request("mandatory")
    assert err.value.errors()[0]["loc"] == ("sip", "srtp")


def test_trunk_config(tmp_path: Path) -> None:
    path = tmp_path / "ringcast.toml"
    path.write_text('[trunks.secure]\nproxy = "sip:127.0.0.1:5080"\nsrtp = "required"\n')
    s = Settings.from_sources({"config": str(path)}, env={})
    assert s.trunks["secure"]["srtp"] == "required"
    path.write_text('[trunks.secure]\nproxy = "sip:127.0.0.1:5080"\nsrtp = "yes"\n')
    with pytest.raises(ConfigError) as err:
        Settings.from_sources({"config": str(path)}, env={})
    assert err.value.field == "trunks.secure.srtp"
    assert err.value.message == "trunks.secure.srtp must be off, optional or required"


@pytest.mark.parametrize(
    ("trunk", "request_", "dialed"),
    [
        ("required", "off", "required"),  # a request never weakens its trunk
        ("optional", "required", "required"),  # it may ask for more
        (None, "optional", "optional"),
        ("optional", None, "optional"),
        (None, None, None),
    ],
)
def test_stricter_of_trunk_and_request(
    trunk: str | None, request_: str | None, dialed: str | None
) -> None:
    table = {"proxy": "sip:127.0.0.1:5080", **({"srtp": trunk} if trunk else {})}
    stored = {"trunk": "t", **({"srtp": request_} if request_ else {})}
    assert resolve_sip(stored, {"t": table}, None).get("srtp") == dialed
    if trunk is None and request_ is not None:  # no trunk at all: the request's own
        assert resolve_sip({"srtp": request_}, {}, None)["srtp"] == request_
