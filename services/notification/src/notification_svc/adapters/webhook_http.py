"""Outgoing webhook requests: Standard Webhooks signatures, a 10 s budget, no redirects,
1 KiB of response kept — and the SSRF guard at connect time.

The guard sits in the connector's host resolution (:class:`GuardedConnector`), which aiohttp
runs for every new connection, IP literals included: every A/AAAA record the name resolves
to must be allowed (``domain/webhooks.address_allowed``), so a name that resolves to a
private address — at registration or only later (DNS rebinding) — is refused when the
connection is made. Kept-alive connections are reused only for the same host and port,
i.e. to an address that passed the check.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp.abc import ResolveResult
from standardwebhooks import Webhook

from notification_svc.domain.webhooks import RESPONSE_KEPT, address_allowed


class TargetRefused(OSError):
    """The target resolves to an address webhooks may not reach."""


class GuardedConnector(aiohttp.TCPConnector):
    def __init__(self, *, allow_private: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.allow_private = allow_private

    async def _resolve_host(
        self, host: str, port: int, traces: Sequence[Any] | None = None
    ) -> list[ResolveResult]:
        results = await super()._resolve_host(host, port, traces)
        if not self.allow_private:
            refused = [r["host"] for r in results if not address_allowed(r["host"])]
            if refused or not results:
                raise TargetRefused(f"{host} resolves to a non-public address")
        return results


@dataclass(frozen=True)
class Attempt:
    status_code: int | None
    body: str | None
    latency_ms: float
    error: str | None = None
    refused: bool = False

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def signed_headers(secret: str, *, msg_id: str, payload: str, at: datetime) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, payload),
    }


class WebhookSender:
    def __init__(self, *, allow_private: bool, timeout: float, connections: int = 100) -> None:
        self.allow_private = allow_private
        self.timeout = timeout
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=GuardedConnector(
                    allow_private=self.allow_private,
                    limit=self.connections,
                    limit_per_host=10,
                    ttl_dns_cache=10,
                ),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": "Switchyard-Webhooks/1"},
            )
        return self._session

    async def post(
        self, url: str, *, secret: str, msg_id: str, payload: str, at: datetime
    ) -> Attempt:
        headers = {
            **signed_headers(secret, msg_id=msg_id, payload=payload, at=at),
            "Content-Type": "application/cloudevents+json",
        }
        started = time.perf_counter()

        def took() -> float:
            return round((time.perf_counter() - started) * 1000, 2)

        try:
            async with self._client().post(
                url, data=payload.encode(), headers=headers, allow_redirects=False
            ) as response:
                body = await response.content.read(RESPONSE_KEPT)
                return Attempt(response.status, body.decode("utf-8", "replace"), took())
        except aiohttp.ClientConnectorError as error:
            if isinstance(error.os_error, TargetRefused):
                return Attempt(None, None, took(), str(error.os_error), refused=True)
            return Attempt(None, None, took(), f"connection failed: {type(error).__name__}")
        except TimeoutError:
            return Attempt(None, None, took(), f"no answer within {self.timeout:g} s")
        except (aiohttp.ClientError, OSError, ValueError) as error:
            return Attempt(None, None, took(), f"{type(error).__name__}: {error}"[:200])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
