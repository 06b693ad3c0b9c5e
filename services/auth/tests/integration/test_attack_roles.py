"""Stale roles and revocation, through the real gateway (issue 11, item 3; issue 12 builds the
gateway deny-list on the ``auth.session.revoked`` events checked here).

A demoted admin's old access token still listed users, set his own roles back to admin and
demoted the bootstrap admin: admin endpoints trusted the roles inside the token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from switchyard import keys

from .conftest import STRONG_PASSWORD, AuthClient, settle, token_claims

pytestmark = pytest.mark.integration

ADMIN_EMAIL = "root@example.com"
ADMIN_PASSWORD = "quartz-meadow-81-lantern-sail"
NEW_PASSWORD = "amber-thistle-62-copper-gate"


@pytest.fixture
def auth_overrides() -> dict[str, Any]:
    return {"admin_email": ADMIN_EMAIL, "admin_password": ADMIN_PASSWORD}


async def sign_in(
    client: AuthClient, email: str, password: str = STRONG_PASSWORD
) -> dict[str, Any]:
    reply = await client.login(email, password)
    assert reply.status == 200, reply.body
    return dict(reply.body)


async def user_id(client: AuthClient, token: str) -> str:
    return str((await client.call("GET", "/me", token=token)).body["id"])


async def revoked(client: AuthClient, session_id: str) -> Any:
    event = await client.events.wait_for(
        "auth.session.revoked", lambda d: d.session_id == session_id
    )
    return event.data


async def test_a_demoted_admin_cannot_use_or_restore_admin(edge: AuthClient) -> None:
    root = await sign_in(edge, ADMIN_EMAIL, ADMIN_PASSWORD)
    root_id = await user_id(edge, root["access_token"])
    await edge.signed_up("bob@example.com")
    bob_id = await user_id(edge, (await sign_in(edge, "bob@example.com"))["access_token"])

    promoted = await edge.call(
        "PUT", f"/users/{bob_id}/roles", {"roles": ["admin"]}, token=root["access_token"]
    )
    assert promoted.status == 200
    bob = await sign_in(edge, "bob@example.com")
    assert token_claims(bob["access_token"])["roles"] == ["admin"]

    demoted = await edge.call(
        "PUT", f"/users/{bob_id}/roles", {"roles": ["customer"]}, token=root["access_token"]
    )
    assert demoted.status == 200
    # Bob's token still says admin; the service no longer believes it.
    old = bob["access_token"]
    assert (await edge.call("GET", "/users", token=old)).status in (401, 403)
    restore = await edge.call("PUT", f"/users/{bob_id}/roles", {"roles": ["admin"]}, token=old)
    assert restore.status in (401, 403)
    coup = await edge.call("PUT", f"/users/{root_id}/roles", {"roles": ["customer"]}, token=old)
    assert coup.status in (401, 403)
    # The role change ended Bob's sessions; a new sign-in carries the stored roles.
    assert (await edge.post("/refresh", {"refresh_token": bob["refresh_token"]})).status == 401
    event = await revoked(edge, token_claims(old)["sid"])
    assert event.user_id == bob_id and event.reason == "roles_changed"
    fresh = await sign_in(edge, "bob@example.com")
    assert token_claims(fresh["access_token"])["roles"] == ["customer"]
    root_me = await edge.call("GET", "/me", token=root["access_token"])
    assert root_me.body["roles"] == ["admin"]


async def test_admin_endpoints_check_the_stored_roles(edge: AuthClient) -> None:
    """Roles taken away behind the token's back (another replica, an operator's fix in the
    store): the token's claim is not enough."""
    await edge.signed_up("carol@example.com")
    root = await sign_in(edge, ADMIN_EMAIL, ADMIN_PASSWORD)
    carol_id = await user_id(edge, (await sign_in(edge, "carol@example.com"))["access_token"])
    await edge.call(
        "PUT", f"/users/{carol_id}/roles", {"roles": ["admin"]}, token=root["access_token"]
    )
    carol = await sign_in(edge, "carol@example.com")
    assert (await edge.call("GET", "/users", token=carol["access_token"])).status == 200

    users = edge.app[keys.MONGO_DB]["users"]
    await users.update_one({"_id": carol_id}, {"$set": {"roles": ["customer"]}})
    listing = await edge.call("GET", "/users", token=carol["access_token"])
    assert listing.status == 403
    assert (await edge.call("GET", "/me", token=carol["access_token"])).status == 200


