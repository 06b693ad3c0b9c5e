"""The signing-key directory and its CLI."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from auth_svc import keys_cli
from auth_svc.adapters.signing_keys import KeyRing, KeyStoreError
from auth_svc.domain.clock import ManualClock
from switchyard.tokens import key_thumbprint


def test_create_activate_and_remove(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    ring = KeyRing(tmp_path / "keys", clock=clock)
    with pytest.raises(KeyStoreError, match="rotate"):
        ring.active()
    first = ring.create()
    assert ring.active().kid == first.kid == key_thumbprint(first.public_key)
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    key_file = tmp_path / "keys" / f"{first.kid}.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.kid not in repr(first.private_key) and "PRIVATE" not in repr(first)

    clock.advance(10)
    second = ring.create(activate_in=300)
    assert set(ring.public_keys) == {first.kid, second.kid}  # published at once
    assert ring.active().kid == first.kid  # but signs only later
    clock.advance(301)
    assert ring.active().kid == second.kid

    with pytest.raises(KeyStoreError, match="signing key"):
        ring.remove(second.kid)
    ring.remove(first.kid)
    assert list(ring.public_keys) == [second.kid]
    with pytest.raises(KeyStoreError):
        ring.remove("no-such-kid")


def test_other_processes_see_changes(tmp_path: Path) -> None:
    writer = KeyRing(tmp_path)
    reader = KeyRing(tmp_path)
    assert not reader.reload()
    key = writer.create()
    assert reader.reload() and reader.get(key.kid) is not None
    assert not reader.reload()  # unchanged directory: nothing re-read


def test_ensure_key_creates_only_once(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "k")
    ring.ensure_key()
    ring.ensure_key()
    assert len(ring.keys) == 1
    assert len(list((tmp_path / "k").glob("*.json"))) == 1


def test_encrypted_keys(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path, passphrase="a-long-development-passphrase-0123456789")
    key = ring.create()
    record = json.loads((tmp_path / f"{key.kid}.json").read_text())
    assert record["encrypted"] is True
    assert "ENCRYPTED PRIVATE KEY" in record["private_key"]
    assert KeyRing(tmp_path, passphrase="a-long-development-passphrase-0123456789").reload()
    with pytest.raises(KeyStoreError, match="AUTH_KEY_ENCRYPTION_KEY"):
        KeyRing(tmp_path).reload()
    with pytest.raises(KeyStoreError, match="AUTH_KEY_ENCRYPTION_KEY"):
        KeyRing(tmp_path, passphrase="the-wrong-passphrase-0123456789").reload()


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = str(tmp_path / "cli")
    assert keys_cli.run(["--dir", directory, "list"]) == 0
    assert "no keys" in capsys.readouterr().out
    assert keys_cli.run(["--dir", directory, "rotate"]) == 0
    first = capsys.readouterr().out.split()[1]
    assert keys_cli.run(["--dir", directory, "rotate", "--activate-in", "3600"]) == 0
    second = capsys.readouterr().out.split()[1]
    assert keys_cli.run(["--dir", directory, "list"]) == 0
    listing = capsys.readouterr().out
    assert f"{first}  signing" in listing and f"{second}  pending" in listing
    assert "PRIVATE" not in listing
    assert keys_cli.run(["--dir", directory, "remove", first]) == 1
    assert "signing key" in capsys.readouterr().err
