"""Forged refresh tokens, through the real gateway (issue 11, item 6).

Refresh tokens read ``<family id>.<secret>`` and every access token carries ``sid`` = the
family id: anyone who saw an access token could send ``<sid>.anything`` and have the
victim's session revoked as a "reuse", with a security email to boot.
"""

from __future__ import annotations

import secrets

import pytest

from .conftest import AuthClient, metric, token_claims

pytestmark = pytest.mark.integration


async def test_a_forged_token_for_a_known_session_changes_nothing(
    edge: AuthClient, auth: AuthClient
) -> None:
    pair = await edge.signed_up("forged@example.com")
    sid = token_claims(pair["access_token"])["sid"]
    for _ in range(3):
        forged = f"{sid}.{secrets.token_urlsafe(32)}"
        reply = await edge.post("/refresh", {"refresh_token": forged})
        assert reply.status == 401
        assert reply.body["type"].endswith("/invalid-refresh-token")
    # The victim's session lives on.
    rotated = await edge.post("/refresh", {"refresh_token": pair["refresh_token"]})
    assert rotated.status == 200
    assert (await edge.call("GET", "/me", token=rotated.body["access_token"])).status == 200
    assert not edge.events.of_type("auth.session.reuse_detected")
    assert not edge.events.of_type("auth.session.revoked")
    assert metric(auth, "auth_refresh_reuse_detected_total") == 0
    assert metric(auth, "auth_token_refreshes_total", outcome="invalid") == 3


async def test_a_token_the_family_really_rotated_is_still_a_reuse(edge: AuthClient) -> None:
    pair = await edge.signed_up("stolen@example.com")
    first = await edge.post("/refresh", {"refresh_token": pair["refresh_token"]})
    second = await edge.post("/refresh", {"refresh_token": first.body["refresh_token"]})
    assert second.status == 200
    # The thief replays the first rotated token: the whole family ends, the owner is told.
    replay = await edge.post("/refresh", {"refresh_token": first.body["refresh_token"]})
    assert replay.status == 401
    sid = token_claims(pair["access_token"])["sid"]
    await edge.events.wait_for("auth.session.reuse_detected", lambda d: d.family_id == sid)
    current = await edge.post("/refresh", {"refresh_token": second.body["refresh_token"]})
    assert current.status == 401
