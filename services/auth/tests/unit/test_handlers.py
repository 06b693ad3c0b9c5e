"""The auth commands on in-memory repositories (``fakes.py``): what each command changes,
which events it stages (relayed through ``switchyard.testing``'s in-memory outbox and bus,
checked against the event catalog) and what it counts. No store, broker or HTTP here; the
integration tests drive the same commands through the running service."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import pytest

from auth_svc import handlers
from auth_svc.adapters.passwords import Passwords
from auth_svc.background import BackgroundWork
from auth_svc.domain import codes as otp
from auth_svc.domain.clock import ManualClock
from auth_svc.domain.errors import (
    AccountLocked,
    EmailTaken,
    InvalidCode,
    InvalidCredentials,
    InvalidRefreshToken,
    NotAllowed,
    NotAuthenticated,
    RoleChangeRefused,
    SignInInterrupted,
    WrongPassword,
)
from auth_svc.domain.passwords import Argon2Parameters, PasswordPolicy, PasswordRejected
from auth_svc.domain.sessions import family_of
from auth_svc.domain.users import User, UserChange, UserStatus
from auth_svc.handlers import Deps, TokenPair, ports
from auth_svc.handlers.revocation import update_and_end_sessions
from auth_svc.metrics import AuthMetrics
from switchyard.envelope import Envelope
from switchyard.metrics import MetricsRegistry
from switchyard.testing import InMemoryOutbox
from switchyard.tokens import (
    Identity,
    StaticKeys,
    TokenSigner,
    TokenVerifier,
    generate_signing_key,
)

from .fakes import InProcessStrength, MemoryBudget, MemoryCodes, MemorySessions, MemoryUsers

ISSUER = "http://auth.test"
AUDIENCE = "switchyard-test"
STRONG = "violet-harbour-47-kettle"
OTHER_STRONG = "quartz-meadow-81-lantern"


@dataclass
class World:
    deps: Deps
    clock: ManualClock
    outbox: InMemoryOutbox
    users: MemoryUsers
    codes: MemoryCodes
    sessions: MemorySessions
    metrics: AuthMetrics
    verifier: TokenVerifier

    async def relay(self) -> list[Envelope]:
        """Publish what the commands staged so far; what was published."""
        return await self.outbox.relay()

    def published(self, event_type: str) -> list[Envelope]:
        return self.outbox.bus.of_type(event_type)

    async def code_for(self, email: str, purpose: str) -> str:
        """The code of the newest email asking for ``purpose`` at ``email``."""
        await self.deps.background.wait_idle()
        await self.relay()
        kind = "auth.login_code.requested" if purpose == "sign_in" else "auth.otp.requested"
        mailed = [
            e
            for e in self.published(kind)
            if e.data["email"] == email and e.data.get("purpose", "sign_in") == purpose
        ]
        assert mailed, f"no {purpose} code was mailed to {email}"
        return str(mailed[-1].data["code"])

    def identity(self, pair: TokenPair) -> Identity:
        return self.verifier.verify(pair.access_token)

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.value(name, **labels)

    async def signed_up(self, email: str, password: str = STRONG, name: str = "Dana") -> User:
        await handlers.register(
            email=email, password=password, display_name=name, role="customer", deps=self.deps
        )
        code = await self.code_for(email, "verify_email")
        await handlers.verify_email(email=email, code=code, deps=self.deps)
        user = await self.users.by_email(email)
        assert user is not None and user.status is UserStatus.ACTIVE
        return user


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = ManualClock()
    outbox = InMemoryOutbox()
    users, codes, sessions = MemoryUsers(outbox), MemoryCodes(outbox), MemorySessions(outbox)
    metrics = AuthMetrics(MetricsRegistry("auth"))
    kid, key = generate_signing_key()
    signer = TokenSigner(
        key, kid, issuer=ISSUER, audience=AUDIENCE, clock=lambda: clock.now().timestamp()
    )
    verifier = TokenVerifier(
        keys=StaticKeys({kid: key.public_key()}),
        issuer=ISSUER,
        audience=AUDIENCE,
        clock=lambda: clock.now().timestamp(),
    )
    passwords = Passwords(Argon2Parameters(time_cost=1, memory_kib=1024), workers=1)
    deps = Deps(
        clock=clock,
        users=users,
        codes=codes,
        sessions=sessions,
        login_attempts=MemoryBudget(outbox, limit=5, window=900),
        code_guesses=MemoryBudget(outbox, limit=10, window=3600),
        code_issues=MemoryBudget(outbox, limit=5, window=3600, min_interval=60),
        signup_leases=MemoryBudget(outbox, limit=1, window=30),
        password_changes=MemoryBudget(outbox, limit=10, window=3600),
        passwords=passwords,
        strength=InProcessStrength(PasswordPolicy(min_score=3)),
        tokens=signer,
        metrics=metrics,
        background=BackgroundWork(limit=16, on_dropped=metrics.background_work_dropped),
        notify_outbox=outbox.notify,
        access_token_ttl=900,
        refresh_token_ttl=30 * 86400,
        otp_ttl=600,
        otp_max_attempts=5,
        lockout_duration=900,
    )
    yield World(deps, clock, outbox, users, codes, sessions, metrics, verifier)
    passwords.close()


def types(events: list[Envelope]) -> list[str]:
    return [event.type for event in events]


# -- signing up -------------------------------------------------------------------------


async def test_register_stores_a_pending_account_and_mails_a_code(world: World) -> None:
    user = await handlers.register(
        email=" Dana@Example.com ",
        password=STRONG,
        display_name="Dana",
        role="contractor",
        deps=world.deps,
    )
    assert (user.email, user.status, user.roles) == (
        "dana@example.com",
        UserStatus.PENDING,
        ("contractor",),
    )
    assert await world.users.by_id(user.id) == user
    assert world.outbox.notified >= 1  # the relay is woken, not left to its poll
    assert types(await world.relay()) == ["auth.user.registered", "auth.otp.requested"]
    mailed = world.published("auth.otp.requested")[0].data
    assert (mailed["user_id"], mailed["purpose"]) == (user.id, "verify_email")
    stored = world.codes.codes[otp.code_key(user.id, "verify_email")]
    assert stored.matches(mailed["code"]) and mailed["code"] not in stored.code_hash
    assert world.count("auth_registrations_total") == 1
    assert world.count("auth_codes_issued_total", purpose="verify_email") == 1
    assert world.count("auth_password_strength_checks_total") == 1


async def test_a_weak_password_is_refused_before_anything_is_stored(world: World) -> None:
    with pytest.raises(PasswordRejected):
        await handlers.register(
            email="weak@example.com",
            password="weak@example.com1",
            display_name="Weak",
            role="customer",
            deps=world.deps,
        )
    assert world.users.accounts == {} and await world.relay() == []


async def test_verify_email_activates_the_account_and_signs_it_in(world: World) -> None:
    await handlers.register(
        email="v@example.com", password=STRONG, display_name="V", role="customer", deps=world.deps
    )
    code = await world.code_for("v@example.com", "verify_email")
    world.clock.advance(30)
    pair = await handlers.verify_email(email="v@example.com", code=code, deps=world.deps)
    user = await world.users.by_email("v@example.com")
    assert user is not None and user.status is UserStatus.ACTIVE
    assert user.verified_at == world.clock.now()
    identity = world.identity(pair)
    assert (identity.user_id, identity.roles) == (user.id, frozenset({"customer"}))
    assert identity.claims["sid"] == family_of(pair.refresh_token)
    assert types(await world.relay()) == ["auth.user.verified"]
    assert world.codes.codes == {}  # spent, and every other code of the account dies
    with pytest.raises(InvalidCode):  # single use
        await handlers.verify_email(email="v@example.com", code=code, deps=world.deps)


async def test_wrong_codes_count_and_the_fifth_kills_the_code(world: World) -> None:
    await handlers.register(
        email="w@example.com", password=STRONG, display_name="W", role="customer", deps=world.deps
    )
    code = await world.code_for("w@example.com", "verify_email")
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        with pytest.raises(InvalidCode):
            await handlers.verify_email(email="w@example.com", code=wrong, deps=world.deps)
    assert world.codes.codes == {}
    with pytest.raises(InvalidCode):  # the right code died with the fifth wrong try
        await handlers.verify_email(email="w@example.com", code=code, deps=world.deps)


async def test_a_pending_address_registered_again_is_replaced_and_contested(world: World) -> None:
    first = await handlers.register(
        email="p@example.com", password=STRONG, display_name="P", role="customer", deps=world.deps
    )
    await world.relay()
    second = await handlers.register(
        email="p@example.com",
        password=OTHER_STRONG,
        display_name="Mallory",
        role="customer",
        deps=world.deps,
    )
    assert second.id != first.id and second.signup_contested
    erased = world.users.accounts[first.id]
    assert (erased.status, erased.email, erased.password_hash) == (
        UserStatus.DELETED,
        f"deleted:{first.id}",
        None,
    )
    assert types(await world.relay()) == [
        "auth.user.deleted",
        "auth.user.registered",
        "auth.otp.requested",
    ]
    code = await world.code_for("p@example.com", "verify_email")
    await handlers.verify_email(email="p@example.com", code=code, deps=world.deps)
    verified = world.users.accounts[second.id]
    # Nobody can tell whose sign-up the code confirmed: no password is activated.
    assert verified.password_hash is None and not verified.signup_contested
    with pytest.raises(EmailTaken):  # a verified address is not registered again
        await handlers.register(
            email="P@example.com",
            password=STRONG,
            display_name="P",
            role="customer",
            deps=world.deps,
        )


# -- signing in ---------------------------------------------------------------------------


async def test_five_wrong_passwords_lock_the_address_until_the_lock_ends(world: World) -> None:
    await world.signed_up("l@example.com")
    for _ in range(4):
        with pytest.raises(InvalidCredentials):
            await handlers.login(email="l@example.com", password="wrong-password", deps=world.deps)
    with pytest.raises(AccountLocked) as locked:
        await handlers.login(email="l@example.com", password="wrong-password", deps=world.deps)
    assert locked.value.retry_after == 900
    with pytest.raises(AccountLocked):  # the right password too, while locked
        await handlers.login(email="l@example.com", password=STRONG, deps=world.deps)
    assert world.count("auth_lockouts_total") == 1
    assert world.count("auth_logins_total", outcome="invalid_credentials") == 4
    assert world.count("auth_logins_total", outcome="locked") == 2
    # An unknown address is counted and locked the same way.
    for _ in range(4):
        with pytest.raises(InvalidCredentials):
            await handlers.login(email="nobody@example.com", password=STRONG, deps=world.deps)
    world.clock.advance(901)
    pair = await handlers.login(email="l@example.com", password=STRONG, deps=world.deps)
    assert world.identity(pair).user_id
    assert world.count("auth_password_verifications_total") == 4 + 1 + 4 + 1


async def test_a_right_password_clears_the_count(world: World) -> None:
    await world.signed_up("c@example.com")
    for _ in range(3):
        with pytest.raises(InvalidCredentials):
            await handlers.login(email="c@example.com", password="wrong-password", deps=world.deps)
    await handlers.login(email="c@example.com", password=STRONG, deps=world.deps)
    for _ in range(4):  # four more wrong ones: the count started again
        with pytest.raises(InvalidCredentials):
            await handlers.login(email="c@example.com", password="wrong-password", deps=world.deps)


async def test_refresh_rotates_and_a_replayed_token_ends_the_family(world: World) -> None:
    user = await world.signed_up("r@example.com")
    pair = await handlers.login(email="r@example.com", password=STRONG, deps=world.deps)
    await world.relay()
    world.clock.advance(60)
    rotated = await handlers.refresh(refresh_token=pair.refresh_token, deps=world.deps)
    assert family_of(rotated.refresh_token) == family_of(pair.refresh_token)
    assert rotated.refresh_expires_in == 30 * 86400 - 60  # rotation does not extend it
    never_issued = f"{family_of(pair.refresh_token)}.{'A' * 43}"
    with pytest.raises(InvalidRefreshToken):  # not a token of this family: nothing changes
        await handlers.refresh(refresh_token=never_issued, deps=world.deps)
    assert await world.relay() == []
    with pytest.raises(InvalidRefreshToken):  # the rotated-away token, presented again
        await handlers.refresh(refresh_token=pair.refresh_token, deps=world.deps)
    events = await world.relay()
    assert types(events) == ["auth.session.reuse_detected", "auth.session.revoked"]
    revoked = events[1].data
    assert (revoked["user_id"], revoked["reason"]) == (user.id, "reuse_detected")
    assert revoked["session_id"] == family_of(pair.refresh_token)
    with pytest.raises(InvalidRefreshToken):  # the whole family ended
        await handlers.refresh(refresh_token=rotated.refresh_token, deps=world.deps)
    assert world.count("auth_token_refreshes_total", outcome="rotated") == 1
    assert world.count("auth_token_refreshes_total", outcome="reuse_detected") == 1
    assert world.count("auth_token_refreshes_total", outcome="invalid") == 2
    assert world.count("auth_refresh_reuse_detected_total") == 1


async def test_logout_all_ends_every_session_and_announces_each(world: World) -> None:
    await world.signed_up("o@example.com")
    pairs = [
        await handlers.login(email="o@example.com", password=STRONG, deps=world.deps)
        for _ in range(2)
    ]
    await world.relay()
    await handlers.logout_all(identity=world.identity(pairs[0]), deps=world.deps)
    events = await world.relay()
    # Three families: the verification's sign-in and the two logins.
    assert types(events) == ["auth.session.revoked"] * 3
    assert {e.data["reason"] for e in events} == {"logout_all"}
    for pair in pairs:
        with pytest.raises(NotAuthenticated):
            await handlers.current_user(world.identity(pair), deps=world.deps)
        with pytest.raises(InvalidRefreshToken):
            await handlers.refresh(refresh_token=pair.refresh_token, deps=world.deps)


# -- codes by email -------------------------------------------------------------------------


async def test_code_requests_run_after_the_answer_and_only_for_wanted_accounts(
    world: World,
) -> None:
    await world.signed_up("k@example.com")
    await world.relay()
    handlers.request_code(email="nobody@example.com", purpose="reset_password", deps=world.deps)
    handlers.request_code(email="k@example.com", purpose="verify_email", deps=world.deps)
    await world.deps.background.wait_idle()
    assert await world.relay() == []  # no account, and an active one needs no verification
    handlers.request_code(email="k@example.com", purpose="reset_password", deps=world.deps)
    await world.deps.background.wait_idle()
    assert types(await world.relay()) == ["auth.otp.requested"]
    handlers.request_code(email="k@example.com", purpose="reset_password", deps=world.deps)
    await world.deps.background.wait_idle()
    assert await world.relay() == []  # the resend cooldown (60 s)


async def test_a_rejected_new_password_gives_the_code_back(world: World) -> None:
    user = await world.signed_up("f@example.com")
    signed_in = await handlers.login(email="f@example.com", password=STRONG, deps=world.deps)
    handlers.request_code(email="f@example.com", purpose="reset_password", deps=world.deps)
    code = await world.code_for("f@example.com", "reset_password")
    with pytest.raises(PasswordRejected):
        await handlers.reset_password(
            email="f@example.com", code=code, new_password="password123", deps=world.deps
        )
    assert world.codes.codes[otp.code_key(user.id, "reset_password")].attempts == 0
    await handlers.reset_password(
        email="f@example.com", code=code, new_password=OTHER_STRONG, deps=world.deps
    )
    events = await world.relay()
    assert types(events)[0] == "auth.password.changed"
    assert set(types(events)[1:]) == {"auth.session.revoked"}
    with pytest.raises(NotAuthenticated):
        await handlers.current_user(world.identity(signed_in), deps=world.deps)
    with pytest.raises(InvalidCredentials):
        await handlers.login(email="f@example.com", password=STRONG, deps=world.deps)
    await handlers.login(email="f@example.com", password=OTHER_STRONG, deps=world.deps)


async def test_guessing_past_the_budget_blocks_codes_and_tells_the_owner_once(
    world: World,
) -> None:
    user = await world.signed_up("g@example.com")
    for _ in range(2):  # a code dies after 5 wrong tries; the budget is 10 per hour
        handlers.request_code(email="g@example.com", purpose="reset_password", deps=world.deps)
        code = await world.code_for("g@example.com", "reset_password")
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        for _ in range(5):
            with pytest.raises(InvalidCode):
                await handlers.reset_password(
                    email="g@example.com", code=wrong, new_password=OTHER_STRONG, deps=world.deps
                )
        world.clock.advance(61)
    blocked = world.published("auth.otp.blocked") + [
        e for e in await world.relay() if e.type == "auth.otp.blocked"
    ]
    assert len(blocked) == 1
    assert (blocked[0].data["user_id"], blocked[0].data["failed_attempts"]) == (user.id, 10)
    assert world.count("auth_codes_blocked_total", purpose="reset_password") == 1
    handlers.request_code(email="g@example.com", purpose="reset_password", deps=world.deps)
    await world.deps.background.wait_idle()
    assert await world.relay() == []  # no code is mailed while guessing is blocked
    world.clock.advance(3600)
    handlers.request_code(email="g@example.com", purpose="reset_password", deps=world.deps)
    code = await world.code_for("g@example.com", "reset_password")
    await handlers.reset_password(
        email="g@example.com", code=code, new_password=OTHER_STRONG, deps=world.deps
    )


async def test_a_sign_in_code_works_while_passwords_are_locked(world: World) -> None:
    await world.signed_up("s@example.com")
    for _ in range(5):
        with pytest.raises((InvalidCredentials, AccountLocked)):
            await handlers.login(email="s@example.com", password="wrong-password", deps=world.deps)
    handlers.request_code(email="s@example.com", purpose="sign_in", deps=world.deps)
    code = await world.code_for("s@example.com", "sign_in")
    with pytest.raises(InvalidCode):
        await handlers.sign_in_with_code(
            email="s@example.com", code="AAAA-AAAA-AAAA-AAAA", deps=world.deps
        )
    pair = await handlers.sign_in_with_code(
        email="s@example.com", code=code.lower().replace("-", " "), deps=world.deps
    )
    assert world.identity(pair).user_id
    with pytest.raises(AccountLocked):  # signing in by code does not lift the password lock
        await handlers.login(email="s@example.com", password=STRONG, deps=world.deps)


# -- the account and administration -----------------------------------------------------------


async def test_deleting_the_account_erases_it_and_frees_the_address(world: World) -> None:
    user = await world.signed_up("d@example.com")
    pair = await handlers.login(email="d@example.com", password=STRONG, deps=world.deps)
    await world.relay()
    with pytest.raises(WrongPassword):
        await handlers.delete_account(
            identity=world.identity(pair), password="wrong-password", deps=world.deps
        )
    await handlers.delete_account(identity=world.identity(pair), password=STRONG, deps=world.deps)
    erased = world.users.accounts[user.id]
    assert (erased.status, erased.email, erased.display_name, erased.roles) == (
        UserStatus.DELETED,
        f"deleted:{user.id}",
        "",
        (),
    )
    assert erased.password_hash is None
    assert world.users.deleted_at[user.id] == world.clock.now()
    events = await world.relay()
    assert types(events)[0] == "auth.user.deleted"
    assert set(types(events)[1:]) == {"auth.session.revoked"}
    again = await handlers.register(
        email="d@example.com", password=STRONG, display_name="D", role="customer", deps=world.deps
    )
    assert again.id != user.id


async def test_profile_updates_carry_the_state_they_wrote(world: World) -> None:
    user = await world.signed_up("n@example.com", name="Old Name")
    pair = await handlers.login(email="n@example.com", password=STRONG, deps=world.deps)
    await world.relay()
    updated = await handlers.update_profile(
        identity=world.identity(pair), display_name="New Name", deps=world.deps
    )
    assert updated.display_name == "New Name" and updated.version == user.version + 1
    [event] = await world.relay()
    assert (event.type, event.data["display_name"], event.data["roles"]) == (
        "auth.user.updated",
        "New Name",
        ["customer"],
    )
    same = await handlers.update_profile(
        identity=world.identity(pair), display_name="New Name", deps=world.deps
    )
    assert same == updated and await world.relay() == []  # no change, no event


async def admin_of(world: World) -> Identity:
    admin = await handlers.bootstrap_admin(
        email="root@example.com", password=STRONG, display_name="Root", deps=world.deps
    )
    assert admin is not None and admin.roles == ("admin",)
    assert (
        await handlers.bootstrap_admin(
            email="other@example.com", password=STRONG, display_name="Other", deps=world.deps
        )
        is None
    )  # an admin exists
    pair = await handlers.login(email="root@example.com", password=STRONG, deps=world.deps)
    return world.identity(pair)


async def test_a_role_change_ends_the_users_sessions(world: World) -> None:
    admin = await admin_of(world)
    user = await world.signed_up("u@example.com")
    pair = await handlers.login(email="u@example.com", password=STRONG, deps=world.deps)
    await world.relay()
    with pytest.raises(NotAllowed):
        await handlers.set_roles(
            identity=world.identity(pair), user_id=user.id, roles=["admin"], deps=world.deps
        )
    changed = await handlers.set_roles(
        identity=admin, user_id=user.id, roles=["contractor", "customer"], deps=world.deps
    )
    assert changed.roles == ("contractor", "customer")
    events = await world.relay()
    assert types(events)[0] == "auth.user.updated"
    assert events[0].data["roles"] == ["contractor", "customer"]
    revoked = [e.data for e in events[1:]]
    assert len(revoked) == 2 and {r["reason"] for r in revoked} == {"roles_changed"}
    with pytest.raises(NotAuthenticated):
        await handlers.current_user(world.identity(pair), deps=world.deps)
    with pytest.raises(RoleChangeRefused):
        await handlers.set_roles(
            identity=admin, user_id=admin.user_id, roles=["customer"], deps=world.deps
        )


@pytest.mark.parametrize("change", ["roles", "password", "logout_all"])
async def test_a_sign_in_straddling_an_account_change_is_refused(
    world: World, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """The check-then-act window of a sign-in (the hash is current, so no rehash write guards
    it): a change that lands while the password is compared ends the sign-in's session."""
    admin = await admin_of(world)
    user = await world.signed_up("straddle@example.com")
    compare = world.deps.passwords.verify

    async def compare_while_the_account_changes(stored_hash: str | None, password: str) -> bool:
        right = await compare(stored_hash, password)
        if change == "roles":
            await handlers.set_roles(
                identity=admin, user_id=user.id, roles=["contractor"], deps=world.deps
            )
        elif change == "password":
            await update_and_end_sessions(
                user.id,
                UserChange(password_hash=await world.deps.passwords.hash(OTHER_STRONG)),
                reason="password_reset",
                deps=world.deps,
            )
        else:
            await update_and_end_sessions(
                user.id, UserChange(), reason="logout_all", deps=world.deps
            )
        return right

    monkeypatch.setattr(world.deps.passwords, "verify", compare_while_the_account_changes)
    await world.relay()
    with pytest.raises(SignInInterrupted):
        await handlers.login(email="straddle@example.com", password=STRONG, deps=world.deps)
    # The session it opened is ended (and announced), none is left live.
    assert await world.sessions.live(user.id, world.clock.now()) == []
    revoked = [e.data for e in await world.relay() if e.type == "auth.session.revoked"]
    assert "sign_in_interrupted" in {r["reason"] for r in revoked}
    assert world.count("auth_logins_total", outcome="interrupted") == 1


