"""Where a verifier finds public keys by ``kid``: given in-process, or fetched from a JWKS URL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from switchyard.tokens.codec import Clock, keys_from_jwks

log = logging.getLogger("switchyard.tokens")


class KeySource(Protocol):
    """Where a verifier finds public keys by ``kid``."""

    def get(self, kid: str) -> Ed25519PublicKey | None:
        """The key for ``kid`` if it is known now (fast, no I/O)."""

    def on_unknown_kid(self, kid: str) -> None:
        """A token named a kid we don't know: refresh soon if allowed (no waiting)."""

    async def refresh_unknown(self, kid: str) -> bool:
        """Try to learn ``kid`` now (subject to a cooldown); True when it is known afterwards."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class StaticKeys:
    """An in-process key source: keys given directly (tests, or a service that holds the keys)."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey] | None = None) -> None:
        self._keys: dict[str, Ed25519PublicKey] = dict(keys or {})

    @classmethod
    def from_jwks(cls, document: Any) -> StaticKeys:
        return cls(keys_from_jwks(document))

    def add(self, kid: str, key: Ed25519PublicKey) -> None:
        self._keys[kid] = key

    def remove(self, kid: str) -> None:
        self._keys.pop(kid, None)

    def replace(self, keys: Mapping[str, Ed25519PublicKey]) -> None:
        self._keys = dict(keys)

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self._keys.get(kid)

    def on_unknown_kid(self, kid: str) -> None:
        return None

    async def refresh_unknown(self, kid: str) -> bool:
        return kid in self._keys

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class JwksKeys:
    """Public keys fetched from a JWKS URL.

    - ``start()`` fetches once (a failure is logged, not fatal: the auth service may
      start after us) and starts a background refresh every ``refresh_interval``
      seconds (failures back off from 1 s up to the interval, old keys stay in use);
    - an unknown ``kid`` triggers a refetch, at most once per ``unknown_kid_cooldown``
      seconds, so junk kids cannot turn us into a JWKS-fetching amplifier;
    - concurrent refetches are coalesced into one request.
    """

    def __init__(
        self,
        url: str,
        *,
        refresh_interval: float = 300.0,
        unknown_kid_cooldown: float = 10.0,
        timeout: float = 5.0,
        session: aiohttp.ClientSession | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.url = url
        self.refresh_interval = refresh_interval
        self.unknown_kid_cooldown = unknown_kid_cooldown
        self.timeout = timeout
        self.clock = clock
        self._session = session
        self._own_session = session is None
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._last_attempt = float("-inf")
        self._inflight: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self.fetches = 0

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    @property
    def has_keys(self) -> bool:
        return bool(self._keys)

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self._keys.get(kid)

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            await self.refresh()
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            log.warning(
                "JWKS not available yet; will retry", extra={"url": self.url, "error": repr(error)}
            )
        self._loop_task = asyncio.create_task(self._refresh_loop(), name="jwks-refresh")

    async def close(self) -> None:
        for task in (self._loop_task, self._inflight):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._loop_task = self._inflight = None
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def refresh(self) -> None:
        """Fetch the JWKS now (joining a fetch already in flight)."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._fetch())
        await asyncio.shield(self._inflight)

    async def _fetch(self) -> None:
        if self._session is None:
            raise RuntimeError("JwksKeys.start() was not called")
        self._last_attempt = self.clock()
        self.fetches += 1
        async with self._session.get(
            self.url, timeout=aiohttp.ClientTimeout(total=self.timeout)
        ) as response:
            response.raise_for_status()
            document = await response.json(content_type=None)
        keys = keys_from_jwks(document, previous=self._keys)
        if not keys:
            raise ValueError("the JWKS holds no Ed25519 signing key")
        added, removed = set(keys) - set(self._keys), set(self._keys) - set(keys)
        self._keys = keys
        if added or removed:
            log.info(
                "signing keys updated", extra={"added": sorted(added), "removed": sorted(removed)}
            )

    async def _refresh_loop(self) -> None:
        backoff = 1.0
        delay = self.refresh_interval if self._keys else backoff
        while True:
            await asyncio.sleep(delay)
            try:
                await self.refresh()
                backoff, delay = 1.0, self.refresh_interval
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                log.warning(
                    "JWKS refresh failed; keeping the keys we have", extra={"error": repr(error)}
                )
                delay = backoff
                backoff = min(backoff * 2, self.refresh_interval)

    def _may_refetch(self) -> bool:
        return self.clock() - self._last_attempt >= self.unknown_kid_cooldown

    def on_unknown_kid(self, kid: str) -> None:
        if self._session is None or not self._may_refetch():
            return
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._fetch())
            self._inflight.add_done_callback(_log_failed_fetch)

    async def refresh_unknown(self, kid: str) -> bool:
        if kid in self._keys:
            return True
        if self._inflight is not None and not self._inflight.done():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                await asyncio.shield(self._inflight)
        elif self._session is not None and self._may_refetch():
            try:
                await self.refresh()
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                log.warning("JWKS refetch for an unknown kid failed", extra={"error": repr(error)})
        return kid in self._keys


def _log_failed_fetch(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.warning("JWKS refetch for an unknown kid failed", extra={"error": repr(error)})
