"""Journeys through the gateway (``tests-e2e``), as client apps make them:

    wallet = await call(client, "GET", "/api/v1/payments/wallet", expect=200, headers=...)
    user_id, token = await signed_up(client, suite, "Ada")  # registered, emailed code, verified

``call`` waits out the gateway's credential limit (429 with ``Retry-After``: the journeys
share one address's budget); any other status must be ``expect``.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any, Protocol

import aiohttp

from switchyard.testing.smtp import ReceivedMail

PASSWORD = "copper-meadow-lantern-628"
CODE = re.compile(r"(?<!\d)(\d{6})(?!\d)")


class Mailbox(Protocol):
    async def mail(self, to: str, subject: str, *, timeout: float = ...) -> ReceivedMail: ...


async def call(
    client: aiohttp.ClientSession,
    method: str,
    path: str,
    *,
    expect: int,
    rate_limit_wait: float = 120.0,
    **kwargs: Any,
) -> Any:
    """One request's JSON body (``None`` when empty); a 429 is waited out for up to
    ``rate_limit_wait`` seconds, anything else must be ``expect``."""
    deadline = time.monotonic() + rate_limit_wait
    while True:
        async with client.request(method, path, **kwargs) as response:
            body = await response.json(content_type=None) if response.content_length else None
            if response.status == 429 and time.monotonic() < deadline:
                await asyncio.sleep(float(response.headers.get("Retry-After", "5")))
                continue
            assert response.status == expect, f"{method} {path}: {response.status} {body}"
            return body


async def signed_up(
    client: aiohttp.ClientSession,
    suite: Mailbox,
    display_name: str,
    *,
    role: str | None = None,
    email_prefix: str = "e2e",
) -> tuple[str, str]:
    """(user id, access token) of a new user, verified with the code auth emailed."""
    email = f"{email_prefix}-{uuid.uuid4().hex[:12]}@example.com"
    body: dict[str, Any] = {"email": email, "password": PASSWORD, "display_name": display_name}
    if role is not None:
        body["role"] = role
    user = await call(client, "POST", "/api/v1/auth/register", expect=201, json=body)
    mail = await suite.mail(email, "verification code")
    [code] = set(CODE.findall(mail.text))
    tokens = await call(
        client, "POST", "/api/v1/auth/verify-email", expect=200, json={"email": email, "code": code}
    )
    return str(user["id"]), str(tokens["access_token"])


__all__ = ["CODE", "PASSWORD", "Mailbox", "call", "signed_up"]
