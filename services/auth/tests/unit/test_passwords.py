"""The password policy and the argon2id hasher (rehash when the cost changes)."""

from __future__ import annotations

import pytest

from auth_svc.adapters.passwords import Passwords
from auth_svc.domain.passwords import Argon2Parameters, PasswordPolicy, PasswordRejected

CHEAP = Argon2Parameters(time_cost=1, memory_kib=1024)


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("short", "password_too_short"),
        ("123456789", "password_too_short"),
        ("x" * 129, "password_too_long"),
        ("password1234", "password_too_weak"),
        ("qwertyuiop", "password_too_weak"),
        ("aaaaaaaaaaaa", "password_too_weak"),
        ("1234567890", "password_too_weak"),
        ("mary.lambert1", "password_too_weak"),  # the user's own email
        ("MaryLambert99", "password_too_weak"),  # the user's own name
    ],
)
def test_rejected(password: str, code: str) -> None:
    with pytest.raises(PasswordRejected) as caught:
        PasswordPolicy().check(password, context=("mary.lambert@example.com", "Mary Lambert"))
    assert caught.value.code == code


@pytest.mark.parametrize(
    "password",
    ["violet-harbour-47-kettle", "Tr0ub4dor&3x!q", "x7#Lp2@vQ9!m" * 10 + "abcdefgh"],
)
def test_accepted(password: str) -> None:
    PasswordPolicy().check(password, context=("mary.lambert@example.com", "Mary Lambert"))


def test_hash_verify_and_dummy() -> None:
    hasher = Passwords(CHEAP, workers=1)
    try:
        stored = hasher.hash_sync("violet-harbour-47-kettle")
        assert stored.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
        assert hasher.verify_sync(stored, "violet-harbour-47-kettle")
        assert not hasher.verify_sync(stored, "violet-harbour-47-kettlE")
        assert not hasher.verify_sync(None, "violet-harbour-47-kettle")  # the dummy path
        assert not hasher.verify_sync("not a hash", "x")
        assert not hasher.needs_rehash(stored)
    finally:
        hasher.close()


def test_rehash_needed_when_parameters_change() -> None:
    old = Passwords(CHEAP, workers=1)
    new = Passwords(Argon2Parameters(time_cost=2, memory_kib=2048), workers=1)
    try:
        stored = old.hash_sync("violet-harbour-47-kettle")
        assert new.verify_sync(stored, "violet-harbour-47-kettle")  # old hashes still verify
        assert new.needs_rehash(stored)
    finally:
        old.close()
        new.close()


async def test_async_hashing_runs_off_the_loop() -> None:
    hasher = Passwords(CHEAP, workers=2)
    try:
        stored = await hasher.hash("violet-harbour-47-kettle")
        assert await hasher.verify(stored, "violet-harbour-47-kettle")
        assert not await hasher.verify(None, "violet-harbour-47-kettle")
    finally:
        hasher.close()