async def test_users_are_listed_a_page_at_a_time(world: World) -> None:
    admin = await admin_of(world)
    for n in range(3):
        await handlers.register(
            email=f"user{n}@example.com",
            password=STRONG,
            display_name=f"User {n}",
            role="customer",
            deps=world.deps,
        )
    seen: list[str] = []
    after: str | None = None
    while True:
        page, after = await handlers.list_users(
            identity=admin, limit=2, after=after, status=None, role=None, deps=world.deps
        )
        seen += [user.email for user in page]
        if after is None:
            break
    assert seen == ["root@example.com"] + [f"user{n}@example.com" for n in range(3)]
    pending, _ = await handlers.list_users(
        identity=admin,
        limit=10,
        after=None,
        status=UserStatus.PENDING,
        role=None,
        deps=world.deps,
    )
    assert len(pending) == 3


@pytest.mark.parametrize(
    ("fake", "interface"),
    [
        (MemoryUsers, ports.Users),
        (MemoryCodes, ports.Codes),
        (MemorySessions, ports.Sessions),
        (MemoryBudget, ports.AttemptBudget),
    ],
)
def test_the_fakes_implement_the_interfaces(fake: type, interface: type) -> None:
    """Every method of the interface, with the same parameters (names, kinds, which have
    defaults), so the commands call the fakes exactly as they call the repositories."""
    for name, method in vars(interface).items():
        if name.startswith("_") or not callable(method):
            continue
        wanted = inspect.signature(method).parameters
        found = inspect.signature(getattr(fake, name)).parameters
        assert [(p.name, p.kind, p.default is p.empty) for p in wanted.values()] == [
            (p.name, p.kind, p.default is p.empty) for p in found.values()
        ], f"{fake.__name__}.{name}"


