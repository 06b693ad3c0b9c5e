"""Downloads through the gateway: ranges, revalidation, safe headers, no existence leak to
other users, and share links that work without a token until they should not."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest

from file_svc.domain.links import LinkSigner

from ..conftest import URL_SECRET, Stack
from ..support import generated, generated_bytes, png

pytestmark = pytest.mark.integration

SIZE = 300_000


async def uploaded(stack: Stack, token: str, data_size: int = SIZE) -> str:
    reply = await stack.api.upload(generated(data_size), "report.pdf", token=token)
    assert reply.status == 201, reply.body
    return str(reply.json()["id"])


async def test_single_ranges_are_served_as_206_and_past_the_end_is_416(stack: Stack) -> None:
    token = stack.token("u-ada")
    file_id = await uploaded(stack, token)
    data = generated_bytes(SIZE)
    for header, start, end in (
        ("bytes=0-99", 0, 99),  # the first bytes
        ("bytes=100000-199999", 100_000, 199_999),  # the middle
        ("bytes=-100", SIZE - 100, SIZE - 1),  # the suffix
        ("bytes=299000-", 299_000, SIZE - 1),  # to the end
        ("bytes=299990-400000", 299_990, SIZE - 1),  # clamped to the end
    ):
        reply = await stack.api.content(file_id, token=token, headers={"Range": header})
        assert reply.status == 206, (header, reply.body[:200])
        assert reply.body == data[start : end + 1], header
        assert reply.headers["Content-Range"] == f"bytes {start}-{end}/{SIZE}"
        assert int(reply.headers["Content-Length"]) == end - start + 1
    past = await stack.api.content(file_id, token=token, headers={"Range": f"bytes={SIZE}-"})
    assert past.status == 416 and past.headers["Content-Range"] == f"bytes */{SIZE}"
    assert past.json()["type"].endswith("/range-not-satisfiable")
    for ignored in ("bytes=0-1,5-6", "bytes=abc", "items=0-1", "bytes=10-5"):
        whole = await stack.api.content(file_id, token=token, headers={"Range": ignored})
        assert whole.status == 200 and whole.body == data, ignored
    stale = await stack.api.content(
        file_id, token=token, headers={"Range": "bytes=0-9", "If-Range": '"outdated"'}
    )
    assert stale.status == 200 and len(stale.body) == SIZE


async def test_etag_revalidation_and_the_headers_of_a_download(stack: Stack) -> None:
    token = stack.token("u-ada")
    file_id = await uploaded(stack, token)
    first = await stack.api.content(file_id, token=token)
    etag = first.headers["ETag"]
    assert (
        etag.strip('"')
        == (await stack.api.request("GET", f"/api/v1/files/{file_id}", token=token)).json()[
            "sha256"
        ]
    )
    for candidate in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = await stack.api.content(file_id, token=token, headers={"If-None-Match": candidate})
        assert again.status == 304 and again.body == b"" and again.headers["ETag"] == etag
    changed = await stack.api.content(file_id, token=token, headers={"If-None-Match": '"nope"'})
    assert changed.status == 200
    headers = first.headers
    assert headers["Content-Type"] == "application/pdf"
    assert headers["X-Content-Type-Options"] == "nosniff"
    # The service's policy survives the gateway (which adds its own only when none is set).
    assert headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert headers["Content-Disposition"].startswith('attachment; filename="report.pdf"')
    assert headers["Accept-Ranges"] == "bytes"

    named = await stack.api.upload(b"hi\n", 'Grüße "x".txt', token=token)
    reply = await stack.api.content(named.json()["id"], token=token)
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert reply.headers["Content-Disposition"] == (
        "attachment; filename=\"Gru_e _x_.txt\"; filename*=UTF-8''Gr%C3%BC%C3%9Fe%20%22x%22.txt"
    )
    image = await stack.api.upload(png(), "me.png", token=token)
    shown = await stack.api.content(image.json()["id"], token=token)
    assert shown.headers["Content-Disposition"].startswith("inline;")
    assert "sandbox" in shown.headers["Content-Security-Policy"]
    head = await stack.api.request("HEAD", f"/api/v1/files/{file_id}/content", token=token)
    assert head.status == 200 and head.body == b"" and head.headers["Content-Length"] == str(SIZE)


async def test_other_users_get_404_everywhere_as_for_a_missing_file(stack: Stack) -> None:
    ada, eve = stack.token("u-ada"), stack.token("u-eve")
    created = await stack.api.upload(png(300, 300), "me.png", token=ada)
    file_id = created.json()["id"]
    missing = "f_" + "0" * 32
    for target in (file_id, missing, "not-an-id"):
        for method, path, body in (
            ("GET", f"/api/v1/files/{target}", None),
            ("GET", f"/api/v1/files/{target}/content", None),
            ("GET", f"/api/v1/files/{target}/thumbnail?size=64", None),
            ("POST", f"/api/v1/files/{target}/share", {"expires_in": 60}),
            ("DELETE", f"/api/v1/files/{target}", None),
        ):
            reply = await stack.api.request(method, path, token=eve, json=body)
            assert reply.status == 404, (method, path, reply.status)
            assert reply.json()["type"].endswith("/not-found")
    no_token = await stack.api.content(file_id)
    assert no_token.status == 401
    assert (await stack.api.content(file_id, token=ada)).status == 200


async def test_share_links_work_without_a_token_until_they_expire(stack: Stack) -> None:
    ada = stack.token("u-ada")
    file_id = await uploaded(stack, ada)
    data = generated_bytes(SIZE)
    shared = await stack.api.request(
        "POST", f"/api/v1/files/{file_id}/share", token=ada, json={"expires_in": 3600}
    )
    assert shared.status == 200, shared.body
    link = shared.json()
    path = urlsplit(link["url"])
    assert path.path == f"/api/v1/files/{file_id}/content"
    query = parse_qs(path.query)
    assert set(query) == {"expires", "signature"}
    assert abs(int(query["expires"][0]) - (time.time() + 3600)) < 60
    assert link["expires_at"].endswith("Z")

    anonymous = await stack.api.request("GET", link["url"])
    assert anonymous.status == 200 and anonymous.body == data
    ranged = await stack.api.request("GET", link["url"], headers={"Range": "bytes=-10"})
    assert ranged.status == 206 and ranged.body == data[-10:]

    signature = query["signature"][0]
    tampered_sig = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    expires = query["expires"][0]
    for url in (
        f"/api/v1/files/{file_id}/content?expires={expires}&signature={tampered_sig}",
        f"/api/v1/files/{file_id}/content?expires={int(expires) + 60}&signature={signature}",
        f"/api/v1/files/{'f_' + '1' * 32}/content?expires={expires}&signature={signature}",
        f"/api/v1/files/{file_id}/content?expires=soon&signature={signature}",
    ):
        refused = await stack.api.request("GET", url)
        assert refused.status == 403, url
        assert refused.json()["type"].endswith("/invalid-link")

    past = int(time.time()) - 5
    expired_sig = LinkSigner([URL_SECRET.encode()]).signature(file_id, past)
    expired = await stack.api.request(
        "GET", f"/api/v1/files/{file_id}/content?expires={past}&signature={expired_sig}"
    )
    assert expired.status == 403 and expired.json()["type"].endswith("/link-expired")

    too_long = await stack.api.request(
        "POST", f"/api/v1/files/{file_id}/share", token=ada, json={"expires_in": 7 * 86400 + 1}
    )
    assert too_long.status == 422
    bad_json = await stack.api.request(
        "POST",
        f"/api/v1/files/{file_id}/share",
        token=ada,
        data=b"{",
        headers={"Content-Type": "application/json"},
    )
    assert bad_json.status == 400


async def test_links_signed_before_a_secret_rotation_stay_valid(start_stack: object) -> None:
    old = await start_stack()  # type: ignore[operator]
    ada = old.token("u-ada")
    file_id = await uploaded(old, ada)
    link = (
        await old.api.request(
            "POST", f"/api/v1/files/{file_id}/share", token=ada, json={"expires_in": 600}
        )
    ).json()["url"]
    new_secret = "rotated-file-url-secret-abcdefghijklmnop"
    rotated = await start_stack(url_secrets=f"{new_secret},{URL_SECRET}")  # type: ignore[operator]
    assert (await rotated.api.request("GET", link)).status == 200
    fresh = (
        await rotated.api.request(
            "POST", f"/api/v1/files/{file_id}/share", token=ada, json={"expires_in": 600}
        )
    ).json()["url"]
    assert (await rotated.api.request("GET", fresh)).status == 200
    assert (await old.api.request("GET", fresh)).status == 403  # the old key alone does not know it
    retired = await start_stack(url_secrets=new_secret)  # type: ignore[operator]
    assert (await retired.api.request("GET", link)).status == 403
