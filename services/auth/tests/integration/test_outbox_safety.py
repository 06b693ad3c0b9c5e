"""One-time codes and their events: no code email lost to a re-issued, used, shared or
expired code document (issue 9, item 2), on the embedded store and the real broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from auth_svc.adapters.budgets import BUDGETS, AttemptBudget
from auth_svc.adapters.codes import CODES, CodeRepository
from auth_svc.app import create_app
from auth_svc.domain import codes as otp
from auth_svc.domain.clock import ManualClock
from switchyard import keys
from switchyard.bus import Bus
from switchyard.envelope import new_envelope
from switchyard.events.auth import OtpRequested
from switchyard.mongo import loaded_time
from switchyard.outbox import OutboxRelay
from switchyard.testing import service_bus

from .conftest import EventLog, auth_settings_for

pytestmark = pytest.mark.integration


def otp_event(user_id: str, code: str) -> Any:
    return new_envelope(
        OtpRequested(
            user_id=user_id,
            email=f"{user_id}@example.com",
            display_name="Dana",
            purpose="verify_email",
            code=code,
            expires_at=datetime.now(UTC) + timedelta(minutes=10),
        ),
        service="auth",
        subject=user_id,
    )


async def issue(repo: CodeRepository, user_id: str, code: str) -> Any:
    event = otp_event(user_id, code)
    now = datetime.now(UTC)
    await repo.issue(
        otp.code_key(user_id, "verify_email"),
        user_id=user_id,
        purpose="verify_email",
        code_hash=otp.hash_code(code, "salt"),
        salt="salt",
        now=now,
        expires_at=now + timedelta(minutes=10),
        event=event,
    )
    return event


class UsedAndReissuedWhilePublishing:
    """While the relay publishes the first code's event, the user enters that code (the
    document is deleted) and asks for a new one (re-created under the same ``_id``)."""

    def __init__(self, bus: Bus, repo: CodeRepository, user_id: str) -> None:
        self.bus, self.repo, self.user_id = bus, repo, user_id
        self.metrics = bus.metrics
        self.second: Any = None

    async def publish(self, envelope: Any) -> None:
        await self.bus.publish(envelope)
        if self.second is None:
            key = otp.code_key(self.user_id, "verify_email")
            assert await self.repo.consume(key, otp.hash_code("111111", "salt"))
            self.second = await issue(self.repo, self.user_id, "222222")


@pytest.fixture
async def relay_bus(settings_overrides: dict[str, Any], event_log: EventLog) -> Any:
    bus = service_bus(settings_overrides, "auth")
    await bus.connect()
    yield bus
    await bus.close()


async def test_a_code_used_and_reissued_while_relaying_still_reaches_the_user(
    mongo_db: Any, relay_bus: Bus, event_log: EventLog
) -> None:
    repo = CodeRepository(mongo_db)
    await issue(repo, "u1", "111111")
    publisher = UsedAndReissuedWhilePublishing(relay_bus, repo, "u1")
    relay = OutboxRelay(mongo_db, [CODES], publisher, metrics=relay_bus.metrics)
    while await relay.relay_once():
        pass
    await event_log.wait_for("auth.otp.requested", lambda data: data.code == "222222")
    codes = sorted(e.data.code for e in event_log.of_type("auth.otp.requested"))
    assert codes[0] == "111111" and codes[-1] == "222222"


async def test_marking_one_budget_exhausted_never_touches_another(mongo_db: Any) -> None:
    """ "Exhausted once per window" must concern this key's document only: written as a bare
    ``$or`` beside the other conditions, the embedded store marked *another* account's
    budget exhausted and staged this account's events in it."""
    budget = AttemptBudget(mongo_db, prefix="guess", limit=1, window=3600)
    now = datetime.now(UTC)
    mine = await budget.reserve("mine", now)
    other = await budget.reserve("other", now - timedelta(hours=2))
    assert mine.granted and other.granted
    assert await budget.exhausted("other", other)  # another account, an earlier window
    event = otp_event("mine", "777777")
    assert await budget.exhausted("mine", mine, events=[event])
    again = otp_event("mine", "888888")
    assert not await budget.exhausted("mine", mine, events=[again])  # once per window
    stored = await mongo_db[BUDGETS].find_one({"_id": "guess:other"})
    assert loaded_time(stored["exhausted_window"]) == other.until
    assert again.id not in (stored.get("outbox") or {})
    assert event.id not in (stored.get("outbox") or {})


async def test_an_expired_code_keeps_its_event_until_it_is_relayed(
    settings_overrides: dict[str, Any], event_log: EventLog, start_app: Any, tmp_path: Path
) -> None:
    """The TTL path: a code issued while the relay could not publish (here: stopped) expires
    before it is relayed. Expiry waits for the event; the email still goes out."""
    settings = auth_settings_for(settings_overrides, tmp_path / "keys")
    clock = ManualClock(datetime.now(UTC) - timedelta(hours=1))  # codes expire 50 min ago
    app = create_app(settings, clock=clock)
    server = await start_app(app)
    relay = app[keys.OUTBOX_RELAY]
    await relay.stop()
    async with aiohttp.ClientSession(server.url) as http:
        body = {"email": "late@example.com", "password": "violet-harbour-47-kettle"}
        async with http.post(
            "/api/v1/auth/register", json={**body, "display_name": "Late"}
        ) as reply:
            assert reply.status == 201
    db = app[keys.MONGO_DB]
    assert await db[CODES].count_documents({}) == 1
    assert await relay.sweep_expired() == 0  # expired, but its event has not gone out
    assert await db[CODES].find_one({}) is not None  # a read does not expire it either
    relay.start()
    await event_log.wait_for("auth.otp.requested", lambda data: data.email == "late@example.com")

    async def swept() -> bool:
        await relay.sweep_expired()
        return await db[CODES].count_documents({}) == 0

    for _ in range(100):
        if await swept():
            break
        await relay_pause()
    assert await db[CODES].count_documents({}) == 0  # and once relayed, it is cleaned up


async def relay_pause() -> None:
    import asyncio

    await asyncio.sleep(0.1)
