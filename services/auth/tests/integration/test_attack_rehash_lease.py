"""Attacks from outside (through the real gateway) on two recent changes:

1. a sign-in that loses the race to upgrade a password hash reads the account again and
   signs in when only the hash changed. A revocation (logout-all), a reset (to another
   password or to the same one) or a wrong password must never get a token through that
   path, and it must cost at most one more argon2 comparison;
2. the registration lease, released guarded on the holder's window: racing registrations
   leave one account with one live code, and clients that vanish mid-request leave no lease
   behind (on the frozen test clock a lease left behind would lock the address out).

The races are made deterministic by holding the first sign-in's new hash (argon2 in the
service's own hasher) until the competing change has landed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from auth_svc.adapters.passwords import Passwords
from auth_svc.domain import codes as otp
from auth_svc.domain.passwords import Argon2Parameters
from auth_svc.handlers.deps import address_key
from auth_svc.keys import DEPS
from switchyard import keys
from switchyard.testing import eventually

from .conftest import STRONG_PASSWORD, AuthClient, Reply, metric, settle

NEW_PARAMETERS = Argon2Parameters(time_cost=2, memory_kib=2048)
NEW_PREFIX = "$argon2id$v=19$m=2048,t=2,p=1$"
OTHER_PASSWORD = "copper-lantern-93-meadow"


class HeldPasswords(Passwords):
    """Real argon2 with new cost parameters (every old hash is due a rehash); the first new
    hash made waits for ``release``, so a sign-in can be held between its comparison and
    its guarded upgrade while the test changes the account."""

    def __init__(self) -> None:
        super().__init__(NEW_PARAMETERS, workers=2)
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        self._held = False

    async def hash(self, password: str) -> str:
        if not self._held:
            self._held = True
            self.holding.set()
            await self.release.wait()
        return await super().hash(password)


@asynccontextmanager
async def held_hashes(edge: AuthClient) -> AsyncIterator[HeldPasswords]:
    """The service's hasher swapped for a :class:`HeldPasswords` (after the account was
    made with the old parameters, so its hash is due an upgrade)."""
    deps = edge.app[DEPS]
    old = deps.passwords
    held = deps.passwords = HeldPasswords()
    try:
        yield held
    finally:
        held.release.set()
        held.close()
        deps.passwords = old


async def held_sign_in(edge: AuthClient, held: HeldPasswords, email: str) -> asyncio.Task[Reply]:
    """A sign-in with the right (old) password, held just before its hash upgrade."""
    task = asyncio.create_task(edge.login(email))
    await asyncio.wait_for(held.holding.wait(), 30)
    return task


async def stored_hash(edge: AuthClient, email: str) -> str:
    account = await edge.app[keys.MONGO_DB]["users"].find_one({"email": email})
    assert account is not None
    return str(account["password_hash"])


# -- 1. the re-read after a lost hash upgrade -----------------------------------------------


async def test_a_lost_upgrade_after_logout_all_gets_no_token(edge: AuthClient) -> None:
    """The owner signs in (winning the upgrade) and ends every session while an attacker's
    sign-in with the same password is held: the attacker's re-read sees the hash changed
    *and* the revocation, and must be refused."""
    email = "rehash.logout@example.com"
    await edge.signed_up(email)
    async with held_hashes(edge) as held:
        reply = await logout_all_during(edge, held, email)
    assert reply.status == 401, reply.body
    assert reply.body["type"].endswith("sign-in-interrupted"), reply.body


async def logout_all_during(edge: AuthClient, held: HeldPasswords, email: str) -> Reply:
    attacker = await held_sign_in(edge, held, email)
    owner = await edge.login(email)  # its hash is not held: it wins the upgrade
    assert owner.status == 200, owner.body
    assert (await stored_hash(edge, email)).startswith(NEW_PREFIX)
    ended = await edge.post("/logout-all", token=owner.body["access_token"])
    assert ended.status == 204
    held.release.set()
    return await attacker


@pytest.mark.parametrize("new_password", [OTHER_PASSWORD, STRONG_PASSWORD])
async def test_a_reset_during_a_held_upgrade_gets_the_old_sign_in_no_token(
    edge: AuthClient, new_password: str
) -> None:
    """A reset lands while a sign-in with the old password is held: the re-read finds the
    hash changed. Reset to another password, the comparison fails; reset to the *same*
    password (the comparison passes), only the revocation the reset recorded stops it."""
    email = f"rehash.reset.{len(new_password)}@example.com"
    await edge.signed_up(email)
    async with held_hashes(edge) as held:
        reply = await reset_during(edge, held, email, new_password)
    assert reply.status == 401, reply.body
    assert reply.body["type"].endswith("sign-in-interrupted"), reply.body
    edge.clock.advance(1)
    assert (await edge.login(email, new_password)).status == 200


async def reset_during(
    edge: AuthClient, held: HeldPasswords, email: str, new_password: str
) -> Reply:
    attacker = await held_sign_in(edge, held, email)
    assert (await edge.post("/password/forgot", {"email": email})).status == 202
    code = await edge.events.code_for(email, "reset_password")
    reset = await edge.post(
        "/password/reset", {"email": email, "code": code, "new_password": new_password}
    )
    assert reset.status == 204, reset.body
    assert (await stored_hash(edge, email)).startswith(NEW_PREFIX)
    held.release.set()
    return await attacker


async def test_wrong_passwords_racing_a_rehash_get_nothing_and_cost_bounded_argon2(
    edge: AuthClient,
) -> None:
    """Right and wrong passwords at once while the hash is due an upgrade: no wrong one
    signs in, and the comparisons are one per attempt plus at most one per lost upgrade."""
    email = "rehash.mixed@example.com"
    await edge.signed_up(email)
    deps = edge.app[DEPS]
    old = deps.passwords
    deps.passwords = Passwords(NEW_PARAMETERS, workers=2)
    rounds, right, wrong = 3, 2, 2
    compared_before = metric(edge, "auth_password_verifications_total")
    statuses: dict[str, list[int]] = {"right": [], "wrong": []}
    try:
        for _ in range(rounds):
            calls = [("right", STRONG_PASSWORD)] * right + [("wrong", "wrong-pass-0000")] * wrong
            replies = await asyncio.gather(*(edge.login(email, pw) for _, pw in calls))
            for (kind, _), reply in zip(calls, replies, strict=True):
                statuses[kind].append(reply.status)
            # A right password clears the count; start each round from a fresh address budget.
            edge.clock.advance(deps.lockout_duration + 1)
    finally:
        deps.passwords.close()
        deps.passwords = old
    assert set(statuses["wrong"]) <= {401, 429}, statuses
    assert set(statuses["right"]) <= {200, 429}, statuses
    assert 200 in statuses["right"], statuses
    attempts = rounds * (right + wrong)
    compared = metric(edge, "auth_password_verifications_total") - compared_before
    assert compared <= attempts + rounds * (right - 1), (compared, statuses)


# -- 2. the registration lease --------------------------------------------------------------


async def lease_document(edge: AuthClient, email: str) -> object:
    budgets = edge.app[keys.MONGO_DB]["attempt_budgets"]
    return await budgets.find_one({"_id": f"signup-lease:{address_key(email)}"})


async def test_racing_registrations_leave_one_account_one_live_code_and_no_lease(
    edge: AuthClient,
) -> None:
    email = "lease.race@example.com"
    passwords = [f"amber-signal-{n}4-orchard-{n}" for n in range(4)]

    async def register(password: str) -> int:
        async with aiohttp.ClientSession(str(edge.http._base_url)) as http:
            async with http.post(
                "/api/v1/auth/register",
                json={"email": email, "password": password, "display_name": "Racer"},
            ) as reply:
                return reply.status

    statuses = await asyncio.gather(*(register(password) for password in passwords))
    assert statuses == [201] * len(passwords), statuses
    await settle(edge)
    db = edge.app[keys.MONGO_DB]
    accounts = [doc async for doc in db["users"].find({"email": email})]
    assert len(accounts) == 1, accounts
    codes = [doc async for doc in db["otp_codes"].find({})]
    owners = {doc["user_id"] for doc in codes}
    # Only the surviving account holds a code; every replaced one's code was discarded.
    assert owners <= {accounts[0]["_id"]}, (owners, accounts[0]["_id"])
    assert await lease_document(edge, email) is None


async def test_clients_vanishing_mid_registration_leave_no_lease(edge: AuthClient) -> None:
    """Raw sockets send a whole registration and close at once (the gateway's upstream
    request goes away with them). The test clock is frozen: a lease left behind would never
    expire, and the owner's registration would wait, then answer 503."""
    email = "lease.vanish@example.com"
    host, port = edge.http._base_url.host, edge.http._base_url.port
    assert host is not None and port is not None
    body = json.dumps(
        {"email": email, "password": STRONG_PASSWORD, "display_name": "Ghost"}
    ).encode()
    request = (
        f"POST /api/v1/auth/register HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body

    async def vanish() -> None:
        _, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(vanish() for _ in range(4)))
    await settle(edge)
    reply = await edge.register(email)
    assert reply.status == 201, reply.body
    await settle(edge)
    assert await lease_document(edge, email) is None


