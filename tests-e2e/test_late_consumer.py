"""A fresh deploy where auth starts long before notification: the sign-up code still arrives.

Real processes on the real broker: the store and auth run; nobody has declared
notification's queues yet, so the broker returns auth's events as unroutable. Auth's
outbox relay keeps re-trying them (OUTBOX_UNROUTABLE_WINDOW, default one hour; pauses
up to OUTBOX_UNROUTABLE_RETRY_MAX, shortened here) until notification starts, declares
its queues and sends the email.
"""

from __future__ import annotations

import asyncio
import re
import uuid

import aiohttp
import pytest

pytestmark = pytest.mark.timeout(240)

LATE_START = 30.0  # seconds between the sign-up and notification's start
CODE = re.compile(r"(?<!\d)(\d{6})(?!\d)")


async def test_the_sign_up_code_arrives_when_notification_starts_after_the_sign_up(
    staged_suite,
) -> None:
    staged_suite.env["OUTBOX_UNROUTABLE_RETRY_MAX"] = "2"
    await staged_suite.start("auth")
    email = f"late-{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "password": "quiet-lantern-harbour-417", "display_name": "Late"}
    async with aiohttp.ClientSession(staged_suite.url("auth")) as http:
        async with http.post("/api/v1/auth/register", json=body) as reply:
            assert reply.status == 201, await reply.text()
    await asyncio.sleep(LATE_START)
    assert staged_suite.suite.inbox.messages == []  # nobody could have sent it yet

    await staged_suite.start("notification")
    mail = await staged_suite.suite.mail(email, "verification code", timeout=60)
    assert len(set(CODE.findall(mail.text))) == 1
    async with aiohttp.ClientSession(staged_suite.url("auth")) as http:
        code = CODE.findall(mail.text)[0]
        async with http.post(
            "/api/v1/auth/verify-email", json={"email": email, "code": code}
        ) as reply:
            assert reply.status == 200, await reply.text()
