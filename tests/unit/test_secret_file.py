"""store.secret_file: the create-once file both install secrets use (the sealing
key and the webhook install secret)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ringcast.errors import ConfigError
from ringcast.sealing import sealer_for
from ringcast.store.secret_file import beside_sqlite, create_once
from ringcast.webhooks.secret import install_secret


def test_beside_a_sqlite_file_only(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    assert beside_sqlite(f"sqlite:///{db}", ".k") == Path(f"{db}.k")
    assert beside_sqlite("sqlite:///:memory:", ".k") is None
    assert beside_sqlite("postgresql://u@127.0.0.1/db", ".k") is None
    assert beside_sqlite("not a url", ".k") is None


def test_created_once_private_then_read(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f.secret"
    made = iter(["first", "second"])
    got = create_once(path, lambda: next(made), str.upper, what="test file", field="x")
    assert got == "FIRST"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = create_once(path, lambda: next(made), str.upper, what="test file", field="x")
    assert again == "FIRST"  # read back, not made again
    assert path.read_text() == "first\n"


def test_a_malformed_or_empty_file_is_a_config_error(tmp_path: Path) -> None:
    def parse(text: str) -> int:
        return int(text)  # ValueError for "abc"

    bad = tmp_path / "bad"
    bad.write_text("abc\n")
    with pytest.raises(ConfigError, match=f"test file {bad}: invalid literal") as exc:
        create_once(bad, lambda: "1", parse, what="test file", field="x")
    assert exc.value.field == "x"
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(ConfigError, match=f"test file {empty} is empty"):
        create_once(empty, lambda: "1", parse, what="test file", field="x")


def test_both_install_secrets_use_their_own_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ringcast.db'}"
    secret = install_secret(url)
    sealer = sealer_for(url, None)
    assert secret is not None and sealer is not None
    assert (tmp_path / "ringcast.db.webhook-secret").read_text().strip() == secret
    assert (tmp_path / "ringcast.db.secret-key").exists()
    assert install_secret(url) == secret  # the same install secret in every process
    assert sealer_for(url, None).unseal(sealer.seal("pw")) == "pw"  # type: ignore[union-attr]
