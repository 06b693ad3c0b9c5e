"""A file's life on the bus and in storage: file.uploaded on upload, delete → 404 at once
and the blob gone after the sweep, a deleted account's files deleted, chat recipients
reading attachments. Events through the outbox, on the real broker."""

from __future__ import annotations

import pytest

from file_svc.domain.files import blob_key, thumbnail_key
from switchyard.envelope import new_envelope, utcnow
from switchyard.events.auth import UserDeleted
from switchyard.events.chat import MessageDeleted, MessageSent
from switchyard.testing import eventually
from switchyard.testing.events import EventTap

from ..conftest import Stack, stored_objects
from ..support import png

pytestmark = pytest.mark.integration


async def test_upload_and_delete_publish_events_and_the_sweep_removes_the_blob(
    stack: Stack, file_events: EventTap
) -> None:
    token = stack.token("u-ada")
    created = await stack.api.upload(png(600, 400), "me.png", token=token, purpose="avatar")
    meta = created.json()
    file_id = meta["id"]
    [uploaded] = await file_events.wait_for("file.uploaded")
    assert uploaded["data"] == {
        "file_id": file_id,
        "owner_id": "u-ada",
        "purpose": "avatar",
        "content_type": "image/png",
        "size": meta["size"],
        "sha256": meta["sha256"],
        "filename": "me.png",
        "uploaded_at": uploaded["data"]["uploaded_at"],
    }
    assert uploaded["source"] == "/switchyard/file" and uploaded["subject"] == file_id
    thumb = await stack.api.request(
        "GET", f"/api/v1/files/{file_id}/thumbnail?size=64", token=token
    )
    assert thumb.status == 200
    assert {blob_key(file_id), thumbnail_key(file_id, 64)} <= await stored_objects(stack.deps)

    deleted = await stack.api.request("DELETE", f"/api/v1/files/{file_id}", token=token)
    assert deleted.status == 204
    for path in (f"/api/v1/files/{file_id}", f"/api/v1/files/{file_id}/content"):
        assert (await stack.api.request("GET", path, token=token)).status == 404
    again = await stack.api.request("DELETE", f"/api/v1/files/{file_id}", token=token)
    assert again.status == 404
    [gone] = await file_events.wait_for("file.deleted")
    assert gone["data"]["file_id"] == file_id and gone["data"]["sha256"] == meta["sha256"]
    assert blob_key(file_id) in await stored_objects(stack.deps)  # soft delete: blob kept ...

    report = await stack.sweep()
    assert report.deleted == 1
    assert await stored_objects(stack.deps) == set()  # ... until the sweeper removes it
    record = await stack.deps.records.collection.find_one({"_id": file_id})
    assert record["status"] == "purged"
    assert (await stack.sweep()).deleted == 0
    assert stack.deps.metrics.value("file_swept_total", kind="deleted") == 1


async def test_a_deleted_account_loses_every_file(
    stack: Stack, publish, file_events: EventTap
) -> None:  # type: ignore[no-untyped-def]
    ada, grace = stack.token("u-ada"), stack.token("u-grace")
    ids = [
        (await stack.api.upload(f"note {n}\n".encode(), f"n{n}.txt", token=ada)).json()["id"]
        for n in range(3)
    ]
    kept = (await stack.api.upload(b"mine\n", "g.txt", token=grace)).json()["id"]
    await publish(new_envelope(UserDeleted(user_id="u-ada", deleted_at=utcnow()), service="auth"))
    await file_events.wait_for("file.deleted", count=3)
    assert {e["data"]["file_id"] for e in file_events.of("file.deleted")} == set(ids)
    for file_id in ids:
        assert (await stack.api.content(file_id, token=ada)).status == 404
    assert (await stack.api.content(kept, token=grace)).status == 200
    await stack.sweep()
    assert await stored_objects(stack.deps) == {blob_key(kept)}
    refused = await stack.api.upload(b"late\n", "late.txt", token=ada)  # token still valid
    assert refused.status == 403 and refused.json()["type"].endswith("/account-deleted")


async def test_chat_recipients_may_read_attachments_until_the_message_is_deleted(
    stack: Stack,
    publish,  # type: ignore[no-untyped-def]
) -> None:
    ada, grace, eve = stack.token("u-ada"), stack.token("u-grace"), stack.token("u-eve")
    photo = (await stack.api.upload(png(400, 300), "photo.png", token=ada)).json()["id"]
    foreign = (await stack.api.upload(b"eve's\n", "eve.txt", token=eve)).json()["id"]
    await publish(
        new_envelope(
            MessageSent(
                message_id="m1",
                conversation_id="c1",
                seq=1,
                sender_id="u-ada",
                recipient_ids=["u-grace"],
                offline_recipient_ids=[],
                preview="look",
                attachment_ids=[photo, foreign, "f_" + "9" * 32, "junk"],
                sent_at=utcnow(),
            ),
            service="chat",
        )
    )

    async def granted() -> bool:
        return (await stack.api.content(photo, token=grace)).status == 200

    await eventually(granted)
    meta = await stack.api.request("GET", f"/api/v1/files/{photo}", token=grace)
    assert meta.status == 200 and meta.json()["owner_id"] == "u-ada"
    thumb = await stack.api.request("GET", f"/api/v1/files/{photo}/thumbnail?size=64", token=grace)
    assert thumb.status == 200
    # A recipient reads, but neither shares nor deletes; others see nothing.
    share = await stack.api.request(
        "POST", f"/api/v1/files/{photo}/share", token=grace, json={"expires_in": 60}
    )
    assert share.status == 404
    assert (await stack.api.request("DELETE", f"/api/v1/files/{photo}", token=grace)).status == 404
    assert (await stack.api.content(photo, token=eve)).status == 404
    # Attaching someone else's file grants nothing.
    assert (await stack.api.content(foreign, token=grace)).status == 404

    await publish(
        new_envelope(
            MessageDeleted(
                message_id="m1", conversation_id="c1", seq=1, sender_id="u-ada", deleted_at=utcnow()
            ),
            service="chat",
        )
    )

    async def revoked() -> bool:
        return (await stack.api.content(photo, token=grace)).status == 404

    await eventually(revoked)
    assert (await stack.api.content(photo, token=ada)).status == 200


async def test_own_files_are_listed_newest_first_with_a_cursor(stack: Stack) -> None:
    ada = stack.token("u-ada")
    ids = [
        (await stack.api.upload(f"{n}\n".encode(), f"{n}.txt", token=ada)).json()["id"]
        for n in range(5)
    ]
    await stack.api.upload(b"x\n", "other.txt", token=stack.token("u-grace"))
    first = (await stack.api.request("GET", "/api/v1/files?limit=3", token=ada)).json()
    assert [i["id"] for i in first["items"]] == ids[::-1][:3]
    second = (
        await stack.api.request(
            "GET", f"/api/v1/files?limit=3&cursor={first['next_cursor']}", token=ada
        )
    ).json()
    assert [i["id"] for i in second["items"]] == ids[::-1][3:] and second["next_cursor"] is None
    bad = await stack.api.request("GET", "/api/v1/files?cursor=bogus", token=ada)
    assert bad.status == 400
