"""One-time codes (tries, expiry, cooldown) and login lockout, with an injected clock."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import STRONG_PASSWORD, AuthClient

pytestmark = pytest.mark.integration


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def test_five_wrong_tries_kill_the_code(auth: AuthClient) -> None:
    email = "five.tries@example.com"
    assert (await auth.register(email)).status == 201
    code = await auth.events.code_for(email, "verify_email")
    for _ in range(5):
        reply = await auth.post("/verify-email", {"email": email, "code": wrong(code)})
        assert reply.status == 400 and reply.body["type"].endswith("/invalid-code")
    dead = await auth.post("/verify-email", {"email": email, "code": code})
    assert dead.status == 400

    # A new code (after the cooldown) works.
    auth.clock.advance(61)
    assert (
        await auth.post("/otp/resend", {"email": email, "purpose": "verify_email"})
    ).status == 202
    fresh = await auth.events.code_for(email, "verify_email", after=1)
    assert (await auth.post("/verify-email", {"email": email, "code": fresh})).status == 200


async def test_four_wrong_tries_then_the_right_code(auth: AuthClient) -> None:
    email = "four.tries@example.com"
    assert (await auth.register(email)).status == 201
    code = await auth.events.code_for(email, "verify_email")
    for _ in range(4):
        assert (
            await auth.post("/verify-email", {"email": email, "code": wrong(code)})
        ).status == 400
    assert (await auth.post("/verify-email", {"email": email, "code": code})).status == 200


async def test_expired_code_refused(auth: AuthClient) -> None:
    email = "late@example.com"
    assert (await auth.register(email)).status == 201
    code = await auth.events.code_for(email, "verify_email")
    auth.clock.advance(601)
    reply = await auth.post("/verify-email", {"email": email, "code": code})
    assert reply.status == 400


async def test_resend_cooldown_and_replacement(auth: AuthClient) -> None:
    email = "resend@example.com"
    assert (await auth.register(email)).status == 201
    first = await auth.events.code_for(email, "verify_email")

    # Within 60 s: accepted (202) but no new code is made.
    auth.clock.advance(30)
    assert (
        await auth.post("/otp/resend", {"email": email, "purpose": "verify_email"})
    ).status == 202
    # Unknown accounts and purposes that don't apply answer the same.
    for body in (
        {"email": "nobody@example.com", "purpose": "verify_email"},
        {"email": "nobody@example.com", "purpose": "reset_password"},
    ):
        assert (await auth.post("/otp/resend", body)).status == 202

    auth.clock.advance(31)
    assert (
        await auth.post("/otp/resend", {"email": email, "purpose": "verify_email"})
    ).status == 202
    second = await auth.events.code_for(email, "verify_email", after=1)
    codes = [
        e.data.code for e in auth.events.of_type("auth.otp.requested") if e.data.email == email
    ]
    assert len(codes) == 2  # the cooldown resend made none
    metrics = (await auth.call("GET", "/metrics")).body
    assert 'auth_codes_issued_total{purpose="verify_email",service="auth"} 2.0' in metrics

    # The new code replaced the old one.
    if first != second:
        assert (await auth.post("/verify-email", {"email": email, "code": first})).status == 400
    assert (await auth.post("/verify-email", {"email": email, "code": second})).status == 200


def comparable(reply: Any) -> tuple[int, str | None, str | None, str]:
    return (
        reply.status,
        reply.body.get("type"),
        reply.headers.get("Retry-After"),
        reply.body.get("detail"),
    )


async def test_lockout_after_five_failures_same_for_unknown_email(auth: AuthClient) -> None:
    email = "locked@example.com"
    await auth.signed_up(email)
    ghost = "ghost@example.com"

    known_replies, ghost_replies = [], []
    for _ in range(5):
        known_replies.append(comparable(await auth.login(email, "wrong-password-123")))
        ghost_replies.append(comparable(await auth.login(ghost, "wrong-password-123")))
    assert [r[0] for r in known_replies] == [401, 401, 401, 401, 429]
    assert known_replies == ghost_replies
    assert known_replies[-1][2] == "900"

    # Locked: even the right password is refused, for 15 minutes.
    locked = await auth.login(email, STRONG_PASSWORD)
    assert locked.status == 429 and locked.body["type"].endswith("/too-many-attempts")
    assert comparable(await auth.login(ghost, STRONG_PASSWORD))[:2] == comparable(locked)[:2]
    auth.clock.advance(600)
    assert (await auth.login(email, STRONG_PASSWORD)).headers["Retry-After"] == "300"
    auth.clock.advance(301)
    assert (await auth.login(email, STRONG_PASSWORD)).status == 200

    metrics = (await auth.call("GET", "/metrics")).body
    assert 'auth_lockouts_total{service="auth"} 2.0' in metrics
    assert 'auth_logins_total{outcome="locked",service="auth"}' in metrics


async def test_failures_outside_the_window_do_not_lock(auth: AuthClient) -> None:
    email = "slow.typist@example.com"
    await auth.signed_up(email)
    for _ in range(4):
        assert (await auth.login(email, "wrong-password-123")).status == 401
    auth.clock.advance(901)  # the window has passed: counting starts again
    for _ in range(4):
        assert (await auth.login(email, "wrong-password-123")).status == 401
    assert (await auth.login(email, STRONG_PASSWORD)).status == 200
    # A success resets the count.
    for _ in range(4):
        assert (await auth.login(email, "wrong-password-123")).status == 401
    assert (await auth.login(email, STRONG_PASSWORD)).status == 200


async def test_password_reset_answers_alike_for_known_and_unknown_emails(auth: AuthClient) -> None:
    """A reset with a weak new password must not reveal whether the email has an account."""
    known = "reset.known@example.com"
    await auth.signed_up(known)
    ghost = "reset.ghost@example.com"
    for new_password in ["password1234", "short", STRONG_PASSWORD + "-x"]:
        body = {"code": "123456", "new_password": new_password}
        known_reply = await auth.post("/password/reset", {"email": known, **body})
        ghost_reply = await auth.post("/password/reset", {"email": ghost, **body})
        assert known_reply.status in (400, 422), known_reply.body
        assert comparable(known_reply) == comparable(ghost_reply), new_password
        assert known_reply.body.get("errors") == ghost_reply.body.get("errors"), new_password


async def test_code_must_be_ascii_digits(auth: AuthClient) -> None:
    """Other scripts' digits are not a code: 422, and no try is spent on them."""
    email = "digits@example.com"
    assert (await auth.register(email)).status == 201
    code = await auth.events.code_for(email, "verify_email")
    for _ in range(auth.settings.otp_max_attempts):
        reply = await auth.post("/verify-email", {"email": email, "code": "١٢٣٤٥٦"})
        assert reply.status == 422, reply.body
        assert {e["location"] for e in reply.body["errors"]} == {"/code"}
    assert (await auth.post("/verify-email", {"email": email, "code": code})).status == 200