async def test_registrations_past_the_code_cap_do_not_lock_the_owner_out(
    edge: AuthClient,
) -> None:
    """An attacker registers the owner's address as often as the hourly code cap allows
    (every code goes to the owner's mailbox). The owner's own registration then replaces
    the attacker's pending account but gets no new code (the cap): the last code the owner
    received must still prove the mailbox — else five requests an hour keep the address
    from ever being verified."""
    email = "capped.owner@example.com"
    cap = edge.settings.otp_codes_per_hour
    for n in range(cap):
        reply = await edge.register(email, f"mallory-harbour-{n}9-kettle")
        assert reply.status == 201, reply.body
    users = edge.app[keys.MONGO_DB]["users"]
    attackers = await users.find_one({"email": email})  # the pending account the owner replaces
    assert attackers is not None
    mail = await edge.events.wait_for(
        "auth.otp.requested", lambda data: data.user_id == attackers["_id"]
    )
    last = str(mail.data.code)  # the last code mailed to the owner's mailbox
    owner = await edge.register(email, STRONG_PASSWORD, "Owner")
    assert owner.status == 201, owner.body
    await settle(edge)

    def mailed() -> set[str]:  # the relay delivers at least once: a mail may arrive twice
        return {
            str(e.data.code)
            for e in edge.events.of_type("auth.otp.requested")
            if e.data.email == email and e.data.purpose == "verify_email"
        }

    async def every_mail_arrived() -> bool:  # in any order
        return len(mailed()) >= cap

    await eventually(every_mail_arrived, timeout=30)
    assert len(mailed()) == cap  # the owner's registration got none (the cap)
    verified = await edge.post("/verify-email", {"email": email, "code": last})
    assert verified.status == 200, verified.body
    # Contested (several passwords were registered): no password was activated.
    assert (await edge.login(email, STRONG_PASSWORD)).status == 401


