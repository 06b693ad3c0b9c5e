"""Ending sessions, announced: ``auth.session.revoked`` for every family that ends.

Other services (the gateway's deny-list) accept an access token until it expires unless
told; every path that ends sessions goes through here so none forgets to tell them.

Ending every session of a user is two steps without a transaction: the user document
first (``sessions_revoked_at``, auth's own source of truth), then each family. The events
for the families live at the time ride on the user document's write, so a crash between
the two steps loses none; a family that appears in between gets its event with its own
revocation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from auth_svc.domain.sessions import LiveSession
from auth_svc.domain.users import User, UserChange, UserStatus
from auth_svc.handlers.deps import Deps, event
from switchyard.envelope import Envelope
from switchyard.events.auth import SessionRevoked

# At most this many session events ride on the user document (it carries them in its
# outbox until relayed); further families announce themselves with their own revocation.
ANNOUNCED_WITH_USER = 100


def revoked_event(session: LiveSession, *, reason: str, now: datetime) -> Envelope:
    return event(
        SessionRevoked(
            user_id=session.user_id,
            session_id=session.family_id,
            expires_at=session.access_until,
            revoked_at=now,
            reason=reason,
        ),
        session.user_id,
    )


async def end_session(
    family_id: str,
    *,
    reason: str,
    deps: Deps,
    token_hash: str | None = None,
    with_events: Sequence[Envelope] = (),
) -> LiveSession | None:
    """End one live family (if ``token_hash`` is its current token, when given)."""
    now = deps.clock.now()
    ended = await deps.sessions.revoke(
        family_id,
        reason=reason,
        now=now,
        token_hash=token_hash,
        events=lambda session: [
            *with_events,
            revoked_event(session, reason=reason, now=now),
        ],
    )
    if ended is not None:
        deps.notify_outbox()
    return ended


async def update_and_end_sessions(
    user_id: str,
    change: UserChange,
    *,
    reason: str,
    deps: Deps,
    expect_status: UserStatus | None = None,
    expect_password_hash: str | None = None,
    expect_version: int | None = None,
    events: Sequence[Envelope] = (),
) -> User | None:
    """One guarded write of the account (``change``) that also revokes every session from
    now on, then each live family; None (and nothing ended) when a guard failed."""
    now = deps.clock.now()
    live = await deps.sessions.live(user_id, now)
    announced = live[:ANNOUNCED_WITH_USER]
    updated = await deps.users.update(
        user_id,
        replace(change, sessions_revoked_at=now),
        expect_status=expect_status,
        expect_password_hash=expect_password_hash,
        expect_version=expect_version,
        events=[
            *events,
            *(revoked_event(s, reason=reason, now=now) for s in announced),
        ],
    )
    if updated is None:
        return None
    deps.notify_outbox()
    await deps.sessions.revoke_all(
        user_id,
        reason=reason,
        now=now,
        announced=frozenset(session.family_id for session in announced),
        events=lambda session: [revoked_event(session, reason=reason, now=now)],
    )
    deps.notify_outbox()
    return updated


async def revoked_sessions(
    *, after: str | None, limit: int, deps: Deps
) -> tuple[list[LiveSession], str | None]:
    """A page of the sessions revoked whose access tokens may still be alive (what a verifier
    starting up must deny), and the id to continue after (None on the last page)."""
    sessions = await deps.sessions.revoked(deps.clock.now(), after=after, limit=limit + 1)
    if len(sessions) > limit:
        return sessions[:limit], sessions[limit - 1].family_id
    return sessions, None
