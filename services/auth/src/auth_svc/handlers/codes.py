"""Emailed one-time codes: issuing them (within budgets) and proving one.

- Issuing: per address and purpose, one code per ``OTP_RESEND_COOLDOWN`` and at most
  ``OTP_CODES_PER_HOUR`` an hour, counted in a budget that outlives any one code (a code
  killed by wrong tries no longer resets the cooldown). Past the cap the last code mailed
  stays valid a while longer instead of a new mail.
- Guessing (6-digit codes): every try counts against the code (5 kill it) *and* against the
  address's budget for that purpose (``OTP_GUESS_BUDGET`` wrong guesses per window across all
  codes, reserved before the comparison); past it no code of that purpose is accepted until
  the window ends and the owner is told (``auth.otp.blocked``). No code is mailed meanwhile.
- Sign-in codes have 80 bits: nobody guesses them, so wrong guesses cost the owner nothing.
- Requests for a code (forgot, resend, sign-in code) answer before any of this: the work
  runs in the background, so known and unknown addresses get the same answer in the same time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from auth_svc.domain import codes as otp
from auth_svc.domain.attempts import Reservation
from auth_svc.domain.errors import InvalidCode
from auth_svc.domain.users import User, UserStatus
from auth_svc.handlers.deps import Deps, TokenPair, address_key, event
from auth_svc.handlers.sessions import open_session
from switchyard.events.auth import LoginCodeRequested, OtpBlocked, OtpRequested

log = logging.getLogger("auth.handlers")

# Which accounts a code of each purpose is for.
WANTED_STATUS: dict[otp.Purpose, tuple[UserStatus, ...]] = {
    "verify_email": (UserStatus.PENDING,),
    "reset_password": (UserStatus.PENDING, UserStatus.ACTIVE),
    "sign_in": (UserStatus.ACTIVE,),
}


def _budget_key(email: str, purpose: str) -> str:
    return f"{purpose}:{address_key(email)}"


# -- issuing --------------------------------------------------------------------------------


async def issue_code(
    user: User, purpose: otp.Purpose, *, deps: Deps, cooldown: bool = True
) -> bool:
    """Mail a new code for ``purpose`` if the budgets allow; True when one was issued.

    ``cooldown=False`` (a sign-up, which replaces any pending one) skips the resend spacing
    but not the hourly cap.
    """
    now = deps.clock.now()
    key = _budget_key(user.email, purpose)
    code_key = otp.code_key(user.id, purpose)
    if purpose != "sign_in":
        refusal = await deps.code_guesses.refusing(key, now)
        if refusal is not None:
            # Guessing is blocked: a code could not be used. The guesses may have been made
            # before the account existed (nobody to tell then): tell the owner now, once.
            await _block(user, purpose, refusal, deps=deps)
            return False
    reservation = await deps.code_issues.reserve(key, now, spaced=cooldown)
    if not reservation.granted:
        if reservation.used >= deps.code_issues.limit:
            # The hourly cap, perhaps spent by someone else asking on the owner's behalf:
            # every code went to the owner, so the last one stays usable instead.
            await deps.codes.extend(
                code_key, now=now, expires_at=now + timedelta(seconds=deps.otp_ttl)
            )
        return False
    code = otp.new_sign_in_code() if purpose == "sign_in" else otp.new_code()
    salt = otp.new_salt()
    expires_at = now + timedelta(seconds=deps.otp_ttl)
    data = (
        LoginCodeRequested(
            user_id=user.id,
            email=user.email,
            display_name=user.display_name,
            code=code,
            expires_at=expires_at,
        )
        if purpose == "sign_in"
        else OtpRequested(
            user_id=user.id,
            email=user.email,
            display_name=user.display_name,
            purpose=purpose,
            code=code,
            expires_at=expires_at,
        )
    )
    await deps.codes.issue(
        code_key,
        user_id=user.id,
        purpose=purpose,
        code_hash=otp.hash_code(code, salt),
        salt=salt,
        now=now,
        expires_at=expires_at,
        event=event(data, user.id),
    )
    deps.metrics.code_issued(purpose)
    deps.notify_outbox()
    return True


def request_code(*, email: str, purpose: otp.Purpose, deps: Deps) -> None:
    """Answer at once; look the address up and mail a code (if it needs one) afterwards."""

    async def send() -> None:
        user = await deps.users.by_email(email)
        if user is not None and user.status in WANTED_STATUS[purpose]:
            await issue_code(user, purpose, deps=deps)

    deps.background.submit(f"code:{purpose}", send)


# -- proving --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeProof:
    """A right code, not yet spent: spend it, or give it back if the request fails later."""

    user: User
    purpose: otp.Purpose
    code_hash: str
    guess: Reservation | None


async def prove_code(
    user: User | None, purpose: otp.Purpose, code: str, *, deps: Deps, email: str
) -> CodeProof:
    """Check ``code`` for ``purpose`` (counting the try); raise InvalidCode when it is not
    the live one, whatever the reason (no account, wrong, used, expired, blocked)."""
    if purpose == "sign_in":
        return await _prove_sign_in_code(user, code, deps=deps)
    now = deps.clock.now()
    key = _budget_key(email, purpose)
    guess = await deps.code_guesses.reserve(key, now)
    if not guess.granted:
        raise InvalidCode()
    if user is None:
        # The same work as a wrong code of an account (a counted try, a comparison), so
        # the answer's timing does not tell whether the address has one.
        nobody = await deps.codes.attempt_nobody(purpose, now=now, ttl=deps.otp_ttl)
        nobody.matches(code)
        raise InvalidCode()
    code_key = otp.code_key(user.id, purpose)
    stored = await deps.codes.attempt(code_key, now=now, max_attempts=deps.otp_max_attempts)
    if stored is not None:
        if stored.matches(code):
            return CodeProof(user, purpose, stored.code_hash, guess)
        if stored.attempts >= deps.otp_max_attempts:
            await deps.codes.discard(code_key)
    if guess.last:
        await _block(user, purpose, guess, deps=deps)
    raise InvalidCode()


async def _prove_sign_in_code(user: User | None, code: str, *, deps: Deps) -> CodeProof:
    canonical = otp.normalise_sign_in_code(code)
    if canonical is None:
        raise InvalidCode()
    now = deps.clock.now()
    if user is None:
        # The same work as a wrong code of an account (a read, a comparison).
        nobody = await deps.codes.live_nobody("sign_in", now=now, ttl=deps.otp_ttl)
        nobody.matches(canonical)
        raise InvalidCode()
    stored = await deps.codes.live(otp.code_key(user.id, "sign_in"), now=now)
    if stored is None or not stored.matches(canonical):
        raise InvalidCode()
    return CodeProof(user, "sign_in", stored.code_hash, None)


async def _block(user: User, purpose: otp.Purpose, guess: Reservation, *, deps: Deps) -> None:
    """The last wrong guess of the window: tell the owner (once per window)."""
    if purpose == "sign_in":
        return
    blocked = event(
        OtpBlocked(
            user_id=user.id,
            email=user.email,
            display_name=user.display_name,
            purpose=purpose,
            failed_attempts=guess.used,
            blocked_until=guess.until,
        ),
        user.id,
    )
    key = _budget_key(user.email, purpose)
    if await deps.code_guesses.exhausted(key, guess, events=[blocked]):
        deps.metrics.code_guessing_blocked(purpose)
        deps.notify_outbox()
        log.warning(
            "too many wrong codes; codes of this purpose blocked",
            extra={"user_id": user.id, "purpose": purpose},
        )


async def spend_code(proof: CodeProof, *, deps: Deps) -> None:
    """Single use: only one caller spends a code; its try is not a wrong guess."""
    code_key = otp.code_key(proof.user.id, proof.purpose)
    if not await deps.codes.consume(code_key, proof.code_hash):
        raise InvalidCode()  # a concurrent request used it first
    if proof.guess is not None:
        await deps.code_guesses.refund(_budget_key(proof.user.email, proof.purpose), proof.guess)


async def return_code(proof: CodeProof, *, deps: Deps) -> None:
    """The code was right but the request failed for another reason (a weak new password):
    the try and the guess are given back, the code stays live."""
    await deps.codes.untry(otp.code_key(proof.user.id, proof.purpose), proof.code_hash)
    if proof.guess is not None:
        await deps.code_guesses.refund(_budget_key(proof.user.email, proof.purpose), proof.guess)


async def sign_in_with_code(*, email: str, code: str, deps: Deps) -> TokenPair:
    """The owner's way in by email, also while password sign-in is locked."""
    user = await deps.users.by_email(email)
    if user is not None and not user.is_active:
        user = None
    proof = await prove_code(user, "sign_in", code, deps=deps, email=email)
    await spend_code(proof, deps=deps)
    return await open_session(proof.user, deps=deps)
