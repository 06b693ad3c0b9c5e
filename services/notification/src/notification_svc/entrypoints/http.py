"""HTTP routes under ``/api/v1/notifications`` (the gateway forwards the same paths)."""

from __future__ import annotations

import asyncio
import html
import socket
from typing import Any

from aiohttp import web
from pydantic import Field
from yarl import URL

from notification_svc import keys
from notification_svc.adapters.broadcasts import Broadcast
from notification_svc.adapters.deliveries import is_delivery_id
from notification_svc.adapters.inbox import InboxItem, is_item_id
from notification_svc.adapters.preferences import PreferencesConflict
from notification_svc.adapters.webhooks import (
    WebhookDelivery,
    is_subscription_id,
    is_webhook_delivery_id,
)
from notification_svc.domain.deliveries import Delivery, DeliveryStatus
from notification_svc.domain.preferences import (
    ALWAYS_SENT,
    CannotOptOut,
    Category,
    Channel,
    Preferences,
)
from notification_svc.domain.push import Device, Platform
from notification_svc.domain.webhooks import (
    MAX_EVENT_TYPES,
    MAX_SUBSCRIPTIONS,
    Subscription,
    all_allowed,
    new_secret,
    valid_pattern,
)
from notification_svc.sending.webhooks import attempt
from switchyard import keys as shared_keys
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


# -- devices ---------------------------------------------------------------------------------


class DeviceRegistration(RequestModel):
    # FCM registration tokens are ~160 characters of URL-safe text; allow room, refuse junk.
    token: str = Field(min_length=16, max_length=4096, pattern=r"^[A-Za-z0-9_:\-\.]+$")
    platform: Platform


def device_view(device: Device) -> dict[str, Any]:
    return {
        "token": device.token,
        "platform": device.platform,
        "created_at": format_time(device.created_at),
        "last_seen": format_time(device.last_seen),
    }


@require_auth
async def register_device(request: web.Request) -> web.Response:
    """Register (or refresh) a push token; at most 10 per user, the least recently seen dropped."""
    identity = current_identity(request)
    body = await read_json(request, DeviceRegistration)
    device = await request.app[keys.DEVICES].register(identity.user_id, body.token, body.platform)
    return json_response(device_view(device), status=201)


@require_auth
async def list_devices(request: web.Request) -> web.Response:
    identity = current_identity(request)
    devices = await request.app[keys.DEVICES].of_user(identity.user_id)
    return json_response({"items": [device_view(d) for d in devices], "next_cursor": None})


@require_auth
async def delete_device(request: web.Request) -> web.Response:
    identity = current_identity(request)
    token = request.match_info["token"]
    if not await request.app[keys.DEVICES].remove(token, user_id=identity.user_id):
        raise Problem(404, "No such device.", slug="not-found")
    return web.Response(status=204)


# -- in-app inbox ------------------------------------------------------------------------------


class InboxQuery(PageQuery):
    unread: bool | None = None


def item_view(item: InboxItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "category": item.category,
        "title": item.title,
        "body": item.body,
        "data": dict(item.data),
        "created_at": format_time(item.created_at),
        "read_at": format_time(item.read_at) if item.read_at else None,
    }


@require_auth
async def list_inbox(request: web.Request) -> web.Response:
    """The user's in-app notifications, newest first, with the unread count."""
    identity = current_identity(request)
    query = read_query(request, InboxQuery)
    position = read_cursor(query.cursor, after=str)
    if position is not None and not is_item_id(position["after"]):
        raise invalid_cursor()
    store = request.app[keys.INBOX]
    items, last = await store.page(
        identity.user_id,
        limit=query.limit,
        after=position["after"] if position else None,
        unread=query.unread,
    )
    body = page([item_view(i) for i in items], {"after": last} if last else None)
    body["unread_count"] = await store.unread_count(identity.user_id)
    return json_response(body)


@require_auth
async def read_item(request: web.Request) -> web.Response:
    identity = current_identity(request)
    item = await request.app[keys.INBOX].mark_read(identity.user_id, request.match_info["id"])
    if item is None:
        raise Problem(404, "No such notification.", slug="not-found")
    if item.data.get("kind") == "chat" and item.data.get("seq", "").isdigit():
        # Reading a chat notification counts as reading the conversation up to it.
        await request.app[keys.CHAT_STATE].mark_read(
            identity.user_id, item.data["conversation_id"], int(item.data["seq"])
        )
    return json_response(item_view(item))


