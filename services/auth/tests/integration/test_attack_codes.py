"""Attacks on the emailed codes, through the real gateway (issue 11, items 1 and 5).

- A code killed by wrong tries used to be deleted, so its cooldown died with it: a new code
  with fresh tries at once, 19 wrong guesses and the 20th right, and a mail bomb.
- A reset code requested before a password change still worked after it.
"""

from __future__ import annotations

import pytest

from .conftest import STRONG_PASSWORD, AuthClient, metric, settle

pytestmark = pytest.mark.integration

NEW_PASSWORD = "amber-thistle-62-copper-gate"


def wrong(code: str, n: int = 1) -> str:
    return f"{(int(code) + n) % 1_000_000:06d}"


def codes_sent(client: AuthClient, email: str, purpose: str) -> list[str]:
    return [
        e.data.code
        for e in client.events.of_type("auth.otp.requested")
        if e.data.email == email and e.data.purpose == purpose
    ]


async def forgot(client: AuthClient, email: str) -> None:
    assert (await client.post("/password/forgot", {"email": email})).status == 202
    await settle(client)


async def reset(client: AuthClient, email: str, code: str, password: str = NEW_PASSWORD) -> int:
    body = {"email": email, "code": code, "new_password": password}
    return (await client.post("/password/reset", body)).status


async def test_a_code_killed_by_wrong_tries_keeps_its_cooldown(
    edge: AuthClient, auth: AuthClient
) -> None:
    """Five wrong tries, then at once a new code with five fresh tries: no more."""
    email = "bombed@example.com"
    assert (await edge.register(email)).status == 201
    first = await edge.events.code_for(email, "verify_email")
    for n in range(1, 6):
        reply = await edge.post("/verify-email", {"email": email, "code": wrong(first, n)})
        assert reply.status == 400
    # The attacker (or a mail bomb) asks again at once, five times.
    for _ in range(5):
        body = {"email": email, "purpose": "verify_email"}
        assert (await edge.post("/otp/resend", body)).status == 202
    await settle(edge)
    assert metric(auth, "auth_codes_issued_total", purpose="verify_email") == 1
    assert len(codes_sent(edge, email, "verify_email")) == 1

    # After the cooldown the owner gets a new code, and it works.
    edge.clock.advance(61)
    assert (
        await edge.post("/otp/resend", {"email": email, "purpose": "verify_email"})
    ).status == 202
    fresh = await edge.events.code_for(email, "verify_email", after=1)
    assert (await edge.post("/verify-email", {"email": email, "code": fresh})).status == 200


async def test_wrong_guesses_are_budgeted_across_codes_and_the_owner_is_told(
    edge: AuthClient, auth: AuthClient
) -> None:
    """Ten wrong guesses an hour per account and purpose, whatever the number of codes;
    then no code is accepted, not even the right one, until the window ends."""
    email = "target@example.com"
    await edge.signed_up(email)

    guesses = 0
    right = ""
    for round_, tries in enumerate((4, 4, 2)):
        if round_:
            edge.clock.advance(61)
        await forgot(edge, email)
        right = await edge.events.code_for(email, "reset_password", after=round_)
        for n in range(1, tries + 1):
            assert await reset(edge, email, wrong(right, n)) == 400
            guesses += 1
    assert guesses == 10
    # The budget is spent: the right code of the live code is refused too.
    assert await reset(edge, email, right) == 400
    blocked = await edge.events.wait_for("auth.otp.blocked", lambda d: d.email == email)
    assert blocked.data.purpose == "reset_password"
    assert blocked.data.failed_attempts == 10
    assert blocked.data.blocked_until > edge.clock.now()
    assert len(edge.events.of_type("auth.otp.blocked")) == 1
    assert (await edge.login(email)).status == 200  # the password itself still works

    # While blocked, no new reset code is mailed either.
    edge.clock.advance(61)
    await forgot(edge, email)
    assert metric(auth, "auth_codes_issued_total", purpose="reset_password") == 3

    # A new window: codes work again.
    edge.clock.advance(3600)
    await forgot(edge, email)
    fresh = await edge.events.code_for(email, "reset_password", after=3)
    assert await reset(edge, email, fresh) == 204
    assert (await edge.login(email, NEW_PASSWORD)).status == 200


async def test_codes_issued_per_hour_are_capped(edge: AuthClient, auth: AuthClient) -> None:
    """A resend every minute for an hour would mail 60 codes: five an hour is the cap."""
    email = "inbox@example.com"
    await edge.signed_up(email)
    for _ in range(10):
        await forgot(edge, email)
        edge.clock.advance(61)
    assert auth.settings.otp_codes_per_hour == 5
    assert metric(auth, "auth_codes_issued_total", purpose="reset_password") == 5
    # The last code mailed still works for the owner.
    last = await edge.events.code_for(email, "reset_password", after=4)
    assert await reset(edge, email, last) == 204


async def test_a_reset_code_dies_when_the_password_changes(edge: AuthClient) -> None:
    email = "changer@example.com"
    pair = await edge.signed_up(email)
    await forgot(edge, email)
    code = await edge.events.code_for(email, "reset_password")
    changed = await edge.post(
        "/password/change",
        {"current_password": STRONG_PASSWORD, "new_password": NEW_PASSWORD},
        token=pair["access_token"],
    )
    assert changed.status == 200, changed.body
    assert await reset(edge, email, code, "other-granite-55-willow-bay") == 400
    assert (await edge.login(email, NEW_PASSWORD)).status == 200


async def test_every_code_dies_when_the_email_is_verified(edge: AuthClient) -> None:
    email = "verifier@example.com"
    assert (await edge.register(email)).status == 201
    verify_code = await edge.events.code_for(email, "verify_email")
    await forgot(edge, email)  # a pending account may ask for a reset code
    reset_code = await edge.events.code_for(email, "reset_password")
    assert (await edge.post("/verify-email", {"email": email, "code": verify_code})).status == 200
    assert await reset(edge, email, reset_code) == 400
    assert (await edge.login(email)).status == 200


async def test_every_code_dies_when_the_password_is_reset(edge: AuthClient) -> None:
    email = "resetter@example.com"
    await edge.signed_up(email)
    await forgot(edge, email)
    reset_code = await edge.events.code_for(email, "reset_password")
    assert (await edge.post("/login/code", {"email": email})).status == 202
    await settle(edge)
    sign_in = await edge.events.wait_for("auth.login_code.requested", lambda d: d.email == email)
    assert await reset(edge, email, reset_code) == 204
    late = await edge.post("/login/code/verify", {"email": email, "code": sign_in.data.code})
    assert late.status == 400
