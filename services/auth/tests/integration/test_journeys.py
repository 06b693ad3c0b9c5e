"""End-to-end journeys through HTTP on the running service: sign-up, sessions, passwords."""

from __future__ import annotations

import asyncio

import pytest

from auth_svc.adapters.passwords import Passwords
from auth_svc.domain.passwords import Argon2Parameters
from auth_svc.keys import DEPS
from switchyard import keys

from .conftest import STRONG_PASSWORD, AuthClient

pytestmark = pytest.mark.integration

NEW_PASSWORD = "marble-lantern-92-quince"


async def test_signup_verify_refresh_reuse_login_logout(auth: AuthClient) -> None:
    email = "Dana.Example@Example.COM"
    registered = await auth.register(email, role="contractor")
    assert registered.status == 201, registered.body
    user = registered.body
    assert user["email"] == "dana.example@example.com"  # normalised
    assert user["status"] == "pending_verification"
    assert user["roles"] == ["contractor"]
    assert "password_hash" not in user

    event = await auth.events.wait_for("auth.user.registered")
    assert event.data.user_id == user["id"]
    assert event.envelope.source == "/switchyard/auth"

    # Not verified yet: the right password gets 403 email-not-verified.
    early = await auth.login("dana.example@example.com")
    assert early.status == 403 and early.body["type"].endswith("/email-not-verified")

    # The code travels on the real broker, as the notification service receives it.
    code = await auth.events.code_for("dana.example@example.com", "verify_email")
    assert len(code) == 6 and code.isdigit()
    verified = await auth.post("/verify-email", {"email": email, "code": code})
    assert verified.status == 200, verified.body
    pair = verified.body
    assert pair["token_type"] == "Bearer" and pair["expires_in"] == 900
    await auth.events.wait_for("auth.user.verified", lambda d: d.user_id == user["id"])

    # The code is single use.
    again = await auth.post("/verify-email", {"email": email, "code": code})
    assert again.status == 400

    me = await auth.call("GET", "/me", token=pair["access_token"])
    assert me.status == 200
    assert me.body["id"] == user["id"] and me.body["status"] == "active"

    # Rotation: a new pair, and the old refresh token is now a replay.
    rotated = await auth.post("/refresh", {"refresh_token": pair["refresh_token"]})
    assert rotated.status == 200
    assert rotated.body["refresh_token"] != pair["refresh_token"]
    assert (await auth.call("GET", "/me", token=rotated.body["access_token"])).status == 200

    replay = await auth.post("/refresh", {"refresh_token": pair["refresh_token"]})
    assert replay.status == 401
    assert replay.headers["Content-Type"] == "application/problem+json"
    reuse = await auth.events.wait_for("auth.session.reuse_detected")
    assert reuse.data.user_id == user["id"]
    # The whole family died: the newest token of the family is refused too.
    dead = await auth.post("/refresh", {"refresh_token": rotated.body["refresh_token"]})
    assert dead.status == 401

    login = await auth.login(email)
    assert login.status == 200
    fresh = login.body
    assert (await auth.post("/refresh", {"refresh_token": fresh["refresh_token"]})).status == 200

    second = await auth.login(email)
    logout = await auth.post("/logout", {"refresh_token": second.body["refresh_token"]})
    assert logout.status == 204
    gone = await auth.post("/refresh", {"refresh_token": second.body["refresh_token"]})
    assert gone.status == 401

    metrics = await auth.call("GET", "/metrics")
    text = metrics.body
    assert 'auth_logins_total{outcome="success",service="auth"}' in text
    assert 'auth_refresh_reuse_detected_total{service="auth"} 1.0' in text
    assert 'auth_codes_issued_total{purpose="verify_email",service="auth"} 1.0' in text


