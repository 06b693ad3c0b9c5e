"""What every command needs: the service's stores (``Books``), ids, and the checks that
turn bad requests into problems."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from payments_svc.adapters.ledger import Ledger
from payments_svc.adapters.providers import PaymentProvider
from payments_svc.adapters.records import Records
from payments_svc.domain import accounts as acct
from payments_svc.domain.accounts import AccountSpec
from payments_svc.metrics import PaymentsMetrics
from payments_svc.settings import PaymentsSettings
from switchyard.directory import UserDirectory
from switchyard.idempotency import Progress
from switchyard.mongo.client import Document
from switchyard.problems import Problem, validation_problem
from switchyard.tokens import Identity


@dataclass(frozen=True)
class Books:
    """The service's state and collaborators, built once in ``create_app``."""

    ledger: Ledger
    offers: Records
    deposits: Records
    withdrawals: Records
    adjustments: Records
    directory: UserDirectory
    payout_accounts: AsyncCollection[Document]
    webhook_events: AsyncCollection[Document]
    provider: PaymentProvider
    settings: PaymentsSettings
    metrics: PaymentsMetrics
    published: Callable[[], None]  # wake the outbox relay after a write that staged events


def new_id(prefix: str) -> str:
    """Opaque, unique, and ordered by creation time (lists page by id)."""
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(8)}"


def _committed_id(progress: Progress | None) -> str | None:
    value = (progress.effect or {}).get("record_id") if progress is not None else None
    return value if isinstance(value, str) else None


async def earlier_record(progress: Progress | None, records: Records) -> Document | None:
    """The record an earlier attempt under the same Idempotency-Key made and then died (or
    answered 5xx) before its response was stored: the retry finishes that record instead
    of making a second one (a second deposit, withdrawal, offer or adjustment)."""
    record_id = _committed_id(progress)
    return await records.get(record_id) if record_id else None


async def record_id(progress: Progress | None, prefix: str, *, fresh: bool = False) -> str:
    """The id of the record this request makes, committed to its Idempotency-Key *before*
    the record is written. An id an earlier attempt committed to without writing its record
    is used again: should that attempt be stalled rather than dead, both write one record."""
    committed = None if fresh else _committed_id(progress)
    if committed is not None:
        return committed
    made = new_id(prefix)
    if progress is not None:
        await progress.committed(record_id=made)
    return made


async def require_current_admin(books: Books, identity: Identity) -> None:
    """Admin actions that move money check the roles auth last published, not only the
    token's (as accepting an offer checks the contractor role): a token minted before the
    admin was demoted or deleted moves nothing."""
    stored = await books.directory.get(identity.user_id)
    if not identity.is_admin or stored is None or not stored.has_role("admin"):
        raise Problem(403, "Your account lacks the role this action needs.", slug="forbidden")


def require_currency(books: Books, currency: str, location: str) -> None:
    if currency not in books.settings.payments_currencies:
        allowed = ", ".join(books.settings.payments_currencies)
        raise validation_problem(
            [
                {
                    "location": location,
                    "message": f"{currency} is not accepted here (allowed: {allowed}).",
                    "code": "unsupported-currency",
                }
            ],
            f"The currency {currency} is not accepted.",
        )


async def require_open_wallet(books: Books, user_id: str, currency: str) -> None:
    """403 for a deleted user or a frozen wallet: no new offers, deposits or withdrawals."""
    user = await books.directory.get(user_id)
    if user is not None and user.deleted:
        raise Problem(403, "This account was deleted.", slug="account-closed")
    wallet = await books.ledger.accounts.find_one(
        {"_id": acct.wallet(currency, user_id)}, {"frozen": 1}
    )
    if wallet is not None and wallet.get("frozen"):
        raise Problem(403, "This wallet is frozen.", slug="wallet-frozen")


def money(amount: int, currency: str) -> dict[str, Any]:
    return {"amount": amount, "currency": currency}


def wallet_spec(currency: str, user_id: str) -> AccountSpec:
    return AccountSpec(acct.wallet(currency, user_id), owner=user_id)
