"""Bad input → problem+json with errors[]; concurrency and Idempotency-Key on registration."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .conftest import STRONG_PASSWORD, AuthClient

pytestmark = pytest.mark.integration


def locations(reply: Any) -> set[str]:
    return {error["location"] for error in reply.body["errors"]}


def codes(reply: Any) -> set[str]:
    return {error["code"] for error in reply.body["errors"]}


async def test_invalid_registrations(auth: AuthClient) -> None:
    cases: list[tuple[dict[str, Any], str, str | None]] = [
        (
            {"email": "not-an-email", "password": STRONG_PASSWORD, "display_name": "A"},
            "/email",
            None,
        ),
        (
            {"email": "a@example.com", "password": "short", "display_name": "A"},
            "/password",
            "password_too_short",
        ),
        (
            {"email": "a@example.com", "password": "password1234", "display_name": "A"},
            "/password",
            "password_too_weak",
        ),
        (
            {"email": "a@example.com", "password": "x" * 129, "display_name": "A"},
            "/password",
            "password_too_long",
        ),
        # Guessable from the user's own email and name.
        (
            {
                "email": "kettle.sprocket@example.com",
                "password": "kettlesprocket1",
                "display_name": "Kettle Sprocket",
            },
            "/password",
            "password_too_weak",
        ),
        ({"email": "a@example.com", "display_name": "A"}, "/password", "missing"),
        (
            {
                "email": "a@example.com",
                "password": STRONG_PASSWORD,
                "display_name": "A",
                "is_admin": True,
            },
            "/is_admin",
            "extra_forbidden",
        ),
        (
            {
                "email": "a@example.com",
                "password": STRONG_PASSWORD,
                "display_name": "A",
                "role": "admin",
            },
            "/role",
            None,
        ),
        (
            {"email": "a@example.com", "password": STRONG_PASSWORD, "display_name": "   "},
            "/display_name",
            None,
        ),
    ]
    for body, location, code in cases:
        reply = await auth.post("/register", body)
        assert reply.status == 422, (body, reply.body)
        assert reply.headers["Content-Type"] == "application/problem+json"
        assert reply.body["status"] == 422 and reply.body["request_id"]
        assert location in locations(reply), (body, reply.body)
        if code:
            assert code in codes(reply), (body, reply.body)

    empty = await auth.post("/register", {})
    assert empty.status == 422
    assert {"/email", "/password", "/display_name"} <= locations(empty)

    not_json = await auth.post("/register", data=b"email=a", headers={"Content-Type": "text/plain"})
    assert not_json.status == 415
    broken = await auth.post(
        "/register", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert broken.status == 400

    huge = await auth.post(
        "/register",
        data=b'{"email": "' + b"a" * (10 * 1024 * 1024) + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert huge.status == 413
    assert huge.headers["Content-Type"] == "application/problem+json"
    assert not auth.events.of_type("auth.user.registered")


async def test_other_endpoints_validate_too(auth: AuthClient) -> None:
    for path, body, location in [
        ("/login", {"email": "a@example.com"}, "/password"),
        ("/verify-email", {"email": "a@example.com", "code": "12ab56"}, "/code"),
        ("/otp/resend", {"email": "a@example.com", "purpose": "other"}, "/purpose"),
        ("/refresh", {"refresh_token": ""}, "/refresh_token"),
        ("/password/reset", {"email": "a@example.com", "code": "123456"}, "/new_password"),
    ]:
        reply = await auth.post(path, body)
        assert reply.status == 422, (path, reply.body)
        assert location in locations(reply), (path, reply.body)


async def test_concurrent_registrations_of_one_email(auth: AuthClient) -> None:
    """A pending account is replaced by a new registration: whatever the order, both are
    answered 201 and one account is left (the other registered and deleted)."""
    replies = await asyncio.gather(
        auth.register("race@example.com"), auth.register("RACE@example.com")
    )
    assert [r.status for r in replies] == [201, 201]
    ids = {r.body["id"] for r in replies}
    deleted = await auth.events.wait_for("auth.user.deleted", lambda d: d.user_id in ids)
    for registered in ids:
        await auth.events.wait_for("auth.user.registered", lambda d, r=registered: d.user_id == r)
    survivor = (ids - {deleted.data.user_id}).pop()
    sent = await auth.events.wait_for("auth.otp.requested", lambda d: d.user_id == survivor)
    code = sent.data.code
    verified = await auth.post("/verify-email", {"email": "race@example.com", "code": code})
    assert verified.status == 200
    me = await auth.call("GET", "/me", token=verified.body["access_token"])
    assert me.body["id"] == survivor


async def test_idempotency_key_on_register(auth: AuthClient) -> None:
    body = {"email": "once@example.com", "password": STRONG_PASSWORD, "display_name": "Once"}
    key = {"Idempotency-Key": "signup-7f3a"}
    first = await auth.post("/register", body, headers=key)
    assert first.status == 201
    replay = await auth.post("/register", body, headers=key)
    assert replay.status == 201
    assert replay.body == first.body
    assert replay.headers["Idempotent-Replayed"] == "true"

    changed = await auth.post("/register", {**body, "display_name": "Twice"}, headers=key)
    assert changed.status == 422
    assert changed.body["type"].endswith("/idempotency-key-reused")

    # Without the key, a second registration is no replay: it replaces the pending account.
    again = await auth.post("/register", body)
    assert again.status == 201 and again.body["id"] != first.body["id"]
    await auth.events.wait_for("auth.user.registered", lambda d: d.user_id == again.body["id"])
    await auth.events.wait_for("auth.user.deleted", lambda d: d.user_id == first.body["id"])

    # A stored failure is replayed as well.
    weak = {**body, "email": "weak@example.com", "password": "password1234"}
    key2 = {"Idempotency-Key": "signup-weak"}
    assert (await auth.post("/register", weak, headers=key2)).status == 422
    assert (await auth.post("/register", weak, headers=key2)).status == 422
    bad_key = await auth.post("/register", body, headers={"Idempotency-Key": "x" * 300})
    assert bad_key.status == 400


class CodeWriteFailsOnce:
    """The code store fails once, after the account row was written (a store hiccup)."""

    def __init__(self, codes: Any) -> None:
        self.codes = codes
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.codes, name)

    async def issue(self, *args: Any, **kwargs: Any) -> bool:
        if not self.failed:
            self.failed = True
            from pymongo.errors import AutoReconnect

            raise AutoReconnect("connection reset while writing the code")
        return bool(await self.codes.issue(*args, **kwargs))


async def test_register_rolls_forward_when_the_code_write_failed(auth: AuthClient) -> None:
    """The account was created, then the code write failed (500). The retry with the same
    Idempotency-Key gets the original success — the same account, and its code — instead
    of a 409 'email taken' replayed for 24 hours."""
    from auth_svc.keys import DEPS

    deps = auth.app[DEPS]
    flaky = CodeWriteFailsOnce(deps.codes)
    deps.codes = flaky  # type: ignore[assignment]
    body = {"email": "halfway@example.com", "password": STRONG_PASSWORD, "display_name": "Half"}
    key = {"Idempotency-Key": "signup-halfway"}
    try:
        failed = await auth.post("/register", body, headers=key)
        assert failed.status == 500 and flaky.failed
        retried = await auth.post("/register", body, headers=key)
        assert retried.status == 201, retried.body
        assert retried.body["email"] == "halfway@example.com"
        assert "Idempotent-Replayed" not in retried.headers  # rolled forward, then stored
        code = await auth.events.code_for("halfway@example.com", "verify_email")
        registered = [
            e for e in auth.events.of_type("auth.user.registered") if e.data.email == body["email"]
        ]
        assert [e.data.user_id for e in registered] == [retried.body["id"]]  # one account
        replay = await auth.post("/register", body, headers=key)
        assert (replay.status, replay.body) == (201, retried.body)
        verified = await auth.post("/verify-email", {"email": body["email"], "code": code})
        assert verified.status == 200
    finally:
        deps.codes = flaky.codes