async def test_a_burst_of_registrations_past_the_cap_leaves_the_last_code_working(
    edge: AuthClient,
) -> None:
    """Twice the hourly cap of registrations of one address at once, each on its own
    connection: every one is answered like a first registration, one pending account is
    left, no lease, and the last code mailed verifies it."""
    email = "burst.cap@example.com"
    burst = 2 * edge.settings.otp_codes_per_hour

    async def register(n: int) -> int:
        async with aiohttp.ClientSession(str(edge.http._base_url)) as http:
            async with http.post(
                "/api/v1/auth/register",
                json={
                    "email": email,
                    "password": f"amber-signal-{n}4-orchard",
                    "display_name": "R",
                },
            ) as reply:
                return reply.status

    statuses = await asyncio.gather(*(register(n) for n in range(burst)))
    assert statuses == [201] * burst, statuses
    await settle(edge)
    accounts = [doc async for doc in edge.app[keys.MONGO_DB]["users"].find({"email": email})]
    assert len(accounts) == 1, accounts
    assert await lease_document(edge, email) is None
    cap = edge.settings.otp_codes_per_hour

    def mailed() -> set[str]:  # the relay delivers at least once: a mail may arrive twice
        return {
            str(e.data.code)
            for e in edge.events.of_type("auth.otp.requested")
            if e.data.email == email and e.data.purpose == "verify_email"
        }

    async def every_mail_arrived() -> bool:
        # Counted by distinct code: a redelivered mail is not another one (CI once saw five
        # events with four codes when counting events).
        return len(mailed()) >= cap

    await eventually(every_mail_arrived, timeout=30)
    assert len(mailed()) == cap
    # The relay may deliver them in any order: the one the account's live code matches is
    # the last one (carried over the replacements past the cap); the owner's mailbox has it.
    stored = await edge.app[keys.MONGO_DB]["otp_codes"].find_one(
        {"_id": otp.code_key(accounts[0]["_id"], "verify_email")}
    )
    assert stored is not None
    live = [
        c for c in mailed() if otp.code_matches(c, stored["code"]["salt"], stored["code"]["hash"])
    ]
    assert len(live) == 1
    verified = await edge.post("/verify-email", {"email": email, "code": live[0]})
    assert verified.status == 200, verified.body