@require_auth
async def read_all(request: web.Request) -> web.Response:
    identity = current_identity(request)
    changed = await request.app[keys.INBOX].mark_all_read(identity.user_id)
    return json_response({"read": changed, "unread_count": 0})


# -- conversation mutes ------------------------------------------------------------------------


@require_auth
async def list_mutes(request: web.Request) -> web.Response:
    identity = current_identity(request)
    muted = await request.app[keys.CHAT_STATE].muted_conversations(identity.user_id)
    return json_response({"items": [{"conversation_id": c} for c in muted], "next_cursor": None})


@require_auth
async def mute(request: web.Request) -> web.Response:
    identity = current_identity(request)
    conversation_id = _conversation_id(request)
    await request.app[keys.CHAT_STATE].set_muted(identity.user_id, conversation_id, True)
    return json_response({"conversation_id": conversation_id, "muted": True})


@require_auth
async def unmute(request: web.Request) -> web.Response:
    identity = current_identity(request)
    conversation_id = _conversation_id(request)
    await request.app[keys.CHAT_STATE].set_muted(identity.user_id, conversation_id, False)
    return web.Response(status=204)


def _conversation_id(request: web.Request) -> str:
    value = request.match_info["conversation_id"]
    if not 1 <= len(value) <= 128 or "|" in value:
        raise Problem(404, "No such conversation.", slug="not-found")
    return value


# -- outgoing webhooks -------------------------------------------------------------------------


class WebhookCreate(RequestModel):
    url: str = Field(min_length=8, max_length=2048)
    event_types: list[str] = Field(min_length=1, max_length=MAX_EVENT_TYPES)


def subscription_view(subscription: Subscription) -> dict[str, Any]:
    return {
        "id": subscription.id,
        "url": subscription.url,
        "event_types": list(subscription.event_types),
        "status": subscription.status,
        "disabled_reason": subscription.disabled_reason,
        "scope": "all" if subscription.sees_all else "own",
        "created_at": format_time(subscription.created_at),
    }


def webhook_delivery_view(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "reason": delivery.reason,
        "attempts": delivery.attempts,
        "response_code": delivery.response_code,
        "response_body": delivery.response_body,
        "latency_ms": delivery.latency_ms,
        "error": delivery.error,
        "created_at": format_time(delivery.created_at),
        "updated_at": format_time(delivery.updated_at),
        "delivered_at": format_time(delivery.delivered_at) if delivery.delivered_at else None,
    }


def _invalid(location: str, message: str, code: str) -> Problem:
    return validation_problem(
        [{"location": location, "message": message, "code": code}], "The webhook is not valid."
    )


async def _check_target(url: str, *, allow_private: bool) -> str:
    """Scheme, host and (unless allowed) a public address; the connect-time guard re-checks."""
    try:
        parsed = URL(url)
    except ValueError:
        raise _invalid("/url", "not a URL", "invalid-url") from None
    if parsed.scheme not in ("http", "https") or not parsed.host or parsed.fragment:
        raise _invalid("/url", "an http or https URL with a host, no fragment", "invalid-url")
    if parsed.user or parsed.password:
        raise _invalid("/url", "credentials in the URL are not accepted", "invalid-url")
    if not parsed.port:
        raise _invalid("/url", "port 0 cannot be connected to", "invalid-url")
    try:
        parsed.host.encode("idna")  # labels of 1-63 characters, as a resolver takes them
    except UnicodeError:
        raise _invalid("/url", "the host name is not valid", "invalid-url") from None
    if allow_private:
        return str(parsed)
    host = parsed.host
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, parsed.port, type=socket.SOCK_STREAM
        )
    except OSError:
        raise _invalid("/url", f"{host} does not resolve", "target-not-allowed") from None
    if not all_allowed(str(info[4][0]) for info in infos):
        raise _invalid(
            "/url", "the target resolves to a private or local address", "target-not-allowed"
        )
    return str(parsed)


