"""Auth tells the gateway how a credential check went (issue 12: failed attempts weigh more than
successful ones in the gateway's limits): ``X-Auth-Outcome: success|failure; account=<key>``,
the key a keyed hash of the account (never the address), the same for look-alike spellings."""

from __future__ import annotations

import re

import pytest

from auth_svc.entrypoints.http import OUTCOME_HEADER

from .conftest import STRONG_PASSWORD, AuthClient

pytestmark = [pytest.mark.integration]

OUTCOME = re.compile(r"(?P<verdict>success|failure); account=(?P<account>[A-Za-z0-9_-]{22})")


def outcome(headers: object) -> tuple[str, str]:
    match = OUTCOME.fullmatch(headers[OUTCOME_HEADER])  # type: ignore[index]
    assert match is not None, headers
    return match["verdict"], match["account"]


async def test_credential_checks_say_whether_the_secret_was_right(auth: AuthClient) -> None:
    pair = await auth.signed_up("outcome@example.com")

    right = await auth.login("outcome@example.com")
    assert right.status == 200
    verdict, account = outcome(right.headers)
    assert verdict == "success" and "outcome" not in account
    wrong = await auth.login("OUTCOME@example.com", "not-the-password-at-all")
    assert (wrong.status, outcome(wrong.headers)) == (401, ("failure", account))
    unknown = await auth.login("nobody@example.com", STRONG_PASSWORD)
    assert unknown.status == 401
    assert outcome(unknown.headers)[0] == "failure" and outcome(unknown.headers)[1] != account

    code = await auth.post("/verify-email", {"email": "outcome@example.com", "code": "000000"})
    assert (code.status, outcome(code.headers)) == (400, ("failure", account))
    # A refresh token names no account: the verdict alone.
    refreshed = await auth.post("/refresh", {"refresh_token": pair["refresh_token"]})
    assert (refreshed.status, refreshed.headers[OUTCOME_HEADER]) == (200, "success")
    token = await auth.post(
        "/token",
        data=b"grant_type=refresh_token&refresh_token=made-up",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (token.status, token.headers[OUTCOME_HEADER]) == (400, "failure")

    # Refused before any check: no outcome to tell.
    malformed = await auth.post("/login", {"email": "outcome@example.com"})
    assert malformed.status == 422 and OUTCOME_HEADER not in malformed.headers
    # Not a credential check: nothing either.
    forgot = await auth.post("/password/forgot", {"email": "outcome@example.com"})
    assert forgot.status == 202 and OUTCOME_HEADER not in forgot.headers

    # Locked after repeated failures: the 429 is a failure too.
    for _ in range(auth.settings.lockout_threshold):
        await auth.login("outcome@example.com", "not-the-password-at-all")
    locked = await auth.login("outcome@example.com")
    assert (locked.status, outcome(locked.headers)) == (429, ("failure", account))