# -- every ended session is announced (issue 12) --------------------------------------------


async def test_every_way_a_session_ends_announces_it_with_its_reason(world: World) -> None:
    """Logout, password change, a role change and an admin's logout-all each announce
    ``auth.session.revoked`` for the family they end, with the latest access-token expiry (reset,
    deletion, logout-all and reuse detection are asserted by their own tests above)."""
    user = await world.signed_up("every@example.com")
    admin = await admin_of(world)

    async def session() -> TokenPair:
        return await handlers.login(email="every@example.com", password=STRONG, deps=world.deps)

    async def announced(pair: TokenPair, reason: str) -> None:
        events = [e for e in await world.relay() if e.type == "auth.session.revoked"]
        sid = world.identity(pair).claims["sid"]
        mine = [e.data for e in events if e.data["session_id"] == sid]
        assert len(mine) == 1, (reason, [e.data for e in events])
        assert (mine[0]["user_id"], mine[0]["reason"]) == (user.id, reason)
        # Denied at least as long as the token lives.
        expires_at = datetime.fromisoformat(mine[0]["expires_at"].replace("Z", "+00:00"))
        assert expires_at.timestamp() >= world.identity(pair).expires_at
        assert {e.data["reason"] for e in events} == {reason}

    pair = await session()
    await world.relay()
    await handlers.logout(refresh_token=pair.refresh_token, deps=world.deps)
    await announced(pair, "logout")

    pair = await session()
    await world.relay()
    await handlers.change_password(
        identity=world.identity(pair),
        current_password=STRONG,
        new_password=OTHER_STRONG,
        deps=world.deps,
    )
    await announced(pair, "password_changed")
    await handlers.change_password(
        identity=world.identity(
            await handlers.login(email="every@example.com", password=OTHER_STRONG, deps=world.deps)
        ),
        current_password=OTHER_STRONG,
        new_password=STRONG,
        deps=world.deps,
    )
    await world.relay()

    pair = await session()
    await world.relay()
    await handlers.set_roles(identity=admin, user_id=user.id, roles=["contractor"], deps=world.deps)
    await announced(pair, "roles_changed")

    pair = await session()
    await world.relay()
    await handlers.end_user_sessions(identity=admin, user_id=user.id, deps=world.deps)
    await announced(pair, "admin_logout_all")
