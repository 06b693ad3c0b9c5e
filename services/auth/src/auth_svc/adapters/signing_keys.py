"""Signing keys in a directory outside the repository.

One JSON file per key (``<kid>.json``, mode 0600, directory 0700) holding the
PKCS#8 PEM of an Ed25519 private key — encrypted with AUTH_KEY_ENCRYPTION_KEY
when that is set — its creation time and the time it becomes the signing key.

- every key in the directory is published in the JWKS;
- the signing key is the newest key whose ``activate_at`` has passed, so
  ``rotate --activate-in 300`` publishes a key five minutes before it signs;
- removing a key (never the signing one) makes its tokens fail everywhere
  once verifiers refresh.

Every replica reads the same directory (a mounted secret in a cluster) and
notices changes within AUTH_KEY_RELOAD_INTERVAL seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auth_svc.domain.clock import Clock, SystemClock
from switchyard.tokens import IssuedToken, TokenSigner, generate_signing_key

log = logging.getLogger("auth.keys")

CleanupContext = Callable[[web.Application], AsyncIterator[None]]

_SUFFIX = ".json"


class KeyStoreError(RuntimeError):
    """The key directory cannot be used as it is (said how in the message)."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey
    created_at: datetime
    activate_at: datetime

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def __repr__(self) -> str:  # never print key material
        return f"SigningKey(kid={self.kid!r}, activate_at={self.activate_at.isoformat()})"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class KeyRing:
    """The signing keys of one directory, reloaded when the directory changes."""

    def __init__(
        self, directory: Path, *, passphrase: str | None = None, clock: Clock | None = None
    ) -> None:
        self.directory = Path(directory)
        self._passphrase = passphrase.encode() if passphrase else None
        self.clock = clock or SystemClock()
        self._keys: dict[str, SigningKey] = {}
        self._public: dict[str, Ed25519PublicKey] = {}
        self._fingerprint: tuple[tuple[str, int], ...] | None = None
        self._last_reload = 0.0

    # -- reading ---------------------------------------------------------------------

    def _listing(self) -> tuple[tuple[str, int], ...]:
        if not self.directory.is_dir():
            return ()
        return tuple(
            sorted(
                (entry.name, entry.stat().st_mtime_ns)
                for entry in os.scandir(self.directory)
                if entry.name.endswith(_SUFFIX) and entry.is_file()
            )
        )

    def reload(self, *, force: bool = False) -> bool:
        """Re-read the directory when its files changed; True when the key set changed."""
        self._last_reload = time.monotonic()
        listing = self._listing()
        if not force and listing == self._fingerprint:
            return False
        keys: dict[str, SigningKey] = {}
        for name, _ in listing:
            key = self._read(self.directory / name)
            if key is not None:
                keys[key.kid] = self._keys.get(key.kid, key)
        changed = set(keys) != set(self._keys)
        self._keys = keys
        self._public = {kid: key.public_key for kid, key in keys.items()}
        self._fingerprint = listing
        if changed:
            log.info("signing keys loaded", extra={"kids": sorted(keys)})
        return changed

    def _read(self, path: Path) -> SigningKey | None:
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None  # removed between listing and reading
        except (OSError, ValueError) as error:
            raise KeyStoreError(f"cannot read signing key file {path.name}: {error}") from None
        encrypted = bool(record.get("encrypted"))
        if encrypted and self._passphrase is None:
            raise KeyStoreError(
                f"signing key {path.name} is encrypted; set AUTH_KEY_ENCRYPTION_KEY to read it"
            )
        try:
            private = serialization.load_pem_private_key(
                record["private_key"].encode(), password=self._passphrase if encrypted else None
            )
        except (KeyError, ValueError, TypeError) as error:
            raise KeyStoreError(
                f"signing key {path.name} cannot be loaded ({type(error).__name__}); "
                "is AUTH_KEY_ENCRYPTION_KEY the one it was written with?"
            ) from None
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyStoreError(f"signing key {path.name} is not an Ed25519 key")
        return SigningKey(
            kid=record["kid"],
            private_key=private,
            created_at=_parse_time(record["created_at"]),
            activate_at=_parse_time(record.get("activate_at", record["created_at"])),
        )

    def reload_if_due(self, interval: float) -> None:
        if time.monotonic() - self._last_reload >= interval:
            self.reload()

    @property
    def keys(self) -> list[SigningKey]:
        """Every key, oldest first."""
        return sorted(self._keys.values(), key=lambda k: (k.activate_at, k.created_at, k.kid))

    @property
    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        return self._public

    def get(self, kid: str) -> SigningKey | None:
        return self._keys.get(kid)

    def active(self) -> SigningKey:
        """The signing key: the newest one already activated."""
        now = self.clock.now()
        ready = [key for key in self.keys if key.activate_at <= now]
        if not ready:
            raise KeyStoreError(
                f"no active signing key in {self.directory}; "
                "run `python -m auth_svc.keys_cli rotate` to create one"
            )
        return ready[-1]

    # -- writing (the CLI, and first start in development) -----------------------------

    def _ensure_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):
            self.directory.chmod(0o700)

    def create(self, *, activate_in: float = 0) -> SigningKey:
        """Write a new key; it signs once ``activate_in`` seconds have passed."""
        self._ensure_directory()
        kid, private = generate_signing_key()
        now = self.clock.now()
        key = SigningKey(kid, private, now, now + timedelta(seconds=activate_in))
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(self._passphrase)
            if self._passphrase
            else serialization.NoEncryption()
        )
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        ).decode()
        record = {
            "kid": kid,
            "created_at": _iso(key.created_at),
            "activate_at": _iso(key.activate_at),
            "encrypted": self._passphrase is not None,
            "private_key": pem,
        }
        final = self.directory / f"{kid}{_SUFFIX}"
        temporary = self.directory / f".{kid}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)
        self.reload(force=True)
        log.info("signing key created", extra={"kid": kid, "activate_at": record["activate_at"]})
        return key

    def remove(self, kid: str) -> None:
        """Delete a key; its tokens stop verifying. The signing key cannot be removed."""
        self.reload()
        if kid not in self._keys:
            raise KeyStoreError(f"no signing key {kid!r} in {self.directory}")
        if self.active().kid == kid:
            raise KeyStoreError(f"{kid} is the signing key; rotate to a new key before removing it")
        (self.directory / f"{kid}{_SUFFIX}").unlink()
        self.reload(force=True)

    def ensure_key(self) -> None:
        """First start: create a key when the directory has none (guarded by a lock file)."""
        self.reload()
        if self._keys:
            return
        self._ensure_directory()
        lock = self.directory / ".create.lock"
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # Another process is creating the first key: wait for it.
            for _ in range(100):
                if self.reload() or self._keys:
                    return
                time.sleep(0.05)
            raise KeyStoreError(f"stale {lock}; remove it and start again") from None
        try:
            os.close(fd)
            self.reload(force=True)
            if not self._keys:
                self.create()
        finally:
            lock.unlink(missing_ok=True)


