"""The auth service running on loopback against the real broker and the embedded store,
with a manual clock, a cheap argon2 cost and a collector of every auth.* event.

``auth`` talks to the service on its own port; ``edge`` talks to the same service through a
real gateway (``gateway_svc``) built from the production route table, the way clients and
attackers reach it."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from auth_svc.app import create_app
from auth_svc.domain.clock import ManualClock
from auth_svc.keys import AUTH_METRICS, DEPS
from auth_svc.settings import AuthSettings
from gateway_svc.app import create_app as create_gateway
from gateway_svc.settings import GatewaySettings
from switchyard.bus import Consumer, Subscription
from switchyard.envelope import Event
from switchyard.testing import service_bus
from switchyard.testing.gateway import raised_limits_table
from switchyard.testing.servers import AppServer, free_port
from switchyard.tokens import TokenVerifier

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
    bus = service_bus(settings_overrides, "testprobe", retry_delays=[0.2])
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


async def replica_with_admin(
    auth: AuthClient,
    settings_overrides: dict[str, Any],
    start_app: Any,
    admin_email: str,
    admin_password: str,
) -> aiohttp.ClientSession:
    """A second replica on ``auth``'s database, started with ``ADMIN_EMAIL``/``ADMIN_PASSWORD``
    (the bootstrap runs at its start); a client of it (close it)."""
    settings = auth_settings_for(
        settings_overrides,
        auth.settings.keys_dir,
        admin_email=admin_email,
        admin_password=admin_password,
    )
    server = await start_app(create_app(settings, clock=auth.clock))
    return aiohttp.ClientSession(server.url)


def gateway_settings(
    settings_overrides: dict[str, Any],
    auth: AuthClient,
    tmp_path: Path,
    table: dict[str, Any] | None = None,
    **extra: Any,
) -> GatewaySettings:
    """A real gateway's settings: ``table`` (default: :func:`raised_limits_table`), auth as
    its ``auth`` upstream, auth's JWKS and revoked-session list, the test's broker exchange
    (it hears auth's revocations)."""
    routes = tmp_path / f"routes-{free_port()}.yaml"
    routes.write_text(yaml.safe_dump(table if table is not None else raised_limits_table()))
    options: dict[str, Any] = {
        **settings_overrides,
        "port": free_port(),
        "admin_port": 0,  # the admin listener on any free port
        "routes_file": routes,
        "auth_upstreams": [auth.server.url],
        "jwks_url": f"{auth.server.url}/.well-known/jwks.json",
        "auth_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "access_log": "off",
        "shutdown_timeout": 1.0,
    }
    return GatewaySettings(**{**options, **extra})


@asynccontextmanager
async def behind_gateway(
    auth: AuthClient,
    settings_overrides: dict[str, Any],
    tmp_path: Path,
    table: dict[str, Any] | None = None,
    **extra: Any,
) -> AsyncIterator[AuthClient]:
    """``auth`` behind a real gateway (:func:`gateway_settings`), its token verifier on the
    service's manual clock. Metrics stay on the service's own port (``auth``): the gateway's
    /metrics is its own."""
    settings = gateway_settings(settings_overrides, auth, tmp_path, table, **extra)
    verifier = TokenVerifier(
        jwks_url=settings.jwks_url,
        issuer=ISSUER,
        audience=AUDIENCE,
        clock=lambda: auth.clock.now().timestamp(),
    )
    gateway = create_gateway(settings, verifier=verifier)
    await gateway.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{gateway.port}") as http:
            yield replace(auth, http=http)
    finally:
        await gateway.stop(grace=0.5)


@pytest.fixture
async def edge(
    auth: AuthClient, settings_overrides: dict[str, Any], tmp_path: Path
) -> AsyncIterator[AuthClient]:
    """The ``auth`` service behind a real gateway with the production route table (public
    and protected routes, body limits, identity-header stripping), only the rate limits
    raised: ``auth-address`` and the per-account limits would stop these tests at the door."""
    async with behind_gateway(auth, settings_overrides, tmp_path) as client:
        yield client


# -- helpers for the attack tests ---------------------------------------------------------


def token_claims(token: str) -> dict[str, Any]:
    """The claims of an access token (no verification: the tests only read ``sid``, ``roles``)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def metric(auth: AuthClient, name: str, **labels: str) -> float:
    """One sample of the service's own metrics (0 when the series does not exist yet)."""
    return auth.app[AUTH_METRICS].value(name, **labels)


async def settle(auth: AuthClient) -> None:
    """Wait until the work the service does after answering (issuing codes) is done."""
    await auth.app[DEPS].background.wait_idle()
