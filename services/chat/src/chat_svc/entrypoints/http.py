"""REST routes under ``/api/v1/chat`` (DESIGN §5 chat); the same commands as the sockets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

from aiohttp import web
from pydantic import Field

from chat_svc import keys
from chat_svc.domain.errors import ChatError
from chat_svc.handlers import conversations, messages
from switchyard.authn import current_identity, require_auth
from switchyard.pagination import PageQuery, page, read_cursor
from switchyard.problems import Problem
from switchyard.sockets.chat import AttachmentId
from switchyard.web import RequestModel, json_response, read_json, read_query

PREFIX = "/api/v1/chat"
_ID = r"{id:[A-Za-z0-9_-]{1,100}}"
_MESSAGE = r"{message_id:[A-Za-z0-9_-]{1,100}}"
_USER = r"{user_id:[A-Za-z0-9_.:@-]{1,128}}"
UserId = Field(min_length=1, max_length=128)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CreateConversation(RequestModel):
    kind: Literal["direct", "group"]
    member_ids: list[str] = Field(min_length=1, max_length=500)
    title: str | None = Field(None, min_length=1, max_length=200)


class SendBody(RequestModel):
    body: str = Field(max_length=40_000)
    client_msg_id: str = Field(min_length=1, max_length=128)
    attachments: list[AttachmentId] = Field(default_factory=list, max_length=50)


class EditBody(RequestModel):
    body: str = Field(max_length=40_000)


class ReadBody(RequestModel):
    seq: int = Field(ge=1, le=2**62)


class MemberBody(RequestModel):
    user_id: str = UserId


class MuteBody(RequestModel):
    muted: bool


class HistoryQuery(PageQuery):
    before_seq: int | None = Field(None, ge=1, le=2**62)


def chat_errors(handler: Handler) -> Handler:
    """A refusal of the domain becomes problem+json with its slug."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ChatError as error:
            raise Problem(error.status, error.message, slug=error.code) from None

    wrapper.__name__ = handler.__name__
    wrapper.__doc__ = handler.__doc__
    return wrapper


@require_auth
@chat_errors
async def create_conversation(request: web.Request) -> web.Response:
    body = await read_json(request, CreateConversation)
    user = current_identity(request).user_id
    conversation, created = await conversations.create_conversation(
        chat=request.app[keys.CHAT],
        user_id=user,
        kind=body.kind,
        member_ids=[str(m) for m in body.member_ids],
        title=body.title,
    )
    view = await conversations.conversation_view(
        chat=request.app[keys.CHAT], user_id=user, conversation_id=conversation.id
    )
    return json_response(view, status=201 if created else 200)


@require_auth
@chat_errors
async def list_conversations(request: web.Request) -> web.Response:
    query = read_query(request, PageQuery)
    position = read_cursor(query.cursor, after=str)
    items, after = await conversations.list_conversations(
        chat=request.app[keys.CHAT],
        user_id=current_identity(request).user_id,
        after=position["after"] if position else None,
        limit=query.limit,
    )
    return json_response(page(items, {"after": after} if after else None))


@require_auth
@chat_errors
async def get_conversation(request: web.Request) -> web.Response:
    return json_response(
        await conversations.conversation_view(
            chat=request.app[keys.CHAT],
            user_id=current_identity(request).user_id,
            conversation_id=request.match_info["id"],
        )
    )


@require_auth
@chat_errors
async def history(request: web.Request) -> web.Response:
    query = read_query(request, HistoryQuery)
    position = read_cursor(query.cursor, before_seq=int)
    before = position["before_seq"] if position else query.before_seq
    items, next_before = await messages.history(
        chat=request.app[keys.CHAT],
        user_id=current_identity(request).user_id,
        conversation_id=request.match_info["id"],
        before_seq=before,
        limit=query.limit,
    )
    return json_response(page(items, {"before_seq": next_before} if next_before else None))


@require_auth
@chat_errors
async def send_message(request: web.Request) -> web.Response:
    body = await read_json(request, SendBody)
    sent = await messages.send_message(
        chat=request.app[keys.CHAT],
        user_id=current_identity(request).user_id,
        conversation_id=request.match_info["id"],
        body=body.body,
        client_msg_id=body.client_msg_id,
        attachments=body.attachments,
    )
    return json_response({"message": sent.message.view()}, status=201 if sent.created else 200)


@require_auth
@chat_errors
async def edit_message(request: web.Request) -> web.Response:
    body = await read_json(request, EditBody)
    view = await messages.edit_message(
        chat=request.app[keys.CHAT],
        user_id=current_identity(request).user_id,
        conversation_id=request.match_info["id"],
        message_id=request.match_info["message_id"],
        body=body.body,
    )
    return json_response({"message": view})


@require_auth
@chat_errors
async def delete_message(request: web.Request) -> web.Response:
    await messages.delete_message(
        chat=request.app[keys.CHAT],
        user_id=current_identity(request).user_id,
        conversation_id=request.match_info["id"],
        message_id=request.match_info["message_id"],
    )
    return web.Response(status=204)


@require_auth
@chat_errors
async def mark_read(request: web.Request) -> web.Response:
    body = await read_json(request, ReadBody)
    return json_response(
        await messages.mark_read(
            chat=request.app[keys.CHAT],
            user_id=current_identity(request).user_id,
            conversation_id=request.match_info["id"],
            seq=body.seq,
        )
    )


@require_auth
@chat_errors
async def add_member(request: web.Request) -> web.Response:
    body = await read_json(request, MemberBody)
    return json_response(
        await conversations.add_member(
            chat=request.app[keys.CHAT],
            user_id=current_identity(request).user_id,
            conversation_id=request.match_info["id"],
            new_member=body.user_id,
        )
    )


@require_auth
@chat_errors
async def remove_member(request: web.Request) -> web.Response:
    await conversations.remove_member(
        chat=request.app[keys.CHAT],
        user_id=current_identity(request).user_id,
        conversation_id=request.match_info["id"],
        member=request.match_info["user_id"],
    )
    return web.Response(status=204)


@require_auth
@chat_errors
async def mute(request: web.Request) -> web.Response:
    body = await read_json(request, MuteBody)
    await conversations.set_muted(
        chat=request.app[keys.CHAT],
        user_id=current_identity(request).user_id,
        conversation_id=request.match_info["id"],
        muted=body.muted,
    )
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    base = f"{PREFIX}/conversations"
    app.router.add_get(base, list_conversations)
    app.router.add_post(base, create_conversation)
    app.router.add_get(f"{base}/{_ID}", get_conversation)
    app.router.add_get(f"{base}/{_ID}/messages", history)
    app.router.add_post(f"{base}/{_ID}/messages", send_message)
    app.router.add_patch(f"{base}/{_ID}/messages/{_MESSAGE}", edit_message)
    app.router.add_delete(f"{base}/{_ID}/messages/{_MESSAGE}", delete_message)
    app.router.add_post(f"{base}/{_ID}/read", mark_read)
    app.router.add_post(f"{base}/{_ID}/members", add_member)
    app.router.add_delete(f"{base}/{_ID}/members/{_USER}", remove_member)
    app.router.add_put(f"{base}/{_ID}/muted", mute)
