"""A file journey through the gateway, as a phone app makes it: sign up, upload a photo
that carries its GPS position, get it back without it, a thumbnail, a share link that
works without a token, then delete it. (Named to run after test_journeys.py.)"""

from __future__ import annotations

import asyncio
import io
import json
import re
import uuid
from typing import Any

import aiohttp
import pytest
from PIL import Image

pytestmark = pytest.mark.timeout(300)

PASSWORD = "copper-meadow-lantern-552"
CODE = re.compile(r"(?<!\d)(\d{6})(?!\d)")


async def send(
    client: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any, bytes]:
    """One call; a 429 is waited out once (Retry-After), as a well-behaved app does: the
    gateway allows 10 sign-up calls a minute per address and the other journeys use 9."""
    for _ in range(2):
        async with client.request(method, path, **kwargs) as response:
            body = await response.read()
            assert response.headers.get("X-Request-ID")
            if response.status != 429:
                return response.status, response.headers, body
            await asyncio.sleep(float(response.headers.get("Retry-After", "6")) + 0.5)
    raise AssertionError(f"{method} {path} still rate limited")


def photo_with_location() -> bytes:
    image = Image.new("RGB", (1200, 900), "teal")
    exif = Image.Exif()
    exif[0x0112] = 1
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


async def test_upload_a_photo_get_it_stripped_share_it_and_delete_it(suite, client) -> None:  # type: ignore[no-untyped-def]
    email = f"e2e-files-{uuid.uuid4().hex[:10]}@example.com"
    status, _, body = await send(
        client,
        "POST",
        "/api/v1/auth/register",
        json={"email": email, "password": PASSWORD, "display_name": "Lin"},
    )
    assert status == 201, body
    mail = await suite.mail(email, "verification code")
    code = CODE.findall(mail.text)[0]
    status, _, body = await send(
        client, "POST", "/api/v1/auth/verify-email", json={"email": email, "code": code}
    )
    assert status == 200, body
    auth = {"Authorization": "Bearer " + json.loads(body)["access_token"]}

    form = aiohttp.FormData()
    form.add_field("purpose", "avatar")
    form.add_field("file", photo_with_location(), filename="me.jpg", content_type="image/jpeg")
    status, headers, body = await send(client, "POST", "/api/v1/files", data=form, headers=auth)
    assert status == 201, body
    meta = json.loads(body)
    file_id = meta["id"]
    assert (
        meta["content_type"] == "image/jpeg" and headers["Location"] == f"/api/v1/files/{file_id}"
    )

    status, headers, content = await send(
        client, "GET", f"/api/v1/files/{file_id}/content", headers=auth
    )
    assert status == 200 and len(content) == meta["size"]
    with Image.open(io.BytesIO(content)) as image:
        assert image.size == (1200, 900) and not image.getexif()  # no GPS, no EXIF at all
    assert headers["X-Content-Type-Options"] == "nosniff"

    status, headers, thumb = await send(
        client, "GET", f"/api/v1/files/{file_id}/thumbnail?size=256", headers=auth
    )
    assert status == 200 and headers["Content-Type"] == "image/webp"
    with Image.open(io.BytesIO(thumb)) as image:
        assert image.size == (256, 192)

    status, _, body = await send(
        client, "POST", f"/api/v1/files/{file_id}/share", json={"expires_in": 600}, headers=auth
    )
    assert status == 200, body
    url = json.loads(body)["url"]
    status, _, shared = await send(client, "GET", url)  # no token
    assert status == 200 and shared == content
    status, _, tail = await send(client, "GET", url, headers={"Range": "bytes=-64"})
    assert status == 206 and tail == content[-64:]
    status, _, _ = await send(client, "GET", f"/api/v1/files/{file_id}/content")
    assert status == 401  # without the link's signature a token is needed

    status, _, _ = await send(client, "DELETE", f"/api/v1/files/{file_id}", headers=auth)
    assert status == 204
    for path in (f"/api/v1/files/{file_id}", url):
        status, _, _ = await send(client, "GET", path, headers=auth)
        assert status == 404
