"""Helpers of the chat tests: a running chat service (or several), users made known through
auth's events, sockets through the gateway, REST calls."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from chat_svc import keys
from chat_svc.handlers.common import Chat
from switchyard.bus import Bus
from switchyard.envelope import new_envelope, utcnow
from switchyard.events.auth import UserDeleted, UserRegistered
from switchyard.events.file import FileDeleted, FileUploaded
from switchyard.testing import AppServer, EventTap, JwksServer, eventually
from switchyard.testing.sockets import SocketClient

PREFIX = "/api/v1/chat"


def new_user_id() -> str:
    return "usr_" + uuid.uuid4().hex[:16]


@dataclass
class Response:
    status: int
    body: Any


@dataclass
class ChatReplica:
    app: web.Application
    server: AppServer

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def chat(self) -> Chat:
        return self.app[keys.CHAT]


@dataclass
class ChatWorld:
    """One or more chat replicas, the gateway in front, the events bus as auth/file."""

    replicas: list[ChatReplica]
    publisher: Bus
    keys_server: JwksServer
    http: aiohttp.ClientSession
    tap: EventTap
    gateway_url: str | None = None
    sockets: list[SocketClient] = field(default_factory=list)

    @property
    def chat(self) -> Chat:
        return self.replicas[0].chat

    @property
    def base(self) -> str:
        return self.gateway_url or self.replicas[0].url

    def token(self, uid: str) -> str:
        return self.keys_server.token(uid, ["customer"])

    async def user(self, uid: str | None = None, name: str = "Test User") -> str:
        """A user chat knows (auth.user.registered, then the directory has it)."""
        uid = uid or new_user_id()
        await self.publisher.publish(
            new_envelope(
                UserRegistered(
                    user_id=uid,
                    email=f"{uid}@example.com",
                    display_name=name,
                    roles=["customer"],
                    registered_at=utcnow(),
                ),
                service="auth",
            )
        )
        directory = self.chat.directory

        async def known() -> bool:
            return await directory.get(uid) is not None

        await eventually(known)
        return uid

    async def delete_user(self, uid: str) -> None:
        await self.publisher.publish(
            new_envelope(UserDeleted(user_id=uid, deleted_at=utcnow()), service="auth")
        )

    async def file(self, owner: str, *, deleted: bool = False) -> str:
        """A file ``owner`` uploaded (file.uploaded), and deleted when asked (file.deleted)."""
        file_id = "f_" + uuid.uuid4().hex
        facts: dict[str, Any] = {
            "file_id": file_id,
            "owner_id": owner,
            "purpose": "attachment",
            "content_type": "image/png",
            "size": 100,
            "sha256": "0" * 64,
        }
        await self.publisher.publish(
            new_envelope(
                FileUploaded(**facts, filename="a.png", uploaded_at=utcnow()), service="file"
            )
        )
        attachments = self.chat.attachments.collection

        async def recorded() -> bool:
            return await attachments.find_one({"_id": file_id}) is not None

        await eventually(recorded)
        if deleted:
            await self.delete_file(owner, file_id)
        return file_id

    async def delete_file(self, owner: str, file_id: str) -> None:
        await self.publisher.publish(
            new_envelope(
                FileDeleted(
                    file_id=file_id,
                    owner_id=owner,
                    purpose="attachment",
                    content_type="image/png",
                    size=100,
                    sha256="0" * 64,
                    deleted_at=utcnow(),
                ),
                service="file",
            )
        )
        attachments = self.chat.attachments.collection

        async def gone() -> bool:
            doc = await attachments.find_one({"_id": file_id})
            return bool(doc and doc.get("deleted"))

        await eventually(gone)

    async def call(
        self,
        method: str,
        path: str,
        *,
        uid: str | None = None,
        body: Any = None,
        base: str | None = None,
    ) -> Response:
        headers = {"Authorization": f"Bearer {self.token(uid)}"} if uid else {}
        url = (base or self.base) + PREFIX + path
        async with self.http.request(method, url, json=body, headers=headers) as response:
            raw = await response.read()
            parsed = json.loads(raw) if raw and "json" in response.content_type else raw
            return Response(response.status, parsed)

    async def direct(self, a: str, b: str) -> str:
        response = await self.call(
            "POST", "/conversations", uid=a, body={"kind": "direct", "member_ids": [b]}
        )
        assert response.status in (200, 201), response.body
        return str(response.body["id"])

    async def group(self, admin: str, members: list[str], title: str = "Team") -> str:
        response = await self.call(
            "POST",
            "/conversations",
            uid=admin,
            body={"kind": "group", "title": title, "member_ids": members},
        )
        assert response.status == 201, response.body
        return str(response.body["id"])

    async def socket(
        self,
        uid: str,
        *,
        url: str | None = None,
        client_ip: str | None = None,
        transports: list[str] | None = None,
        ack_events: bool = True,
        token: str | None = None,
    ) -> SocketClient:
        """A connected stock python-socketio client (through the gateway when there is one;
        ``client_ip`` picks the sticky replica behind it)."""
        headers = {"X-Forwarded-For": client_ip} if client_ip else {}
        client = SocketClient(
            url or self.base,
            token=token if token is not None else self.token(uid),
            headers=headers,
            ack_events=ack_events,
        )
        self.sockets.append(client)
        await client.connect(transports=transports)
        return client

    async def close(self) -> None:
        for client in self.sockets:
            await client.disconnect()
