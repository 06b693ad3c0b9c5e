"""Journeys through the gateway as a client app makes them: only HTTP and the emails that arrive."""

from __future__ import annotations

import re
import uuid
from typing import Any

import aiohttp
import pytest

from switchyard.testing.smtp import ReceivedMail

# The first test also waits for the suite to start. Mind the gateway's limit on credential
# endpoints (10 per minute per client address): these journeys make 9 such calls.
pytestmark = pytest.mark.timeout(300)

PASSWORD = "quiet-lantern-harbour-417"
NEW_PASSWORD = "amber-kettle-violet-982"
CODE = re.compile(r"(?<!\d)(\d{6})(?!\d)")


def new_email() -> str:
    return f"e2e-{uuid.uuid4().hex[:12]}@example.com"


def code_in(mail: ReceivedMail) -> str:
    """The one-time code of an email: the only six-digit number in its text."""
    codes = set(CODE.findall(mail.text))
    assert len(codes) == 1, f"expected exactly one code in the email, found {len(codes)}"
    return codes.pop()


async def call(
    client: aiohttp.ClientSession, method: str, path: str, *, expect: int, **kwargs: Any
) -> Any:
    async with client.request(method, path, **kwargs) as response:
        body = await response.read()
        assert response.status == expect, f"{method} {path}: {response.status} {body[:500]!r}"
        assert response.headers.get("X-Request-ID")
        if body and response.content_type.endswith("json"):
            return await response.json(content_type=None)
        return None


async def log_in(client: aiohttp.ClientSession, email: str, password: str, *, expect: int) -> Any:
    body = {"email": email, "password": password}
    return await call(client, "POST", "/api/v1/auth/login", expect=expect, json=body)


async def refresh(client: aiohttp.ClientSession, refresh_token: str, *, expect: int) -> Any:
    body = {"refresh_token": refresh_token}
    return await call(client, "POST", "/api/v1/auth/refresh", expect=expect, json=body)


async def get_me(client: aiohttp.ClientSession, access_token: str, *, expect: int = 200) -> Any:
    headers = {"Authorization": f"Bearer {access_token}"}
    return await call(client, "GET", "/api/v1/auth/me", expect=expect, headers=headers)


async def signed_up(
    client: aiohttp.ClientSession, suite: Any, email: str, name: str
) -> dict[str, Any]:
    """Register, read the code from the inbox, verify: the token pair verification returns."""
    user = await call(
        client,
        "POST",
        "/api/v1/auth/register",
        expect=201,
        json={"email": email, "password": PASSWORD, "display_name": name},
    )
    assert user["email"] == email and user["status"] == "pending_verification"
    mail = await suite.mail(email, "verification code")
    code = code_in(mail)
    assert f">{code}</span>" in mail.html  # shown prominently in the HTML part too
    return await call(
        client, "POST", "/api/v1/auth/verify-email", expect=200, json={"email": email, "code": code}
    )


async def test_sign_up_verify_log_in_me_refresh_log_out(suite, client) -> None:
    email = new_email()
    verified = await signed_up(client, suite, email, "Ada <Lovelace>")
    assert verified["access_token"] and verified["refresh_token"]
    welcome = await suite.mail(email, "Welcome")
    assert "Ada &lt;Lovelace&gt;" in welcome.html  # the display name is escaped in HTML

    tokens = await log_in(client, email, PASSWORD, expect=200)
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] > 0

    profile = await get_me(client, tokens["access_token"])
    assert profile["email"] == email and profile["display_name"] == "Ada <Lovelace>"
    assert profile["status"] == "active"

    rotated = await refresh(client, tokens["refresh_token"], expect=200)
    assert rotated["refresh_token"] != tokens["refresh_token"]
    await get_me(client, rotated["access_token"])

    await call(  # no access token needed: the refresh token proves possession
        client,
        "POST",
        "/api/v1/auth/logout",
        expect=204,
        json={"refresh_token": rotated["refresh_token"]},
    )
    await refresh(client, rotated["refresh_token"], expect=401)  # logged out
    await call(client, "GET", "/api/v1/auth/me", expect=401)  # no token, no identity


async def test_password_reset_by_emailed_code(suite, client) -> None:
    email = new_email()
    await signed_up(client, suite, email, "Grace")

    await call(client, "POST", "/api/v1/auth/password/forgot", expect=202, json={"email": email})
    mail = await suite.mail(email, "password reset code")
    code = code_in(mail)
    await call(
        client,
        "POST",
        "/api/v1/auth/password/reset",
        expect=204,
        json={"email": email, "code": code, "new_password": NEW_PASSWORD},
    )
    notice = await suite.mail(email, "password was reset")
    assert "If this was not you" in notice.text

    await log_in(client, email, PASSWORD, expect=401)
    tokens = await log_in(client, email, NEW_PASSWORD, expect=200)
    profile = await get_me(client, tokens["access_token"])
    assert profile["email"] == email
