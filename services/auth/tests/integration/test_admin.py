"""The bootstrap admin, user listing with cursor pagination, and role changes."""

from __future__ import annotations

from typing import Any

import pytest

from switchyard.pagination import encode_cursor

from .conftest import AuthClient

pytestmark = pytest.mark.integration

ADMIN_EMAIL = "root@example.com"
ADMIN_PASSWORD = "quartz-meadow-81-lantern-sail"


@pytest.fixture
def auth_overrides() -> dict[str, Any]:
    return {"admin_email": ADMIN_EMAIL, "admin_password": ADMIN_PASSWORD}


async def admin_token(auth: AuthClient) -> str:
    reply = await auth.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    assert reply.status == 200, reply.body
    return str(reply.body["access_token"])


async def test_bootstrap_admin_lists_users_with_cursor(auth: AuthClient) -> None:
    token = await admin_token(auth)
    me = (await auth.call("GET", "/me", token=token)).body
    assert me["roles"] == ["admin"] and me["status"] == "active"
    await auth.events.wait_for("auth.user.registered", lambda d: d.email == ADMIN_EMAIL)

    for n in range(4):
        assert (await auth.register(f"user{n}@example.com")).status == 201

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await auth.call("GET", "/users" + query, token=token)
        assert page.status == 200, page.body
        assert set(page.body) == {"items", "next_cursor"}
        seen += [item["email"] for item in page.body["items"]]
        pages += 1
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [ADMIN_EMAIL] + [f"user{n}@example.com" for n in range(4)]

    pending = await auth.call("GET", "/users?status=pending_verification", token=token)
    assert len(pending.body["items"]) == 4
    admins = await auth.call("GET", "/users?role=admin", token=token)
    assert [u["email"] for u in admins.body["items"]] == [ADMIN_EMAIL]

    for query, location in [
        ("?limit=0", "/limit"),
        ("?limit=201", "/limit"),
        ("?limit=abc", "/limit"),
        ("?sort=email", "/sort"),
    ]:
        bad = await auth.call("GET", "/users" + query, token=token)
        assert bad.status == 422, query
        assert location in {e["location"] for e in bad.body["errors"]}, query
    # A cursor this endpoint did not issue (switchyard.pagination): 400 invalid-cursor.
    foreign = encode_cursor({"after": "../../etc"})
    for cursor in ("%%%", foreign, encode_cursor({"seq": 3}), encode_cursor({"after": 7})):
        bad = await auth.call("GET", f"/users?cursor={cursor}", token=token)
        assert bad.status == 400, cursor
        assert bad.body["type"].endswith("/invalid-cursor"), cursor


async def test_role_changes(auth: AuthClient) -> None:
    token = await admin_token(auth)
    user_pair = await auth.signed_up("promote.me@example.com")
    me = (await auth.call("GET", "/me", token=user_pair["access_token"])).body

    # Customers may not list users or change roles; anonymous callers get 401.
    assert (await auth.call("GET", "/users", token=user_pair["access_token"])).status == 403
    assert (await auth.call("GET", "/users")).status == 401
    forbidden = await auth.call(
        "PUT", f"/users/{me['id']}/roles", {"roles": ["admin"]}, token=user_pair["access_token"]
    )
    assert forbidden.status == 403

    changed = await auth.call(
        "PUT", f"/users/{me['id']}/roles", {"roles": ["contractor", "admin"]}, token=token
    )
    assert changed.status == 200, changed.body
    assert changed.body["roles"] == ["admin", "contractor"]
    event = await auth.events.wait_for("auth.user.updated", lambda d: d.user_id == me["id"])
    assert sorted(event.data.roles) == ["admin", "contractor"]

    # The role change ended the user's sessions; the next sign-in carries the new roles and
    # the new admin can list users.
    refused = await auth.post("/refresh", {"refresh_token": user_pair["refresh_token"]})
    assert refused.status == 401
    relogin = await auth.login("promote.me@example.com")
    assert (await auth.call("GET", "/users", token=relogin.body["access_token"])).status == 200

    admin_id = (await auth.call("GET", "/me", token=token)).body["id"]
    own = await auth.call("PUT", f"/users/{admin_id}/roles", {"roles": ["customer"]}, token=token)
    assert own.status == 409
    missing = await auth.call("PUT", "/users/nope/roles", {"roles": ["customer"]}, token=token)
    assert missing.status == 404
    invalid = await auth.call("PUT", f"/users/{me['id']}/roles", {"roles": ["root"]}, token=token)
    assert invalid.status == 422
    empty = await auth.call("PUT", f"/users/{me['id']}/roles", {"roles": []}, token=token)
    assert empty.status == 422


async def test_a_role_change_racing_a_profile_update_publishes_the_committed_state(
    auth: AuthClient,
) -> None:
    """Both commands read the user, then write. Each event must carry what its write left
    in the document: the later of the two ``auth.user.updated`` events is the account as
    it is now (new name *and* new roles), or notification's read model keeps a stale name."""
    import asyncio

    from auth_svc import handlers
    from auth_svc.keys import DEPS
    from switchyard.authn import VERIFIER

    admin = await admin_token(auth)
    pair = await auth.signed_up("racer@example.com")
    verifier = auth.app[VERIFIER]
    admin_identity = verifier.verify(admin)
    user_identity = verifier.verify(pair["access_token"])
    user_id = user_identity.user_id
    deps = auth.app[DEPS]
    await asyncio.gather(
        handlers.set_roles(
            identity=admin_identity, user_id=user_id, roles=["contractor"], deps=deps
        ),
        handlers.update_profile(identity=user_identity, display_name="Renamed", deps=deps),
    )
    committed = await deps.users.by_id(user_id)
    assert committed is not None
    assert (committed.display_name, committed.roles) == ("Renamed", ("contractor",))

    def for_racer(data: Any) -> bool:
        return bool(data.user_id == user_id)

    await auth.events.wait_for("auth.user.updated", for_racer)
    for _ in range(200):  # 20 s: the second event can take seconds on a loaded machine
        updates = [e for e in auth.events.of_type("auth.user.updated") if for_racer(e.data)]
        if len(updates) == 2:
            break
        await asyncio.sleep(0.1)
    states = [(e.data.display_name, tuple(e.data.roles)) for e in updates]
    assert len(states) == 2
    # Whichever write came second, its event is the committed state; the first one's event
    # is the state between the two (never a mix that no write produced).
    assert ("Renamed", ("contractor",)) in states, states
    assert set(states) <= {
        ("Renamed", ("contractor",)),
        ("Dana Example", ("contractor",)),
        ("Renamed", ("customer",)),
    }