async def test_password_forgot_reset_revokes_sessions(auth: AuthClient) -> None:
    email = "reset.me@example.com"
    first = await auth.signed_up(email)
    other = (await auth.login(email)).body

    forgot = await auth.post("/password/forgot", {"email": email})
    assert forgot.status == 202
    code = await auth.events.code_for(email, "reset_password")

    weak = await auth.post(
        "/password/reset", {"email": email, "code": code, "new_password": "password123"}
    )
    assert weak.status == 422
    assert weak.body["errors"][0]["location"] == "/new_password"

    reset = await auth.post(
        "/password/reset", {"email": email, "code": code, "new_password": NEW_PASSWORD}
    )
    assert reset.status == 204, reset.body
    changed = await auth.events.wait_for("auth.password.changed")
    assert changed.data.reason == "reset"

    # Every session is dead: both refresh families, and the access token at auth.
    auth.clock.advance(1)
    for pair in (first, other):
        assert (await auth.post("/refresh", {"refresh_token": pair["refresh_token"]})).status == 401
    assert (await auth.call("GET", "/me", token=first["access_token"])).status == 401

    assert (await auth.login(email, STRONG_PASSWORD)).status == 401
    login = await auth.login(email, NEW_PASSWORD)
    assert login.status == 200
    assert (await auth.call("GET", "/me", token=login.body["access_token"])).status == 200


async def test_password_change_starts_a_new_session(auth: AuthClient) -> None:
    email = "change.me@example.com"
    pair = await auth.signed_up(email)
    wrong = await auth.post(
        "/password/change",
        {"current_password": "not-the-password-1", "new_password": NEW_PASSWORD},
        token=pair["access_token"],
    )
    assert wrong.status == 403
    changed = await auth.post(
        "/password/change",
        {"current_password": STRONG_PASSWORD, "new_password": NEW_PASSWORD},
        token=pair["access_token"],
    )
    assert changed.status == 200, changed.body
    auth.clock.advance(1)
    assert (await auth.post("/refresh", {"refresh_token": pair["refresh_token"]})).status == 401
    new_pair = changed.body
    assert (await auth.post("/refresh", {"refresh_token": new_pair["refresh_token"]})).status == 200
    assert (await auth.login(email, NEW_PASSWORD)).status == 200
    event = await auth.events.wait_for("auth.password.changed")
    assert event.data.reason == "change"


async def test_logout_all_and_profile(auth: AuthClient) -> None:
    email = "profile@example.com"
    pair = await auth.signed_up(email)
    other = (await auth.login(email)).body

    patched = await auth.call(
        "PATCH", "/me", {"display_name": "  New Name  "}, token=pair["access_token"]
    )
    assert patched.status == 200 and patched.body["display_name"] == "New Name"
    updated = await auth.events.wait_for("auth.user.updated")
    assert updated.data.display_name == "New Name"

    bad = await auth.call("PATCH", "/me", {"email": "x@example.com"}, token=pair["access_token"])
    assert bad.status == 422

    assert (await auth.post("/logout-all", token=pair["access_token"])).status == 204
    auth.clock.advance(1)
    for tokens in (pair, other):
        assert (
            await auth.post("/refresh", {"refresh_token": tokens["refresh_token"]})
        ).status == 401
    assert (await auth.post("/logout-all")).status == 401


async def test_account_deletion_emits_event_and_revokes_sessions(auth: AuthClient) -> None:
    email = "leaving@example.com"
    pair = await auth.signed_up(email)
    other = (await auth.login(email)).body
    user_id = (await auth.call("GET", "/me", token=pair["access_token"])).body["id"]

    deleted = await auth.call(
        "DELETE", "/me", {"password": STRONG_PASSWORD}, token=pair["access_token"]
    )
    assert deleted.status == 204
    event = await auth.events.wait_for("auth.user.deleted")
    assert event.data.user_id == user_id

    for tokens in (pair, other):
        assert (
            await auth.post("/refresh", {"refresh_token": tokens["refresh_token"]})
        ).status == 401
    assert (await auth.call("GET", "/me", token=pair["access_token"])).status == 401
    assert (await auth.login(email)).status == 401
    # The address is free again.
    assert (await auth.register(email)).status == 201


async def test_login_rehashes_when_the_cost_changes(auth: AuthClient) -> None:
    email = "rehash@example.com"
    await auth.signed_up(email)
    users = auth.app[keys.MONGO_DB]["users"]
    before = (await users.find_one({"email": email}))["password_hash"]
    assert before.startswith("$argon2id$v=19$m=1024,t=1,p=1$")

    deps = auth.app[DEPS]
    old_hasher = deps.passwords
    deps.passwords = Passwords(Argon2Parameters(time_cost=2, memory_kib=2048), workers=1)
    try:
        assert (await auth.login(email)).status == 200
        after = (await users.find_one({"email": email}))["password_hash"]
        assert after.startswith("$argon2id$v=19$m=2048,t=2,p=1$")
        assert (await auth.login(email)).status == 200
        assert (await users.find_one({"email": email}))["password_hash"] == after
    finally:
        deps.passwords.close()
        deps.passwords = old_hasher


