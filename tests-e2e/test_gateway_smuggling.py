"""Issue 8's attack against the real gateway and the real auth service: anonymous
clients send the ``Upgrade`` + ``Content-Length`` desync packet and poll the JWKS while
a user logs in with an ordinary aiohttp client. The attackers never see the user's
tokens, and every one of the user's logins succeeds."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import uuid
from pathlib import Path

import aiohttp
import pytest

# The journeys' sign-up and log-in steps (tests-e2e is not a package).
_spec = importlib.util.spec_from_file_location(
    "e2e_journeys", Path(__file__).with_name("test_journeys.py")
)
assert _spec is not None and _spec.loader is not None
journeys = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(journeys)

pytestmark = pytest.mark.timeout(300)

TRACE = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
SMUGGLED = (
    b"GET /api/v1/auth/me HTTP/1.1\r\nHost: x\r\nX-User-Id: evil\r\nX-User-Roles: admin\r\n"
    b"X-Request-ID: smuggled\r\nContent-Length: 0\r\n\r\n"
)
SECOND_HEAD = (
    "GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nX-Request-ID: second\r\n"
    f"traceparent: {TRACE}\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
    f"X-Forwarded-Host: x\r\nContent-Length: {len(SMUGGLED)}\r\n\r\n"
).encode()
ATTACK = (
    b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
    b"Content-Length: %d\r\n\r\n"
    % len(SECOND_HEAD)
    + f"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nX-Request-ID: second\r\n"
    f"traceparent: {TRACE}\r\nContent-Length: {len(SMUGGLED)}\r\n\r\n".encode()
    + SMUGGLED
)
POLL = b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n"


async def attacker(
    port: int, stop: asyncio.Event, received: list[bytes], attack_answers: list[bytes]
) -> int:
    """Send the desync packet and JWKS polls on fresh connections until told to stop."""
    rounds = 0
    while not stop.is_set():
        rounds += 1
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(ATTACK if rounds % 2 else POLL * 3)
        answer = b""
        with contextlib.suppress(TimeoutError, ConnectionError):
            while True:
                chunk = await asyncio.wait_for(reader.read(65536), 0.2)
                if not chunk:
                    break
                answer += chunk
        received.append(answer)
        if rounds % 2:
            attack_answers.append(answer)
        writer.transport.abort()
    return rounds


async def test_attackers_polling_the_jwks_never_get_a_victims_tokens(staged_suite) -> None:
    await staged_suite.start("auth", "notification", "gateway")
    gateway = staged_suite.url("gateway")
    port = int(gateway.rsplit(":", 1)[1])
    email = f"victim-{uuid.uuid4().hex[:10]}@example.com"
    async with aiohttp.ClientSession(gateway) as client:
        await journeys.signed_up(client, staged_suite.suite, email, "Victim")
        stop = asyncio.Event()
        received: list[bytes] = []
        attack_answers: list[bytes] = []
        attackers = [
            asyncio.create_task(attacker(port, stop, received, attack_answers)) for _ in range(3)
        ]
        tokens = []
        try:
            for _ in range(5):  # the credential limit is 10 per minute per address
                pair = await journeys.log_in(client, email, journeys.PASSWORD, expect=200)
                tokens += [pair["access_token"], pair["refresh_token"]]
                await asyncio.sleep(0.3)
        finally:
            stop.set()
            rounds = await asyncio.gather(*attackers)
    assert sum(rounds) > 10
    # the desync packet is refused at its first request, and nothing after it is read
    for answer in attack_answers:
        assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1 ") == 1, answer
    stolen = b"".join(received)
    assert b'"keys"' in stolen
    for token in tokens:
        assert token.encode() not in stolen
    assert b"access_token" not in stolen and b"refresh_token" not in stolen
    assert b"evil" not in stolen
