"""Idempotency-Key on the embedded store with real HTTP: one run per key, owners that
keep and guard their claim, roll-forward after a committed effect, keyed fingerprints."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from switchyard.idempotency import (
    COLLECTION,
    idempotency_indexes,
    idempotent,
    idempotent_request,
)
from switchyard.mongo import mongo_context
from switchyard.settings import ServiceSettings
from switchyard.testing import TcpProxy, eventually
from switchyard.web import json_response, new_app

pytestmark = pytest.mark.integration

SECRET = "a-test-secret-for-fingerprints-0123456789"
Behaviour = Callable[[web.Request], Awaitable[web.Response]]


def make_app(
    settings_overrides: dict[str, Any], behaviour: Behaviour, *, lock_seconds: float = 60.0, **extra
) -> web.Application:
    fields = {"idempotency_secret": SecretStr(SECRET), **settings_overrides, **extra}
    settings = ServiceSettings(service_name="things", **fields)
    app = new_app(settings)
    app.cleanup_ctx.append(mongo_context(idempotency_indexes()))
    app.router.add_post("/things", idempotent("things", lock_seconds=lock_seconds)(behaviour))
    return app


async def post(url: str, body: Any, key: str, *, raw: bytes | None = None, query: str = "") -> Any:
    async with aiohttp.ClientSession() as http:
        data = raw if raw is not None else json.dumps(body).encode()
        async with http.post(
            f"{url}/things{query}",
            data=data,
            headers={"Idempotency-Key": key, "Content-Type": "application/json"},
        ) as response:
            return response.status, await response.json(content_type=None), response.headers


async def _holds(value: bool) -> bool:
    return value


async def test_concurrent_requests_under_one_key_run_the_handler_once(
    start_app, settings_overrides
):
    runs: list[int] = []

    async def create(request: web.Request) -> web.Response:
        runs.append(1)
        await asyncio.sleep(0.3)
        return json_response({"id": "t1"}, status=201)

    server = await start_app(make_app(settings_overrides, create))
    replies = await asyncio.gather(*(post(server.url, {"n": 1}, "k-conc") for _ in range(10)))
    assert len(runs) == 1
    assert {status for status, _, _ in replies} <= {201, 409}
    status, body, headers = await post(server.url, {"n": 1}, "k-conc")
    assert (status, body, headers["Idempotent-Replayed"]) == (201, {"id": "t1"}, "true")


async def test_a_handler_slower_than_the_lock_keeps_it(start_app, settings_overrides):
    runs: list[int] = []
    # The handler answers once the retry was refused (a fixed 2.5 s raced the 1.6 s wait
    # below on a loaded machine: the retry then got the stored answer instead of a 409).
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        runs.append(1)
        await release.wait()
        return json_response({"id": "slow"}, status=201)

    server = await start_app(make_app(settings_overrides, slow, lock_seconds=1.0))
    first = asyncio.create_task(post(server.url, {"n": 1}, "k-slow"))
    await eventually(lambda: _holds(bool(runs)), timeout=20)  # the lock is taken
    await asyncio.sleep(1.6)  # past the lock: only its renewal keeps the retry out
    status, body, headers = await post(server.url, {"n": 1}, "k-slow")
    release.set()
    assert status == 409 and body["type"].endswith("/idempotency-key-in-use")
    assert headers["Retry-After"] == "1"
    assert (await first)[0] == 201
    assert len(runs) == 1


async def test_a_claim_taken_over_from_a_stalled_owner_is_not_overwritten_by_it(
    start_app, settings_overrides, mongo_url
):
    """The first owner loses the store (it cannot renew), its lock runs out, a second
    process takes the key over. When the first finishes after all, its completion is
    refused: the key keeps the result the second owner answered with."""
    host, port = mongo_url.split("//", 1)[1].rstrip("/").split(":")
    proxy = await TcpProxy(host, int(port)).start()
    release_first, release_second = asyncio.Event(), asyncio.Event()

    entered: list[str] = []  # a handler runs only once its owner holds the key

    def handler(name: str, gate: asyncio.Event) -> Behaviour:
        async def run(request: web.Request) -> web.Response:
            entered.append(name)
            await gate.wait()
            return json_response({"by": name}, status=201)

        return run

    stalled = await start_app(
        make_app(
            settings_overrides,
            handler("first", release_first),
            lock_seconds=1.0,
            mongo_url=f"mongodb://127.0.0.1:{proxy.port}/",
        )
    )
    other = await start_app(make_app(settings_overrides, handler("second", release_second)))
    # Each step waits for what it needs (fixed sleeps raced a loaded machine): the first
    # owner holds the key before the store is cut, the second holds it before the first
    # may finish, and the first has answered before the second does.
    first = asyncio.create_task(post(stalled.url, {"n": 1}, "k-stall"))
    await eventually(lambda: _holds(entered == ["first"]), timeout=20)
    await proxy.cut()
    await asyncio.sleep(1.5)  # the first owner's lock has run out unrenewed
    second = asyncio.create_task(post(other.url, {"n": 1}, "k-stall"))
    await eventually(lambda: _holds(entered == ["first", "second"]), timeout=20)
    await proxy.restore()
    release_first.set()
    await asyncio.wait({first}, timeout=20)  # the first owner answers, its result refused
    release_second.set()
    assert (await second)[:2] == (201, {"by": "second"})
    await first
    status, body, headers = await post(other.url, {"n": 1}, "k-stall")
    assert (status, body, headers["Idempotent-Replayed"]) == (201, {"by": "second"}, "true")
    await proxy.close()


async def test_a_failure_after_the_committed_effect_rolls_forward(start_app, settings_overrides):
    """The effect is committed, then a later step fails: the key is kept, not released, and
    the retry resumes from the recorded effect and gets the original success."""
    created: list[str] = []
    follow_up_fails = [True]

    async def create(request: web.Request) -> web.Response:
        attempt = idempotent_request(request)
        assert attempt is not None
        if attempt.effect is None:
            created.append("thing-1")  # the effect: one thing created
            await attempt.committed(thing_id="thing-1")
        thing_id = (attempt.effect or {}).get("thing_id", created[-1])
        if follow_up_fails[0]:
            follow_up_fails[0] = False
            raise RuntimeError("the follow-up write failed")
        return json_response({"id": thing_id}, status=201)

    server = await start_app(make_app(settings_overrides, create))
    status, body, _ = await post(server.url, {"n": 1}, "k-roll")
    assert status == 500
    status, body, headers = await post(server.url, {"n": 1}, "k-roll")
    assert (status, body) == (201, {"id": "thing-1"})
    assert created == ["thing-1"]  # not created twice
    status, body, headers = await post(server.url, {"n": 1}, "k-roll")
    assert (status, body, headers["Idempotent-Replayed"]) == (201, {"id": "thing-1"}, "true")


async def test_fingerprints_are_keyed_and_canonical(start_app, settings_overrides, mongo_db):
    async def echo(request: web.Request) -> web.Response:
        return json_response(await request.json(), status=201)

    server = await start_app(make_app(settings_overrides, echo))
    body = {"email": "a@example.com", "password": "correct horse battery staple"}
    assert (await post(server.url, body, "k-fp"))[0] == 201
    reordered = b'{ "password" : "correct horse battery staple",\n "email":"a@example.com" }'
    status, replayed, headers = await post(server.url, None, "k-fp", raw=reordered)
    assert (status, replayed, headers["Idempotent-Replayed"]) == (201, body, "true")
    status, problem, _ = await post(server.url, body, "k-fp", query="?dry_run=1")
    assert status == 422 and problem["type"].endswith("/idempotency-key-reused")

    stored = (await mongo_db[COLLECTION].find_one({}))["fingerprint"]
    raw = json.dumps(body).encode()
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    for unkeyed in (
        hashlib.sha256(raw).hexdigest(),
        hashlib.sha256(canonical).hexdigest(),
        hashlib.sha256(b"POST\0/things\0" + raw).hexdigest(),
    ):
        assert stored != unkeyed  # no offline password guess from the stored fingerprint
    assert "correct horse" not in json.dumps(await mongo_db[COLLECTION].find_one({}), default=str)

    other_secret = await start_app(
        make_app(
            settings_overrides,
            echo,
            idempotency_secret=SecretStr("another-secret-for-fingerprints-987654"),
            mongo_database=f"{settings_overrides['mongo_database']}_b",
        )
    )
    assert (await post(other_secret.url, body, "k-fp"))[0] == 201
    other_db = mongo_db.client[f"{settings_overrides['mongo_database']}_b"]
    try:
        assert (await other_db[COLLECTION].find_one({}))["fingerprint"] != stored
    finally:
        await mongo_db.client.drop_database(other_db.name)


class AcceptsKeys(ServiceSettings):
    accepts_idempotency_keys: ClassVar[bool] = True


def test_the_secret_is_required_outside_development() -> None:
    with pytest.raises(ValueError, match="IDEMPOTENCY_SECRET"):
        AcceptsKeys(environment="production")
    with pytest.raises(ValueError, match="real secret"):
        AcceptsKeys(environment="production", idempotency_secret=SecretStr("short"))
    assert AcceptsKeys(environment="production", idempotency_secret=SecretStr(SECRET))
    assert AcceptsKeys(environment="development").idempotency_secret is None
    assert ServiceSettings(environment="production").idempotency_secret is None  # not needed
