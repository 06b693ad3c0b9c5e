"""The breaker under chaos (issue 12 item 3): the real auth service (``python -m auth_svc``)
SIGKILLed and restarted three times during a burst of sign-ups through the real gateway,
with the production route table's breaker settings.

The gateway must not extend the outages: of the requests sent more than 1 s after auth's
``/readyz`` answered again, at most 2 % are refused; and every sign-up the gateway
acknowledged (201) has its verification code on the broker (``auth.otp.requested``, which
the notification service turns into the email), however the kills cut its writes.
(The breaker before issue 12 — 10 s open, no readiness probe, no panic routing — had every
one of those requests refused: 312 of 312 in one run.) Wall time: 3 × auth's restart
(2-5 s, more on a loaded machine) plus ~9 s.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway_svc.app import Gateway, create_app
from gateway_svc.settings import GatewaySettings
from switchyard.testing import eventually, tap_events
from switchyard.testing.gateway import gateway_namespace, raised_limits_routes
from switchyard.testing.processes import ServiceProcess
from switchyard.testing.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ISSUER = "http://auth.chaos.test"
AUDIENCE = "switchyard-test"
PASSWORD = "violet-harbour-47-kettle"
KILLS = 3
UP_SECONDS = 2.0  # auth serving between a restart's readiness and the next kill
DOWN_SECONDS = 0.2  # dead before the restart begins (the restart itself takes 2-5 s)
SENDERS = 4  # concurrent clients signing up
GRACE = 1.0  # requests sent this long after readiness must get through
MAX_REFUSED = 0.02
PER_WINDOW = 10  # requests to judge after each restart, at least


@dataclass
class Sent:
    at: float  # time.monotonic() when the request was sent
    done: float  # … and when its answer (or the error) came
    email: str
    status: int  # 0: no HTTP answer at all


class Auth:
    """``python -m auth_svc`` on one port, killed and started again."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.url = f"http://127.0.0.1:{env['AUTH_PORT']}"
        self.process: ServiceProcess | None = None

    async def start(self) -> float:
        """Start and wait until /readyz answers 200; returns when it did (monotonic)."""
        self.process = ServiceProcess(["-m", "auth_svc"], self.env, self.log)
        await self.process.ready(self.url + "/readyz", timeout=60)
        return time.monotonic()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@pytest.fixture
async def auth(
    settings_overrides: dict[str, Any], tmp_path: Path, broker_cleanup: None, mongo_db: Any
) -> AsyncIterator[Auth]:
    env = {
        "SWITCHYARD_ENV": "test",
        "AUTH_PORT": str(free_port()),
        "MONGO_URL": settings_overrides["mongo_url"],
        "MONGO_DATABASE": settings_overrides["mongo_database"],
        "AMQP_URL": settings_overrides["amqp_url"],
        "BUS_EXCHANGE": settings_overrides["bus_exchange"],
        "BUS_QUEUE_PREFIX": settings_overrides["bus_queue_prefix"],
        "BUS_QUEUE_EXPIRES_MS": str(settings_overrides["bus_queue_expires_ms"]),
        "BUS_QUEUE_TYPE": settings_overrides["bus_queue_type"],
        "OUTBOX_POLL_INTERVAL": str(settings_overrides["outbox_poll_interval"]),
        "INTERNAL_API_TOKEN": settings_overrides["internal_api_token"],
        "AUTH_KEYS_DIR": str(tmp_path / "keys"),
        "AUTH_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
        "ARGON2_TIME_COST": "1",  # cheap hashing: the subject is the breaker, not argon2
        "ARGON2_MEMORY_KIB": "1024",
        "LOG_LEVEL": "WARNING",
    }
    service = Auth({**os.environ, **env}, tmp_path / "auth.log")
    try:
        yield service
    finally:
        service.stop()


async def gateway_for(auth: Auth, overrides: dict[str, Any], tmp_path: Path) -> Gateway:
    """The production route table (its breaker defaults included) in front of ``auth``;
    only the rate limits are raised, so the door refuses nothing by policy. On the test's
    broker namespace (it follows auth's revocations there), admin listener on a free port."""
    settings = GatewaySettings(
        **gateway_namespace(overrides),
        environment="test",
        port=free_port(),
        admin_port=0,  # the admin listener on any free port (9080 may be a running suite's)
        routes_file=raised_limits_routes(tmp_path),
        auth_upstreams=[auth.url],
        jwks_url=auth.url + "/.well-known/jwks.json",
        auth_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        access_log="off",
        shutdown_timeout=1.0,
    )
    gateway = create_app(settings)
    await gateway.start()
    await gateway.revocations_read()  # it takes bearer tokens from then on
    return gateway


