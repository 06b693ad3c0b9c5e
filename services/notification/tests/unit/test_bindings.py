"""The handler tables and the shared event catalog agree: each queue is bound to exactly the
event types its table handles, and every catalog example of those events reaches a handler
(a drift would otherwise send events to the DLQ at run time)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from pydantic import BaseModel

from notification_svc import keys
from notification_svc.domain.emails import CATEGORY_OF, EMAIL_FOR_EVENT, EmailKind, email_for
from notification_svc.domain.notices import NOTICES_FOR_EVENT, notices_for
from notification_svc.domain.webhooks import NEVER_SENT
from notification_svc.entrypoints.consumers import build_registry
from notification_svc.handlers import USER_EVENT_HANDLERS, UserStores, handle_user_event
from notification_svc.settings import NotificationSettings
from switchyard.bus import PermanentError
from switchyard.contracts import envelope_examples
from switchyard.envelope import CATALOG, Event
from switchyard.events.auth import UserDeleted, UserRegistered, UserUpdated, UserVerified
from switchyard.events.chat import ConversationCreated, MessageSent
from switchyard.events.notification import BroadcastBatchQueued, WebhookDisabled

NOW = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)
TABLES: dict[str, Any] = {
    "emails": EMAIL_FOR_EVENT,
    "user_directory": USER_EVENT_HANDLERS,
    "chat_pushes": [MessageSent, ConversationCreated],
    "activity": NOTICES_FOR_EVENT,
    "webhooks": [spec.model for spec in CATALOG if spec.type not in NEVER_SENT],
    "webhook_notices": [WebhookDisabled],
    "broadcasts": [BroadcastBatchQueued],
}


def examples_of(model: type[BaseModel]) -> list[Event[Any]]:
    spec = CATALOG.spec_for_model(model)
    events = [
        Event(envelope=envelope, data=CATALOG.decode(envelope))
        for envelope in envelope_examples(spec)
    ]
    assert events, f"{spec.type} has no example in the catalog"
    return events


def test_each_queue_is_bound_to_exactly_the_catalog_types_of_its_table() -> None:
    app = web.Application()
    # build_registry only binds these; no store or mailer is touched.
    for key in (
        keys.EMAIL_CHANNEL,
        keys.DIRECTORY,
        keys.DELIVERIES,
        keys.PREFERENCES,
        keys.CHANNELS,
        keys.DEVICES,
        keys.INBOX,
        keys.CHAT_STATE,
        keys.WEBHOOKS,
        keys.BROADCASTS,
    ):
        app[key] = object()  # type: ignore[assignment]
    app[keys.NOTIFICATION_SETTINGS] = NotificationSettings()
    bound = {sub.name: sub.event_types for sub in build_registry(app)}
    assert set(bound) == set(TABLES)
    for name, table in TABLES.items():
        expected = [CATALOG.spec_for_model(model).type for model in table]
        assert sorted(bound[name]) == sorted(expected), name
        assert all(event_type in CATALOG for event_type in bound[name])


@pytest.mark.parametrize("model", list(EMAIL_FOR_EVENT), ids=lambda m: m.__name__)
def test_every_emailed_event_example_builds_its_email(model: type[BaseModel]) -> None:
    for event in examples_of(model):
        request = email_for(event.data, now=NOW)
        assert request is not None
        assert request.user_id == event.data.user_id  # type: ignore[attr-defined]
        assert request.kind in CATEGORY_OF


def test_every_email_kind_is_reachable_from_the_table() -> None:
    kinds = set()
    for model in EMAIL_FOR_EVENT:
        for event in examples_of(model):
            for purpose in ("verify_email", "reset_password"):
                data = event.data
                if "purpose" in type(data).model_fields:
                    data = data.model_copy(update={"purpose": purpose})
                request = email_for(data, now=NOW)
                assert request is not None
                kinds.add(request.kind)
    # Payments come from NOTICES_FOR_EVENT, webhook notices from their own subscription.
    assert kinds == set(EmailKind) - {EmailKind.PAYMENT, EmailKind.WEBHOOK_DISABLED}


def test_an_event_outside_the_email_table_builds_no_email() -> None:
    (event,) = examples_of(UserRegistered)
    assert UserRegistered not in EMAIL_FOR_EVENT
    assert email_for(event.data, now=NOW) is None


class RecordingStores:
    """Records which store calls a user event makes (the handlers' only side effects)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        async def record(*args: Any, **kwargs: Any) -> int:
            self.calls.append(name)
            return 0

        return record


@pytest.mark.parametrize(
    ("model", "calls"),
    [
        (UserRegistered, ["record_profile", "record_status"]),
        (UserVerified, ["record_profile", "record_status"]),
        (UserUpdated, ["record_profile"]),
        (UserDeleted, ["erase", "erase_recipient", "erase"]),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
async def test_every_user_event_example_reaches_its_handler(
    model: type[BaseModel], calls: list[str]
) -> None:
    assert model in USER_EVENT_HANDLERS
    recorder = RecordingStores()
    stores = UserStores(directory=recorder, deliveries=recorder, preferences=recorder)  # type: ignore[arg-type]
    for event in examples_of(model):
        recorder.calls.clear()
        await handle_user_event(event, users=stores)
        assert recorder.calls == calls


async def test_a_user_event_outside_the_table_is_permanent_not_retried() -> None:
    (event,) = examples_of(next(iter(EMAIL_FOR_EVENT)))
    assert type(event.data) not in USER_EVENT_HANDLERS
    stores = UserStores(directory=None, deliveries=None, preferences=None)  # type: ignore[arg-type]
    with pytest.raises(PermanentError):
        await handle_user_event(event, users=stores)


@pytest.mark.parametrize("model", list(NOTICES_FOR_EVENT), ids=lambda m: m.__name__)
def test_every_payment_and_file_event_example_renders_its_notices(model: type[BaseModel]) -> None:
    from notification_svc.adapters.templates import EmailRenderer

    renderer = EmailRenderer(product_name="Switchyard")
    for event in examples_of(model):
        notices = notices_for(event.data)
        assert notices
        for notice in notices:
            text = renderer.short(notice.template, notice.context)
            assert text.title and text.body and "None" not in text.body
            assert all(isinstance(v, str) for v in notice.data.values())
