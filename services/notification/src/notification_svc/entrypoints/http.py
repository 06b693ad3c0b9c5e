"""HTTP routes under ``/api/v1/notifications`` (the gateway forwards the same paths)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from notification_svc import keys
from notification_svc.adapters.deliveries import is_delivery_id
from notification_svc.adapters.preferences import PreferencesConflict
from notification_svc.domain.deliveries import Delivery, DeliveryStatus
from notification_svc.domain.preferences import (
    ALWAYS_SENT,
    CannotOptOut,
    Category,
    Channel,
    Preferences,
)
from switchyard.authn import current_identity, require_auth, require_roles
from switchyard.envelope import format_time
from switchyard.pagination import PageQuery, invalid_cursor, page, read_cursor
from switchyard.problems import Problem, validation_problem
from switchyard.web import RequestModel, json_response, read_json, read_query

PREFIX = "/api/v1/notifications"
_SAVE_ATTEMPTS = 3


class DeliveryQuery(PageQuery):
    user_id: str | None = Field(None, min_length=1, max_length=128)
    status: DeliveryStatus | None = None


def delivery_view(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "channel": delivery.channel,
        "recipient": delivery.recipient,
        "user_id": delivery.user_id,
        "template": delivery.template,
        "category": delivery.category,
        "status": delivery.status,
        "reason": delivery.reason,
        "attempts": delivery.attempts,
        "provider_response": delivery.provider_response,
        "created_at": format_time(delivery.created_at),
        "updated_at": format_time(delivery.updated_at),
        "sent_at": format_time(delivery.sent_at) if delivery.sent_at else None,
    }


@require_roles("admin")
async def list_deliveries(request: web.Request) -> web.Response:
    """Delivery records, newest first, filterable by user and status (admin)."""
    query = read_query(request, DeliveryQuery)
    position = read_cursor(query.cursor, after=str)
    if position is not None and not is_delivery_id(position["after"]):
        raise invalid_cursor()
    after = position["after"] if position else None
    items, last = await request.app[keys.DELIVERIES].page(
        limit=query.limit, after=after, user_id=query.user_id, status=query.status
    )
    return json_response(page([delivery_view(i) for i in items], {"after": last} if last else None))


class PreferencesUpdate(RequestModel):
    preferences: dict[Category, dict[Channel, bool]]


def preferences_view(preferences: Preferences) -> dict[str, Any]:
    return {"preferences": preferences.matrix(), "always_on": sorted(ALWAYS_SENT)}


@require_auth
async def get_preferences(request: web.Request) -> web.Response:
    identity = current_identity(request)
    return json_response(
        preferences_view(await request.app[keys.PREFERENCES].get(identity.user_id))
    )


@require_auth
async def put_preferences(request: web.Request) -> web.Response:
    """Set the given category × channel switches; the others keep their value."""
    identity = current_identity(request)
    update = await read_json(request, PreferencesUpdate)
    store = request.app[keys.PREFERENCES]
    for _ in range(_SAVE_ATTEMPTS):
        current = await store.get(identity.user_id)
        try:
            changed = current.changed(update.preferences)
        except CannotOptOut as error:
            raise validation_problem(
                [
                    {
                        "location": f"/preferences/{error.category}/{error.channel}",
                        "message": str(error),
                        "code": "cannot-opt-out",
                    }
                ],
                "Sign-up and security messages cannot be turned off.",
            ) from None
        try:
            await store.save(changed)
        except PreferencesConflict:
            continue  # saved concurrently: re-read and apply again
        return json_response(preferences_view(changed))
    raise Problem(409, "The preferences changed while saving; try again.", slug="conflict")


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/deliveries", list_deliveries)
    app.router.add_get(f"{PREFIX}/preferences", get_preferences)
    app.router.add_put(f"{PREFIX}/preferences", put_preferences)
