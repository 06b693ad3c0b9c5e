"""The bootstrap admin when its email already has an account (a restart with ADMIN_EMAIL set)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from .conftest import AuthClient, replica_with_admin

pytestmark = pytest.mark.integration

ADMIN_EMAIL = "owner@example.com"
ADMIN_PASSWORD = "quartz-meadow-81-lantern-sail"
SQUATTER_PASSWORD = "amber-tunnel-52-osprey-mill"


async def restart_with_admin(
    auth: AuthClient, settings_overrides: dict[str, Any], start_app: Any
) -> aiohttp.ClientSession:
    return await replica_with_admin(
        auth, settings_overrides, start_app, ADMIN_EMAIL, ADMIN_PASSWORD
    )


async def test_unverified_account_on_the_admin_email_does_not_keep_its_password(
    auth: AuthClient, settings_overrides: dict[str, Any], start_app: Any
) -> None:
    # Someone registers the operator's address first; they cannot read its mail, so it
    # stays pending. Bootstrapping must not hand them an admin account.
    assert (await auth.register(ADMIN_EMAIL, SQUATTER_PASSWORD)).status == 201

    async with await restart_with_admin(auth, settings_overrides, start_app) as http:
        async with http.post(
            "/api/v1/auth/login", json={"email": ADMIN_EMAIL, "password": SQUATTER_PASSWORD}
        ) as squatter:
            assert squatter.status == 401, await squatter.text()
        async with http.post(
            "/api/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        ) as owner:
            assert owner.status == 200, await owner.text()
            token = (await owner.json())["access_token"]
        async with http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}) as me:
            body = await me.json()
    # Nor their roles (or name): the account is the operator's now.
    assert body["roles"] == ["admin"] and body["status"] == "active"
    verified = await auth.events.wait_for("auth.user.verified", lambda d: d.email == ADMIN_EMAIL)
    assert verified.data.user_id == body["id"]


async def test_verified_account_on_the_admin_email_is_promoted_as_it_is(
    auth: AuthClient, settings_overrides: dict[str, Any], start_app: Any
) -> None:
    # The address's owner proved it: they keep their password and gain the role.
    await auth.signed_up(ADMIN_EMAIL, SQUATTER_PASSWORD)
    async with await restart_with_admin(auth, settings_overrides, start_app) as http:
        async with http.post(
            "/api/v1/auth/login", json={"email": ADMIN_EMAIL, "password": SQUATTER_PASSWORD}
        ) as login:
            assert login.status == 200, await login.text()
            token = (await login.json())["access_token"]
    reply = await auth.call("GET", "/me", token=token)
    assert reply.status == 200 and reply.body["roles"] == ["admin", "customer"]