async def test_an_admin_ends_another_users_sessions(edge: AuthClient) -> None:
    root = await sign_in(edge, ADMIN_EMAIL, ADMIN_PASSWORD)
    dave = await edge.signed_up("dave@example.com")
    dave_phone = await sign_in(edge, "dave@example.com")
    dave_id = await user_id(edge, dave["access_token"])

    refused = await edge.post(f"/users/{dave_id}/logout-all", token=dave["access_token"])
    assert refused.status == 403
    assert (await edge.post("/users/nobody/logout-all", token=root["access_token"])).status == 404
    ended = await edge.post(f"/users/{dave_id}/logout-all", token=root["access_token"])
    assert ended.status == 204
    for pair in (dave, dave_phone):
        assert (await edge.post("/refresh", {"refresh_token": pair["refresh_token"]})).status == 401
        assert (await edge.call("GET", "/me", token=pair["access_token"])).status == 401
        event = await revoked(edge, token_claims(pair["access_token"])["sid"])
        assert event.reason == "admin_logout_all"


Path = Callable[[AuthClient, dict[str, Any], str], Awaitable[None]]


async def by_logout(client: AuthClient, pair: dict[str, Any], email: str) -> None:
    assert (await client.post("/logout", {"refresh_token": pair["refresh_token"]})).status == 204


async def by_logout_all(client: AuthClient, pair: dict[str, Any], email: str) -> None:
    assert (await client.post("/logout-all", token=pair["access_token"])).status == 204


async def by_password_change(client: AuthClient, pair: dict[str, Any], email: str) -> None:
    body = {"current_password": STRONG_PASSWORD, "new_password": NEW_PASSWORD}
    assert (await client.post("/password/change", body, token=pair["access_token"])).status == 200


async def by_password_reset(client: AuthClient, pair: dict[str, Any], email: str) -> None:
    assert (await client.post("/password/forgot", {"email": email})).status == 202
    await settle(client)
    code = await client.events.code_for(email, "reset_password")
    body = {"email": email, "code": code, "new_password": NEW_PASSWORD}
    assert (await client.post("/password/reset", body)).status == 204


async def by_role_change(client: AuthClient, pair: dict[str, Any], email: str) -> None:
    root = await sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    target = await user_id(client, pair["access_token"])
    body = {"roles": ["contractor"]}
    changed = await client.call("PUT", f"/users/{target}/roles", body, token=root["access_token"])
    assert changed.status == 200


async def by_reuse(client: AuthClient, pair: dict[str, Any], email: str) -> None:
    rotated = await client.post("/refresh", {"refresh_token": pair["refresh_token"]})
    assert rotated.status == 200
    replay = await client.post("/refresh", {"refresh_token": pair["refresh_token"]})
    assert replay.status == 401


async def by_admin(client: AuthClient, pair: dict[str, Any], email: str) -> None:
    root = await sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    target = await user_id(client, pair["access_token"])
    ended = await client.post(f"/users/{target}/logout-all", token=root["access_token"])
    assert ended.status == 204


async def by_deletion(client: AuthClient, pair: dict[str, Any], email: str) -> None:
    deleted = await client.call(
        "DELETE", "/me", {"password": STRONG_PASSWORD}, token=pair["access_token"]
    )
    assert deleted.status == 204


@pytest.mark.parametrize(
    ("end_it", "reason"),
    [
        (by_logout, "logout"),
        (by_logout_all, "logout_all"),
        (by_password_change, "password_changed"),
        (by_password_reset, "password_reset"),
        (by_role_change, "roles_changed"),
        (by_reuse, "reuse_detected"),
        (by_admin, "admin_logout_all"),
        (by_deletion, "account_deleted"),
    ],
)
async def test_every_way_a_session_ends_is_published(
    edge: AuthClient, end_it: Path, reason: str
) -> None:
    """``auth.session.revoked {user_id, session_id, expires_at}`` for every family that ends,
    with ``expires_at`` no earlier than the last access token of that session expires."""
    email = "ending@example.com"
    pair = await edge.signed_up(email)
    claims = token_claims(pair["access_token"])
    await end_it(edge, pair, email)
    event = await revoked(edge, claims["sid"])
    assert event.user_id == claims["sub"]
    assert event.reason == reason
    assert event.expires_at.timestamp() >= claims["exp"]
    assert event.expires_at <= edge.clock.now() + timedelta(
        seconds=edge.settings.access_token_ttl + 5
    )
    ended = [
        e for e in edge.events.of_type("auth.session.revoked") if e.data.session_id == claims["sid"]
    ]
    assert len(ended) >= 1
