"""The HTTP API over real HTTP; tokens signed by a test key behind a local JWKS."""

from __future__ import annotations

import aiohttp
import pytest

from notification_svc import keys
from notification_svc.domain.deliveries import NewDelivery
from switchyard.pagination import encode_cursor
from switchyard.testing import eventually

from ..support import user_id

pytestmark = pytest.mark.integration

DELIVERIES = "/api/v1/notifications/deliveries"
PREFERENCES = "/api/v1/notifications/preferences"


@pytest.fixture
async def service(start_service, smtp_sink):  # type: ignore[no-untyped-def]
    return await start_service(smtp_port=smtp_sink.port)


@pytest.fixture
async def http():  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as session:
        yield session


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def seed(service, user: str, statuses: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    store = service.app[keys.DELIVERIES]
    ids = []
    for n, status in enumerate(statuses):
        new = NewDelivery(
            f"evt-{user}-{n}",
            "auth.otp.requested",
            "email",
            f"{user}@example.com",
            user,
            "signup_code",
            "signup",
        )
        ids.append((await store.open(new, status=status)).id)  # type: ignore[arg-type]
    return ids


async def test_admins_page_through_deliveries_newest_first(service, http, jwks_server) -> None:  # type: ignore[no-untyped-def]
    alice, bob = user_id(), user_id()
    alice_ids = await seed(service, alice, ["sent", "failed", "sent", "suppressed", "sent"])
    await seed(service, bob, ["sent", "failed"])
    admin = bearer(jwks_server.token("admin-1", ["admin"]))

    seen: list[str] = []
    cursor = None
    while True:
        params = {"user_id": alice, "limit": "2", **({"cursor": cursor} if cursor else {})}
        async with http.get(service.url + DELIVERIES, params=params, headers=admin) as response:
            assert response.status == 200
            page = await response.json()
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(alice_ids))

    async with http.get(
        service.url + DELIVERIES, params={"status": "failed"}, headers=admin
    ) as response:
        items = (await response.json())["items"]
    assert {item["user_id"] for item in items} == {alice, bob}
    assert all(item["status"] == "failed" for item in items)
    item = items[0]
    assert set(item) >= {
        "id",
        "event_id",
        "channel",
        "recipient",
        "template",
        "status",
        "attempts",
        "provider_response",
        "created_at",
        "updated_at",
        "sent_at",
    }
    assert item["created_at"].endswith("Z")


async def test_ready_once_store_broker_and_revoked_sessions_answer(service, http) -> None:  # type: ignore[no-untyped-def]
    async def ready() -> bool:
        async with http.get(service.url + "/readyz") as response:
            return response.status == 200

    await eventually(ready, timeout=10)  # auth's revoked sessions are read in the background
    async with http.get(service.url + "/readyz") as response:
        assert (await response.json())["checks"] == {
            "database": "ok",
            "broker": "ok",
            "revocations": "ok",
        }


async def test_deliveries_need_an_admin_token(service, http, jwks_server) -> None:  # type: ignore[no-untyped-def]
    async with http.get(service.url + DELIVERIES) as response:
        assert response.status == 401
        assert response.content_type == "application/problem+json"
    customer = bearer(jwks_server.token("u1", ["customer"]))
    async with http.get(service.url + DELIVERIES, headers=customer) as response:
        assert response.status == 403
    async with http.get(service.url + DELIVERIES, headers=bearer("not-a-token")) as response:
        assert response.status == 401
        assert "invalid_token" in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": "0"}, 422),
        ({"limit": "1000"}, 422),
        ({"status": "lost"}, 422),
        ({"colour": "blue"}, 422),
        ({"cursor": "bm90LWFuLWlk"}, 400),
        ({"cursor": encode_cursor({"after": "dlv_" + "z" * 28})}, 400),  # not an id we issue
    ],
)
async def test_bad_queries_are_problems(service, http, jwks_server, params, status) -> None:  # type: ignore[no-untyped-def]
    admin = bearer(jwks_server.token("admin-1", ["admin"]))
    async with http.get(service.url + DELIVERIES, params=params, headers=admin) as response:
        assert response.status == status
        body = await response.json(content_type="application/problem+json")
        assert body["status"] == status
        if status == 422:
            assert body["errors"]


async def test_users_set_preferences_but_cannot_turn_off_security_or_signup(
    service, http, jwks_server
) -> None:  # type: ignore[no-untyped-def]
    me = bearer(jwks_server.token("u-pref", ["customer"]))
    async with http.get(service.url + PREFERENCES, headers=me) as response:
        body = await response.json()
    assert body["always_on"] == ["security", "signup"]
    assert (
        body["preferences"]["chat"]["email"] is True
        and body["preferences"]["marketing"]["email"] is False
    )

    change = {"preferences": {"chat": {"email": False}, "marketing": {"push": True}}}
    async with http.put(service.url + PREFERENCES, json=change, headers=me) as response:
        assert response.status == 200
        body = await response.json()
    assert body["preferences"]["chat"] == {
        "email": False,
        "push": True,
        "in_app": True,
        "webhook": True,
    }
    assert body["preferences"]["marketing"]["push"] is True

    refused = {"preferences": {"security": {"email": False}}}
    async with http.put(service.url + PREFERENCES, json=refused, headers=me) as response:
        assert response.status == 422
        problem = await response.json(content_type="application/problem+json")
    assert problem["errors"][0]["location"] == "/preferences/security/email"
    assert problem["errors"][0]["code"] == "cannot-opt-out"

    for bad in ({"preferences": {"news": {"email": False}}}, {"preferences": {}, "extra": 1}):
        async with http.put(service.url + PREFERENCES, json=bad, headers=me) as response:
            assert response.status == 422
    async with http.get(service.url + PREFERENCES) as response:
        assert response.status == 401
    async with http.get(service.url + PREFERENCES, headers=me) as response:
        assert (await response.json())["preferences"]["chat"]["email"] is False