class KeyRingSource:
    """The verifier's key source inside auth: the key ring itself (no HTTP round trip)."""

    def __init__(self, ring: KeyRing, *, reload_interval: float = 1.0) -> None:
        self.ring = ring
        self.reload_interval = reload_interval

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self.ring.public_keys.get(kid)

    def on_unknown_kid(self, kid: str) -> None:
        self.ring.reload_if_due(self.reload_interval)

    async def refresh_unknown(self, kid: str) -> bool:
        self.ring.reload_if_due(self.reload_interval)
        return kid in self.ring.public_keys

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class Signer:
    """Issues access tokens with the ring's current signing key."""

    def __init__(
        self, ring: KeyRing, *, issuer: str, audience: str, lifetime: int, clock: Clock
    ) -> None:
        self.ring = ring
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime
        self.clock = clock
        self._signers: dict[str, TokenSigner] = {}

    def signer(self) -> TokenSigner:
        key = self.ring.active()
        signer = self._signers.get(key.kid)
        if signer is None:
            signer = TokenSigner(
                key.private_key,
                key.kid,
                issuer=self.issuer,
                audience=self.audience,
                lifetime=self.lifetime,
                clock=lambda: self.clock.now().timestamp(),
            )
            self._signers = {key.kid: signer}
        return signer

    def issue(
        self, subject: str, roles: Iterable[str], *, extra: Mapping[str, Any] | None = None
    ) -> IssuedToken:
        """An access token signed with the current signing key."""
        return self.signer().issue(subject, roles, extra=extra)


def key_reload_context(ring: KeyRing, interval: float) -> CleanupContext:
    """A ``cleanup_ctx`` that re-reads the key directory every ``interval`` seconds."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    ring.reload()
                except KeyStoreError as error:
                    log.error("signing keys could not be reloaded", extra={"error": str(error)})

        task = asyncio.create_task(loop(), name="auth-key-reload")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return context