async def test_auth_killed_three_times_during_sign_ups_loses_nothing_after_it_is_back(
    auth: Auth, settings_overrides: dict[str, Any], tmp_path: Path
) -> None:
    tap = await tap_events(settings_overrides, "auth.#")  # every event routable
    ready_at = [await auth.start()]
    killed_at: list[float] = []
    gateway = await gateway_for(auth, settings_overrides, tmp_path)
    sent: list[Sent] = []
    numbers = itertools.count()
    stop = asyncio.Event()
    try:
        async with aiohttp.ClientSession(
            gateway.url, timeout=aiohttp.ClientTimeout(total=10)
        ) as http:

            async def sign_ups() -> None:
                while not stop.is_set():
                    email = f"chaos-{next(numbers)}@example.com"
                    at = time.monotonic()
                    body = {"email": email, "password": PASSWORD, "display_name": "Chaos"}
                    try:
                        async with http.post("/api/v1/auth/register", json=body) as response:
                            await response.read()
                            status = response.status
                    except (aiohttp.ClientError, TimeoutError):
                        status = 0
                    sent.append(Sent(at, time.monotonic(), email, status))
                    if status not in (201, 202):
                        await asyncio.sleep(0.05)  # a refusal: do not spin

            async def stay_up() -> None:
                """UP_SECONDS, and longer until PER_WINDOW requests sent past the grace
                time were answered: a loaded machine answers fewer in the same time, and
                the verdict needs enough of them."""
                await asyncio.sleep(UP_SECONDS)
                since = ready_at[-1] + GRACE

                async def enough() -> bool:
                    return sum(request.at > since for request in sent) >= PER_WINDOW

                await eventually(enough, timeout=30)

            senders = [asyncio.create_task(sign_ups()) for _ in range(SENDERS)]
            for _ in range(KILLS):
                await stay_up()
                auth.kill()
                killed_at.append(time.monotonic())
                await asyncio.sleep(DOWN_SECONDS)
                ready_at.append(await auth.start())
            await stay_up()
            stop.set()
            await asyncio.gather(*senders)
            killed_at.append(time.monotonic())  # the end of the last window

        # Requests sent while auth was back and ready for more than GRACE seconds — and
        # answered before the next kill: a request in flight when the process dies is
        # cut by the kill itself (an outage), not by the gateway failing to recover.
        windows = list(zip(ready_at[1:], killed_at[1:], strict=True))
        judged = [
            request
            for request in sent
            if any(ready + GRACE < request.at and request.done < end for ready, end in windows)
        ]
        refused = [request for request in judged if request.status not in (201, 202)]
        during = [request for request in sent if request.status not in (201, 202)]
        restarts = [
            round(ready - kill, 2) for ready, kill in zip(ready_at[1:], killed_at[:-1], strict=True)
        ]
        print(  # the numbers of the run, for the report (pytest -s)
            f"sent {len(sent)}, judged {len(judged)}, refused there {len(refused)}"
            f" {sorted({r.status for r in refused})}, refused overall {len(during)};"
            f" restarts took {restarts} s"
        )
        assert len(judged) >= KILLS * PER_WINDOW, f"too few requests to judge: {len(judged)}"
        assert len(refused) <= MAX_REFUSED * len(judged), (
            f"{len(refused)} of {len(judged)} requests refused after auth was ready again"
        )

        # Every acknowledged sign-up has its code event (the email's source), even the
        # ones whose relay was cut by a kill: the restarted outbox relay publishes them.
        acknowledged = {request.email for request in sent if request.status in (201, 202)}
        assert acknowledged

        async def every_code_sent() -> bool:
            coded = {event["data"]["email"] for event in tap.of("auth.otp.requested")}
            return acknowledged <= coded

        await eventually(every_code_sent, timeout=30)
    finally:
        await gateway.stop(grace=0.5)
        await tap.close()
