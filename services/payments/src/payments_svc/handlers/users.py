"""Users, from auth's events: the directory read model (roles), wallets opened at sign-up
and frozen at deletion (no new offers or withdrawals; balances stay for the books)."""

from __future__ import annotations

from typing import Any

from payments_svc.handlers.common import Books, wallet_spec
from switchyard.bus import PermanentError
from switchyard.directory import USER_EVENTS, apply_user_event
from switchyard.envelope import Event
from switchyard.events.auth import UserDeleted, UserRegistered

USER_EVENT_HANDLERS = USER_EVENTS


async def handle_user_event(event: Event[Any], *, books: Books) -> None:
    data = event.data
    if not isinstance(data, USER_EVENTS):
        raise PermanentError(f"payments does not follow {event.type}")
    await apply_user_event(books.directory, data)
    if isinstance(data, UserRegistered):
        for currency in books.settings.payments_currencies:
            await books.ledger.open(wallet_spec(currency, data.user_id))
    elif isinstance(data, UserDeleted):
        for currency in books.settings.payments_currencies:
            await books.ledger.freeze(wallet_spec(currency, data.user_id))
