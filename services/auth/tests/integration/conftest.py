"""The auth service running on loopback against the real broker and the embedded store,
with a manual clock, a cheap argon2 cost and a collector of every auth.* event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from auth_svc.app import create_app
from auth_svc.domain.clock import ManualClock
from auth_svc.settings import AuthSettings
from switchyard.bus import Bus, Consumer, Subscription
from switchyard.envelope import Event
from switchyard.metrics import Metrics
from switchyard.testing.servers import AppServer

ISSUER = "http://auth.test"
AUDIENCE = "switchyard-test"
STRONG_PASSWORD = "violet-harbour-47-kettle"
API = "/api/v1/auth"


class EventLog:
    """Every auth.* event the test exchange carries, as the notification service would see it."""

    def __init__(self) -> None:
        self.events: list[Event[Any]] = []
        self._arrived = asyncio.Condition()

    async def handle(self, event: Event[Any]) -> None:
        async with self._arrived:
            self.events.append(event)
            self._arrived.notify_all()

    def of_type(self, event_type: str) -> list[Event[Any]]:
        return [event for event in self.events if event.type == event_type]

    async def wait_for(
        self,
        event_type: str,
        predicate: Callable[[Any], bool] = lambda data: True,
        timeout: float = 10.0,
    ) -> Event[Any]:
        def match() -> Event[Any] | None:
            for event in self.events:
                if event.type == event_type and predicate(event.data):
                    return event
            return None

        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: match() is not None), timeout)
        found = match()
        assert found is not None
        return found

    async def code_for(self, email: str, purpose: str, *, after: int = 0) -> str:
        """The code of the newest ``auth.otp.requested`` for (email, purpose)."""

        def matches(data: Any) -> bool:
            return bool(data.email == email and data.purpose == purpose)

        await self.wait_for("auth.otp.requested", matches)
        for _ in range(100):
            found = [e for e in self.of_type("auth.otp.requested") if matches(e.data)]
            if len(found) > after:
                return str(found[-1].data.code)
            async with self._arrived:
                await asyncio.wait_for(self._arrived.wait(), 10)
        raise AssertionError("no new code arrived")


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any


@dataclass
class AuthClient:
    """A real HTTP client for the running service."""

    http: aiohttp.ClientSession
    server: AppServer
    clock: ManualClock
    settings: AuthSettings
    events: EventLog
    tokens: dict[str, Any] = field(default_factory=dict)

    @property
    def app(self) -> Any:
        return self.server.app

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        url = path if path.startswith("/.well-known") or path.startswith("/metrics") else API + path
        async with self.http.request(method, url, json=json, headers=sent, data=data) as response:
            raw = await response.read()
            body: Any = None
            if raw:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = raw.decode(errors="replace")
            return Reply(response.status, body, response.headers)

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> Reply:
        return await self.call("POST", path, json, **kwargs)

    async def register(
        self, email: str, password: str = STRONG_PASSWORD, name: str = "Dana Example", **extra: Any
    ) -> Reply:
        return await self.post(
            "/register", {"email": email, "password": password, "display_name": name, **extra}
        )

    async def signed_up(self, email: str, password: str = STRONG_PASSWORD) -> dict[str, Any]:
        """Register and verify: returns the token pair."""
        reply = await self.register(email, password)
        assert reply.status == 201, reply.body
        code = await self.events.code_for(email, "verify_email")
        verified = await self.post("/verify-email", {"email": email, "code": code})
        assert verified.status == 200, verified.body
        return dict(verified.body)

    async def login(self, email: str, password: str = STRONG_PASSWORD) -> Reply:
        return await self.post("/login", {"email": email, "password": password})


def auth_settings_for(overrides: dict[str, Any], keys_dir: Path, **extra: Any) -> AuthSettings:
    return AuthSettings(
        **overrides,
        keys_dir=keys_dir,
        auth_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        # Cheap argon2 for speed; test_settings proves the production defaults.
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        key_reload_interval=0.2,
        **extra,
    )


@pytest.fixture
async def event_log(
    settings_overrides: dict[str, Any], broker_cleanup: None
) -> AsyncIterator[EventLog]:
    """Bound before the service starts, so no event is unroutable."""
    log = EventLog()
    bus = Bus(
        url=settings_overrides["amqp_url"],
        exchange=settings_overrides["bus_exchange"],
        service="testprobe",
        metrics=Metrics("testprobe"),
        queue_prefix=settings_overrides["bus_queue_prefix"],
        retry_delays=[0.2],
        queue_expires_ms=60_000,
    )
    await bus.connect()
    consumer = Consumer(bus, Subscription("events", ("auth.#",), log.handle, deduplicate=False))
    await consumer.start()
    yield log
    await consumer.stop(timeout=1)
    await bus.close()


@pytest.fixture
def auth_overrides() -> dict[str, Any]:
    """Per-test extra settings (override the fixture in a module to change them)."""
    return {}


@pytest.fixture
async def auth(
    settings_overrides: dict[str, Any],
    event_log: EventLog,
    start_app: Any,
    tmp_path: Path,
    auth_overrides: dict[str, Any],
) -> AsyncIterator[AuthClient]:
    settings = auth_settings_for(settings_overrides, tmp_path / "keys", **auth_overrides)
    clock = ManualClock()
    server = await start_app(create_app(settings, clock=clock))
    async with aiohttp.ClientSession(server.url) as http:
        yield AuthClient(http, server, clock, settings, event_log)
