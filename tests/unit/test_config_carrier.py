"""The carrier keys of a trunk (numbers, registration) and `default_trunk`:
read from the TOML file, a bad value failing at start-up with the key's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringcast.config import Settings
from ringcast.errors import ConfigError
from ringcast.trunks import RegisterOptions, registering

GOOD = """
default_trunk = "carrier"
[trunks.carrier]
proxy = "sip:gw.carrier.example:5060"
username = "acct"
password = "s3cret"
country = "US"
prefix = "9"
strip = "+1"
user_phone = true
asserted_identity = true
register = true
registrar = "sip:reg.carrier.example"
register_expires = 300
register_retry = 5
register_wait = 0
[trunks.plain]
proxy = "sip:gw2.example"
"""


def load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "ringcast.toml"
    path.write_text(text)
    return Settings.from_sources({"config": str(path)}, env={})


def test_carrier_keys_from_toml(tmp_path: Path) -> None:
    settings = load(tmp_path, GOOD)
    assert settings.default_trunk == "carrier"
    assert settings.trunks["carrier"]["strip"] == "+1"
    assert registering(settings.trunks) == [
        RegisterOptions(
            trunk="carrier",
            registrar="sip:reg.carrier.example",
            username="acct",
            expires=300,
            retry=5.0,
            wait=0.0,
        )
    ]
    assert "s3cret" not in repr(settings) + repr(registering(settings.trunks))


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ('country = "Atlantis"', "trunks.plain.country", "must be a country code like US"),
        ('prefix = "9a"', "trunks.plain.prefix", "must be up to 16 of 0-9 + * #"),
        ("strip = 1", "trunks.plain.strip", "must be up to 16 of 0-9 + * #"),
        ('user_phone = "yes"', "trunks.plain.user_phone", "must be true or false"),
        ("register = true", "trunks.plain.username", "is required with register = true"),
        ('registrar = "reg.example"', "trunks.plain.registrar", "must be a sip: URI"),
        ("register_expires = 0", "trunks.plain.register_expires", "whole seconds from 1"),
        ("register_retry = 0", "trunks.plain.register_retry", "must be seconds from 0.1"),
        ("register_wait = -1", "trunks.plain.register_wait", "must be seconds from 0 to 3600"),
    ],
)
def test_a_bad_carrier_key_names_itself(
    tmp_path: Path, line: str, field: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f'[trunks.plain]\nproxy = "sip:gw.example"\n{line}\n')
    assert caught.value.field == field
    assert message in caught.value.message


def test_default_trunk_must_be_a_trunk(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, 'default_trunk = "nope"\n[trunks.plain]\nproxy = "sip:gw.example"\n')
    assert caught.value.field == "default_trunk"
    assert "'nope' is not a [trunks.NAME] table" in caught.value.message
