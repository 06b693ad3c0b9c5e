"""The one wiring place: ``create_app(settings)``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from payments_svc import keys
from payments_svc.adapters.flows import (
    deposit_events,
    no_events,
    offer_events,
    withdrawal_events,
)
from payments_svc.adapters.ledger import Ledger, StepObserver, ledger_indexes
from payments_svc.adapters.maintenance import LedgerCheck, PruneControl, Pruner
from payments_svc.adapters.providers import PaymentProvider, TestProvider
from payments_svc.adapters.records import Records, record_indexes
from payments_svc.adapters.stripe_provider import StripeProvider
from payments_svc.entrypoints.consumers import build_registry
from payments_svc.entrypoints.http import add_routes
from payments_svc.handlers.common import Books
from payments_svc.handlers.webhooks import WEBHOOK_EVENTS, webhook_indexes
from payments_svc.metrics import PaymentsMetrics
from payments_svc.settings import PaymentsSettings
from payments_svc.sweeper import Sweeper
from switchyard import keys as shared_keys
from switchyard.authn import authn_middleware, verifier_context
from switchyard.bus import bus_context, consumers_context, inbox_indexes
from switchyard.directory import UserDirectory
from switchyard.idempotency import idempotency_indexes
from switchyard.mongo import mongo_context
from switchyard.mongo.client import Index, asc
from switchyard.outbox import outbox_context, outbox_indexes
from switchyard.revocation import revocation_context
from switchyard.web import new_app

# Records whose transitions stage events in their outbox.
OUTBOX_COLLECTIONS = ["offers", "deposits", "withdrawals"]
RECORD_COLLECTIONS = [*OUTBOX_COLLECTIONS, "adjustments"]
USERS_COLLECTION = "payments_users"  # the switchyard.directory read model
PAYOUT_ACCOUNTS = "payout_accounts"


def indexes() -> list[Index]:
    return [
        *ledger_indexes(),
        *(index for name in RECORD_COLLECTIONS for index in record_indexes(name)),
        Index("offers", asc("customer_id")),
        Index("offers", asc("contractor_id")),
        Index("deposits", asc("intent_id")),
        Index("withdrawals", asc("status", "updated.unix_us")),
        *webhook_indexes(),
        *outbox_indexes(OUTBOX_COLLECTIONS),
        *idempotency_indexes(),
        *inbox_indexes(),
    ]


def provider_for(settings: PaymentsSettings) -> PaymentProvider:
    if settings.payments_provider == "stripe":
        assert settings.stripe_secret_key is not None  # the settings validator insists
        return StripeProvider(
            settings.stripe_secret_key.get_secret_value(), api_base=settings.stripe_api_base
        )
    return TestProvider()


def books_context(
    settings: PaymentsSettings, observer: StepObserver | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The ledger, the record stores and the provider; then the sweeper, stopped first."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        db = app[shared_keys.MONGO_DB]
        metrics = app[keys.PAYMENTS_METRICS]
        ledger = Ledger(db, metrics=metrics, observer=observer)
        provider = provider_for(settings)
        relay = app[shared_keys.OUTBOX_RELAY]
        books = Books(
            ledger=ledger,
            offers=Records(db["offers"], ledger, offer_events),
            deposits=Records(db["deposits"], ledger, deposit_events),
            withdrawals=Records(db["withdrawals"], ledger, withdrawal_events),
            adjustments=Records(db["adjustments"], ledger, no_events),
            directory=UserDirectory(db[USERS_COLLECTION]),
            payout_accounts=db[PAYOUT_ACCOUNTS],
            webhook_events=db[WEBHOOK_EVENTS],
            provider=provider,
            settings=settings,
            metrics=metrics,
            published=relay.notify,
        )
        control = PruneControl(db)
        await control.ensure()
        app[keys.BOOKS] = books
        pruner = Pruner(db, control)
        app[keys.LEDGER_CHECK] = check = LedgerCheck(db, control, pruner)
        app[keys.SWEEPER] = sweeper = Sweeper(books, pruner, check)
        sweeper.start()
        try:
            yield
        finally:
            await sweeper.stop()
            await provider.close()

    return context


def create_app(
    settings: PaymentsSettings, *, observer: StepObserver | None = None
) -> web.Application:
    """``observer`` sees every ledger step (tests use it to kill the process mid-transfer)."""
    app = new_app(settings)
    app[keys.PAYMENTS_METRICS] = PaymentsMetrics(app[shared_keys.METRICS])
    app.middlewares.append(authn_middleware())
    app.cleanup_ctx.extend(
        [
            mongo_context(indexes()),
            bus_context,
            outbox_context(OUTBOX_COLLECTIONS),
            verifier_context(),
            revocation_context(),  # revoked sessions refused within seconds
            books_context(settings, observer),
            consumers_context(build_registry),
        ]
    )
    add_routes(app)
    return app