@require_auth
async def create_webhook(request: web.Request) -> web.Response:
    """Subscribe a URL to event types; the signing secret is in this answer only."""
    identity = current_identity(request)
    body = await read_json(request, WebhookCreate)
    for n, pattern in enumerate(body.event_types):
        if not valid_pattern(pattern):
            raise _invalid(f"/event_types/{n}", "an event type or a * pattern", "invalid-pattern")
    settings = request.app[keys.NOTIFICATION_SETTINGS]
    url = await _check_target(body.url, allow_private=settings.webhook_allow_private_targets)
    store = request.app[keys.WEBHOOK_STORE]
    if len(await store.of_owner(identity.user_id)) >= MAX_SUBSCRIPTIONS:
        raise Problem(
            409,
            f"At most {MAX_SUBSCRIPTIONS} webhooks per user; delete one first.",
            slug="too-many-webhooks",
        )
    secret = new_secret()
    subscription = await store.create(
        owner_id=identity.user_id,
        url=url,
        event_types=list(dict.fromkeys(body.event_types)),
        secret=secret,
        sees_all=identity.has_role("admin"),
    )
    return json_response({**subscription_view(subscription), "secret": secret}, status=201)


@require_auth
async def list_webhooks(request: web.Request) -> web.Response:
    identity = current_identity(request)
    subscriptions = await request.app[keys.WEBHOOK_STORE].of_owner(identity.user_id)
    return json_response(
        {"items": [subscription_view(s) for s in subscriptions], "next_cursor": None}
    )


async def _own_subscription(request: web.Request) -> Subscription:
    identity = current_identity(request)
    subscription_id = request.match_info["id"]
    found = (
        await request.app[keys.WEBHOOK_STORE].get(subscription_id)
        if is_subscription_id(subscription_id)
        else None
    )
    if found is None or found.owner_id != identity.user_id:
        raise Problem(404, "No such webhook.", slug="not-found")
    return found


@require_auth
async def get_webhook(request: web.Request) -> web.Response:
    return json_response(subscription_view(await _own_subscription(request)))


@require_auth
async def delete_webhook(request: web.Request) -> web.Response:
    subscription = await _own_subscription(request)
    await request.app[keys.WEBHOOK_STORE].delete(subscription.id, subscription.owner_id)
    return web.Response(status=204)


@require_auth
async def list_webhook_deliveries(request: web.Request) -> web.Response:
    """The delivery log of one subscription, newest first."""
    subscription = await _own_subscription(request)
    query = read_query(request, PageQuery)
    position = read_cursor(query.cursor, after=str)
    if position is not None and not is_webhook_delivery_id(position["after"]):
        raise invalid_cursor()
    items, last = await request.app[keys.WEBHOOK_STORE].page(
        subscription.id, limit=query.limit, after=position["after"] if position else None
    )
    return json_response(
        page([webhook_delivery_view(i) for i in items], {"after": last} if last else None)
    )


@require_auth
async def redeliver(request: web.Request) -> web.Response:
    """Send one logged delivery again now (the same webhook-id: receivers de-duplicate)."""
    subscription = await _own_subscription(request)
    if subscription.status != "active":
        raise Problem(409, "The webhook is disabled.", slug="webhook-disabled")
    store = request.app[keys.WEBHOOK_STORE]
    delivery = await store.get_delivery(subscription.id, request.match_info["delivery_id"])
    if delivery is None:
        raise Problem(404, "No such delivery.", slug="not-found")
    await attempt(subscription, delivery, channel=request.app[keys.WEBHOOKS], force=True)
    after = await store.get_delivery(subscription.id, delivery.id)
    assert after is not None
    return json_response(webhook_delivery_view(after))


# -- one-click unsubscribe (RFC 8058) -----------------------------------------------------------


def _unsubscribe_claims(request: web.Request) -> tuple[str, Category]:
    links = request.app[keys.EMAIL_CHANNEL].unsubscribe
    token = request.query.get("token", "")
    claims = links.verify(token) if links is not None and len(token) <= 1024 else None
    if claims is None:
        raise Problem(400, "This unsubscribe link is not valid.", slug="invalid-token")
    return claims


async def unsubscribe_page(request: web.Request) -> web.Response:
    """What a person clicking the link sees: a button (a GET never changes anything, since
    mail scanners follow links)."""
    _, category = _unsubscribe_claims(request)
    token = html.escape(request.query["token"], quote=True)
    page_html = (
        "<!DOCTYPE html><html lang=en><meta charset=utf-8><title>Unsubscribe</title>"
        f"<p>Stop emails about <b>{html.escape(category)}</b>?</p>"
        f'<form method=post action="?token={token}">'
        "<input type=hidden name=List-Unsubscribe value=One-Click>"
        "<button type=submit>Unsubscribe</button></form></html>"
    )
    return web.Response(text=page_html, content_type="text/html")