class MeetingPasswords(Passwords):
    """Real argon2; each comparison waits for ``meet`` comparisons to have finished, so that
    that many sign-ins have all read the account (with the old hash) before any goes on."""

    def __init__(self, parameters: Argon2Parameters, meet: int) -> None:
        super().__init__(parameters, workers=2)
        self.barrier = asyncio.Barrier(meet)
        self.to_meet = meet

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        right = await super().verify(stored_hash, password)
        if self.to_meet > 0:  # later comparisons (a lost race's second one) do not wait
            self.to_meet -= 1
            await asyncio.wait_for(self.barrier.wait(), 30)
        return right


async def test_concurrent_sign_ins_due_a_rehash_all_succeed(auth: AuthClient) -> None:
    """Two sign-ins with the right password read the old hash; one upgrades it first. The
    other's guarded write loses, and that is no reason to refuse a right password."""
    email = "rehash.race@example.com"
    await auth.signed_up(email)
    users = auth.app[keys.MONGO_DB]["users"]
    deps = auth.app[DEPS]
    old_hasher = deps.passwords
    deps.passwords = MeetingPasswords(Argon2Parameters(time_cost=2, memory_kib=2048), meet=2)
    try:
        first, second = await asyncio.gather(auth.login(email), auth.login(email))
        assert (first.status, second.status) == (200, 200), (first.body, second.body)
        after = (await users.find_one({"email": email}))["password_hash"]
        assert after.startswith("$argon2id$v=19$m=2048,t=2,p=1$")
        # Both sessions are live: each refreshes.
        for pair in (first.body, second.body):
            rotated = await auth.post("/refresh", {"refresh_token": pair["refresh_token"]})
            assert rotated.status == 200, rotated.body
    finally:
        deps.passwords.close()
        deps.passwords = old_hasher


async def test_sessions_end_after_thirty_days_however_often_they_rotate(auth: AuthClient) -> None:
    pair = await auth.signed_up("long.session@example.com")
    token = pair["refresh_token"]
    for _ in range(3):
        auth.clock.advance(10 * 86400 - 10)
        rotated = await auth.post("/refresh", {"refresh_token": token})
        assert rotated.status == 200
        token = rotated.body["refresh_token"]
    auth.clock.advance(60)  # now past 30 days since sign-in
    expired = await auth.post("/refresh", {"refresh_token": token})
    assert expired.status == 401
    assert not auth.events.of_type("auth.session.reuse_detected")  # expiry is not reuse


async def test_an_expired_access_token_sent_along_does_not_block_refresh(auth: AuthClient) -> None:
    """Clients attach their bearer token to every call; the endpoints that need no token
    (refresh above all: it is called *because* the access token expired) ignore it, as the
    gateway does for its public routes. Protected endpoints still refuse it."""
    email = "stale.bearer@example.com"
    pair = await auth.signed_up(email)
    auth.clock.advance(auth.settings.access_token_ttl + 60)  # access token expired
    stale = pair["access_token"]

    assert (await auth.call("GET", "/me", token=stale)).status == 401
    refreshed = await auth.post("/refresh", {"refresh_token": pair["refresh_token"]}, token=stale)
    assert refreshed.status == 200, refreshed.body
    assert (await auth.call("GET", "/me", token=refreshed.body["access_token"])).status == 200
    login = await auth.post("/login", {"email": email, "password": STRONG_PASSWORD}, token="junk")
    assert login.status == 200, login.body
    logout = await auth.post("/logout", {"refresh_token": login.body["refresh_token"]}, token=stale)
    assert logout.status == 204
    assert (
        await auth.post("/refresh", {"refresh_token": login.body["refresh_token"]})
    ).status == 401
    jwks = await auth.call("GET", "/.well-known/jwks.json", token=stale)
    assert jwks.status == 200 and jwks.body["keys"]
