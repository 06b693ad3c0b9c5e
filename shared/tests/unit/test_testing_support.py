"""The unit-test helpers of ``switchyard.testing``: the in-memory outbox and ``eventually``."""

from __future__ import annotations

import asyncio

import pytest

from switchyard.bus import HandlerRegistry, PoisonMessage
from switchyard.envelope import Event
from switchyard.testing import InMemoryBus, InMemoryOutbox, eventually

from ..support import TEST_CATALOG, ThingHappened, thing


async def test_the_in_memory_outbox_publishes_what_was_staged_in_order() -> None:
    seen: list[str] = []

    async def record(event: Event[ThingHappened]) -> None:
        seen.append(event.data.thing_id)

    registry = HandlerRegistry()
    registry.add("things", ["test.thing.happened"], record)
    bus = InMemoryBus(catalog=TEST_CATALOG)
    bus.subscribe(registry)
    outbox = InMemoryOutbox(bus)
    outbox.stage([thing("a"), thing("b")])
    outbox.stage([])  # a write with no events
    outbox.notify()
    assert seen == [] and outbox.notified == 1  # staged, not yet relayed
    published = await outbox.relay()
    assert [e.type for e in published] == ["test.thing.happened"] * 2
    assert seen == ["a", "b"] and bus.published == published
    assert await outbox.relay() == []  # each event once


async def test_an_event_its_contract_rejects_fails_the_relay() -> None:
    outbox = InMemoryOutbox(InMemoryBus(catalog=TEST_CATALOG))
    rejected = thing("a").model_copy(update={"data": {"thing_id": 7}})
    outbox.stage([rejected])
    with pytest.raises(PoisonMessage, match="schema"):
        await outbox.relay()


async def test_eventually_waits_for_the_condition_and_gives_up_when_told() -> None:
    flag = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, flag.set)

    async def is_set() -> bool:
        return flag.is_set()

    await eventually(is_set, timeout=5)

    async def never() -> bool:
        return False

    with pytest.raises(AssertionError, match="within 0.1 s"):
        await eventually(never, timeout=0.1, interval=0.01)


def test_served_operations_drop_patterns_head_and_the_shared_routes() -> None:
    from aiohttp import web

    from switchyard.testing.contracts import served_operations

    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/healthz", handler)
    app.router.add_get("/api/v1/things/{id:[A-Za-z0-9_-]{1,80}}", handler)  # and HEAD
    app.router.add_post("/api/v1/things/{id}/parts/{n:\\d+}", handler)
    app.router.add_route("*", "/socket.io/", handler)
    app.router.add_get("/internal/other", handler)
    assert served_operations(app, ignore={"/internal/other"}) == {
        ("GET", "/api/v1/things/{id}"),
        ("POST", "/api/v1/things/{id}/parts/{n}"),
    }


def test_a_route_missing_from_the_app_fails_the_contract_check() -> None:
    from aiohttp import web

    from switchyard.testing.contracts import (
        assert_routes_match_contract,
        documented_operations,
    )

    assert ("POST", "/api/v1/auth/login") in documented_operations("auth")
    with pytest.raises(AssertionError, match="documented, not served: .*/api/v1/auth/login"):
        assert_routes_match_contract(web.Application(), "auth")