async def unsubscribe(request: web.Request) -> web.Response:
    """One-click unsubscribe: turn this category's email off for the link's user."""
    user_id, category = _unsubscribe_claims(request)
    done = {"unsubscribed": {"category": category, "channel": "email"}}
    known = await request.app[keys.DIRECTORY].get(user_id)
    if known is not None and known.deleted:
        return json_response(done)  # erased: nothing is sent, and nothing is stored again
    store = request.app[keys.PREFERENCES]
    for _ in range(_SAVE_ATTEMPTS):
        current = await store.get(user_id)
        try:
            await store.save(current.changed({category: {"email": False}}))
        except PreferencesConflict:
            continue
        return json_response(done)
    raise Problem(409, "The preferences changed while saving; try again.", slug="conflict")


# -- role broadcasts (admin) -------------------------------------------------------------------


class BroadcastRequest(RequestModel):
    role: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")
    category: Category
    title: str = Field(min_length=1, max_length=120)
    body: str = Field(min_length=1, max_length=1000)


def broadcast_view(broadcast: Broadcast) -> dict[str, Any]:
    return {
        "id": broadcast.id,
        "role": broadcast.role,
        "category": broadcast.category,
        "title": broadcast.title,
        "body": broadcast.body,
        "status": broadcast.status,
        "batches_done": broadcast.batches_done,
        "recipients": broadcast.recipients,
        "created_at": format_time(broadcast.created_at),
    }


@require_roles("admin")
async def create_broadcast(request: web.Request) -> web.Response:
    """In-app + push to every user with ``role``, fanned out in batches through the bus."""
    identity = current_identity(request)
    body = await read_json(request, BroadcastRequest)
    broadcast = await request.app[keys.BROADCASTS].create(
        role=body.role,
        category=body.category,
        title=body.title,
        body=body.body,
        requested_by=identity.user_id,
    )
    request.app[shared_keys.OUTBOX_RELAY].notify()
    return json_response(broadcast_view(broadcast), status=202)


@require_roles("admin")
async def get_broadcast(request: web.Request) -> web.Response:
    """A broadcast's progress (batches done, recipients so far; per-user records in
    ``/deliveries``)."""
    found = await request.app[keys.BROADCASTS].get(request.match_info["id"])
    if found is None:
        raise Problem(404, "No such broadcast.", slug="not-found")
    return json_response(broadcast_view(found))


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/deliveries", list_deliveries)
    app.router.add_get(f"{PREFIX}/preferences", get_preferences)
    app.router.add_put(f"{PREFIX}/preferences", put_preferences)
    app.router.add_post(f"{PREFIX}/devices", register_device)
    app.router.add_get(f"{PREFIX}/devices", list_devices)
    app.router.add_delete(f"{PREFIX}/devices/{{token}}", delete_device)
    app.router.add_get(PREFIX, list_inbox)
    app.router.add_post(f"{PREFIX}/read-all", read_all)
    app.router.add_post(f"{PREFIX}/{{id:ntf_[0-9a-f]{{28}}}}/read", read_item)
    app.router.add_get(f"{PREFIX}/mutes", list_mutes)
    app.router.add_put(f"{PREFIX}/mutes/{{conversation_id}}", mute)
    app.router.add_delete(f"{PREFIX}/mutes/{{conversation_id}}", unmute)
    app.router.add_post(f"{PREFIX}/broadcast", create_broadcast)
    app.router.add_get(f"{PREFIX}/broadcasts/{{id}}", get_broadcast)
    app.router.add_get(f"{PREFIX}/unsubscribe", unsubscribe_page)
    app.router.add_post(f"{PREFIX}/unsubscribe", unsubscribe)
    app.router.add_post(f"{PREFIX}/webhooks", create_webhook)
    app.router.add_get(f"{PREFIX}/webhooks", list_webhooks)
    app.router.add_get(f"{PREFIX}/webhooks/{{id}}", get_webhook)
    app.router.add_delete(f"{PREFIX}/webhooks/{{id}}", delete_webhook)
    app.router.add_get(f"{PREFIX}/webhooks/{{id}}/deliveries", list_webhook_deliveries)
    app.router.add_post(f"{PREFIX}/webhooks/{{id}}/deliveries/{{delivery_id}}/redeliver", redeliver)
