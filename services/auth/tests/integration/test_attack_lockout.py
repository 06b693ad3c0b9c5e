"""Password guessing and the lockout, through the real gateway (issue 11, items 2 and 8).

- The lock was checked before argon2 and the failure counted after it: 40 parallel wrong
  logins got 33 verdicts instead of 5, and a correct password as request 37 signed in.
- Five wrong logins locked the owner out too, and an attacker could re-lock any account
  with about twenty requests an hour.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from .conftest import STRONG_PASSWORD, AuthClient, metric, settle

pytestmark = pytest.mark.integration

WRONG = "wrong-password-123"


def same_answer(reply: object) -> tuple[object, ...]:
    body = reply.body  # type: ignore[attr-defined]
    headers = reply.headers  # type: ignore[attr-defined]
    return (reply.status, body["type"], body["detail"], headers.get("Retry-After"))  # type: ignore[attr-defined]


async def test_parallel_wrong_passwords_verify_no_more_than_the_budget(
    edge: AuthClient, auth: AuthClient
) -> None:
    email = "parallel@example.com"
    await edge.signed_up(email)
    before = metric(auth, "auth_password_verifications_total")

    replies = await asyncio.gather(*(edge.login(email, WRONG) for _ in range(40)))
    statuses = sorted(reply.status for reply in replies)
    # Five attempts were verified (four 401s, and the fifth failure locks: 429); the other
    # thirty-five were refused before any password was looked at.
    assert statuses == [401] * 4 + [429] * 36
    assert metric(auth, "auth_password_verifications_total") - before == 5

    # The right password after the lock gets no token.
    locked = await edge.login(email, STRONG_PASSWORD)
    assert locked.status == 429
    assert "access_token" not in locked.body
    assert metric(auth, "auth_password_verifications_total") - before == 5


async def test_a_correct_password_mixed_into_a_parallel_burst_gets_no_extra_tries(
    edge: AuthClient,
) -> None:
    """The issue's burst: the right password as request 37 of 40. Whatever order the burst
    lands in, it is compared only if it holds one of the five attempts; and a success only
    starts the count again, so at most five more are compared after it."""
    email = "mixed@example.com"
    await edge.signed_up(email)
    passwords = [WRONG] * 36 + [STRONG_PASSWORD] + [WRONG] * 3
    replies = await asyncio.gather(*(edge.login(email, p) for p in passwords))
    verdicts = [r.status for r in replies if r.status in (200, 401)]
    if replies[36].status == 429:
        assert len(verdicts) <= 4  # four 401s; the fifth wrong one answered 429
    else:
        assert replies[36].status == 200
        assert len(verdicts) <= 1 + 2 * 4
    assert sum(r.status == 429 for r in replies) >= 40 - 9


async def test_the_owner_signs_in_with_an_emailed_code_while_locked(edge: AuthClient) -> None:
    email = "owner@example.com"
    await edge.signed_up(email)
    ghost = "ghost.owner@example.com"
    for _ in range(5):
        await edge.login(email, WRONG)
        await edge.login(ghost, WRONG)

    locked = await edge.login(email, STRONG_PASSWORD)
    assert locked.status == 429
    assert "/api/v1/auth/login/code" in locked.body["detail"]
    # The same words for an address with no account: the lock tells nothing about existence.
    assert same_answer(await edge.login(ghost, STRONG_PASSWORD)) == same_answer(locked)

    # A code by email: 202 whoever asks, a code only for the owner's inbox.
    assert (await edge.post("/login/code", {"email": email})).status == 202
    assert (await edge.post("/login/code", {"email": ghost})).status == 202
    await settle(edge)
    sent = await edge.events.wait_for("auth.login_code.requested", lambda d: d.email == email)
    assert not [
        e for e in edge.events.of_type("auth.login_code.requested") if e.data.email == ghost
    ]

    # The attacker's guesses neither find the code nor spoil it for the owner.
    # (Well-formed wrong codes: the real one's characters shuffled.)
    shuffler = random.Random(11)
    for _ in range(30):
        letters = list(sent.data.code)
        while "".join(letters) == sent.data.code:
            shuffler.shuffle(letters)
        guess = await edge.post("/login/code/verify", {"email": email, "code": "".join(letters)})
        assert guess.status == 400, guess.body
    unknown = await edge.post("/login/code/verify", {"email": ghost, "code": sent.data.code})
    assert unknown.status == 400

    signed_in = await edge.post("/login/code/verify", {"email": email, "code": sent.data.code})
    assert signed_in.status == 200, signed_in.body
    assert set(signed_in.body) >= {"access_token", "refresh_token", "expires_in"}
    me = await edge.call("GET", "/me", token=signed_in.body["access_token"])
    assert me.status == 200 and me.body["email"] == email
    # One use only; and the password lock itself still runs its course.
    again = await edge.post("/login/code/verify", {"email": email, "code": sent.data.code})
    assert again.status == 400
    assert (await edge.login(email, STRONG_PASSWORD)).status == 429


async def test_sign_in_codes_only_for_accounts_that_can_sign_in(edge: AuthClient) -> None:
    pending = "not.yet@example.com"
    assert (await edge.register(pending)).status == 201
    assert (await edge.post("/login/code", {"email": pending})).status == 202
    await settle(edge)
    assert not edge.events.of_type("auth.login_code.requested")
    for body in ({"email": "x@example.com"}, {"email": pending, "code": "12"}):
        path = "/login/code" if "code" not in body else "/login/code/verify"
        bad = await edge.post(path, {**body, "extra": 1})
        assert bad.status == 422
