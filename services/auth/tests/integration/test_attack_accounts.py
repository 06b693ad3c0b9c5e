"""Attacks on accounts themselves, through the real gateway (issue 11, items 4 and 11).

- Pre-hijacking: an attacker registered the victim's email first; the victim's own sign-up
  got 409, they verified with a resent code, and the attacker's password still opened the
  now verified account.
- The admin bootstrap kept a squatter's name and roles; DELETE /me needed only a token;
  full-width look-alike addresses made second accounts; display names took bidi overrides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from auth_svc.app import create_app
from switchyard import keys

from .conftest import STRONG_PASSWORD, AuthClient, auth_settings_for, settle

pytestmark = pytest.mark.integration

ATTACKER_PASSWORD = "mallory-owns-this-88-pier"
VICTIM_PASSWORD = "victim-chose-this-47-harbour"
NEW_PASSWORD = "amber-thistle-62-copper-gate"


async def code_for_account(client: AuthClient, user_id: str) -> str:
    """The verification code mailed for this very account (a replaced one had its own)."""
    sent = await client.events.wait_for("auth.otp.requested", lambda d: d.user_id == user_id)
    return str(sent.data.code)


async def test_a_pre_registration_does_not_hijack_the_account(edge: AuthClient) -> None:
    email = "victim@example.com"
    squat = await edge.register(email, ATTACKER_PASSWORD, "Mallory", role="contractor")
    assert squat.status == 201
    own = await edge.register(email, VICTIM_PASSWORD, "Victoria")
    # Answered exactly like a new registration: the pending account is replaced.
    assert own.status == 201, own.body
    assert set(own.body) == set(squat.body)
    assert own.body["display_name"] == "Victoria" and own.body["roles"] == ["customer"]
    assert own.body["status"] == "pending_verification"
    assert own.body["id"] != squat.body["id"]
    await edge.events.wait_for("auth.user.deleted", lambda d: d.user_id == squat.body["id"])

    code = await code_for_account(edge, own.body["id"])
    verified = await edge.post("/verify-email", {"email": email, "code": code})
    assert verified.status == 200
    me = await edge.call("GET", "/me", token=verified.body["access_token"])
    assert me.body["display_name"] == "Victoria" and me.body["roles"] == ["customer"]
    # The attacker's password opens nothing.
    assert (await edge.login(email, ATTACKER_PASSWORD)).status == 401


async def test_the_last_registrant_cannot_plant_a_password_either(edge: AuthClient) -> None:
    """The victim signs up first, the attacker re-registers after: the code goes to the victim,
    who cannot tell whose sign-up it confirms. Verifying a contested sign-up activates no
    password at all; the owner sets one with a reset code (or signs in by code)."""
    email = "first.come@example.com"
    assert (await edge.register(email, VICTIM_PASSWORD, "Victoria")).status == 201
    planted = await edge.register(email, ATTACKER_PASSWORD, "Mallory")
    assert planted.status == 201
    code = await code_for_account(edge, planted.body["id"])
    verified = await edge.post("/verify-email", {"email": email, "code": code})
    assert verified.status == 200
    assert (await edge.login(email, ATTACKER_PASSWORD)).status == 401
    assert (await edge.login(email, VICTIM_PASSWORD)).status == 401

    assert (await edge.post("/password/forgot", {"email": email})).status == 202
    await settle(edge)
    reset_code = await edge.events.code_for(email, "reset_password")
    body = {"email": email, "code": reset_code, "new_password": NEW_PASSWORD}
    assert (await edge.post("/password/reset", body)).status == 204
    assert (await edge.login(email, NEW_PASSWORD)).status == 200


async def test_registering_twice_with_the_same_password_is_not_a_contest(edge: AuthClient) -> None:
    email = "twice@example.com"
    assert (await edge.register(email, VICTIM_PASSWORD, "Typo Nmae")).status == 201
    again = await edge.register(email, VICTIM_PASSWORD, "Typo Name")
    assert again.status == 201
    code = await code_for_account(edge, again.body["id"])
    assert (await edge.post("/verify-email", {"email": email, "code": code})).status == 200
    assert (await edge.login(email, VICTIM_PASSWORD)).status == 200


async def test_a_verified_email_is_still_taken(edge: AuthClient) -> None:
    """The documented trade-off: registering a verified address answers 409."""
    email = "taken@example.com"
    await edge.signed_up(email)
    reply = await edge.register(email, ATTACKER_PASSWORD)
    assert reply.status == 409 and reply.body["type"].endswith("/email-taken")


async def test_lookalike_addresses_are_one_account(edge: AuthClient) -> None:
    await edge.signed_up("uni@example.com")
    for lookalike in ("ｕni@example.com", "UNI@example.com", "ＵＮＩ@EXAMPLE.COM"):
        reply = await edge.register(lookalike, ATTACKER_PASSWORD)
        assert reply.status == 409, (lookalike, reply.body)
    assert (await edge.login("ｕｎｉ@example.com")).status == 200


async def test_display_names_refuse_controls_and_bidi_overrides(edge: AuthClient) -> None:
    for name in ("Bob\u202egnp.exe", "\u2066Eve\u2069", "Zero\u200bWidth", "Tab\tName"):
        reply = await edge.register("names@example.com", STRONG_PASSWORD, name)
        assert reply.status == 422, (repr(name), reply.body)
        assert {e["location"] for e in reply.body["errors"]} == {"/display_name"}
    pair = await edge.signed_up("names@example.com")
    bad = await edge.call(
        "PATCH", "/me", {"display_name": "Admin\u202e"}, token=pair["access_token"]
    )
    assert bad.status == 422
    # Joiners that real names and emoji need stay allowed.
    for fine in ("👩\u200d💻 Dana", "Mehr\u200cdad"):
        ok = await edge.call("PATCH", "/me", {"display_name": fine}, token=pair["access_token"])
        assert ok.status == 200, (repr(fine), ok.body)


async def test_deleting_the_account_needs_the_password(edge: AuthClient) -> None:
    email = "leaving@example.com"
    pair = await edge.signed_up(email)
    token = pair["access_token"]
    assert (await edge.call("DELETE", "/me", token=token)).status in (400, 415, 422)
    wrong = await edge.call("DELETE", "/me", {"password": "not-my-password-1"}, token=token)
    assert wrong.status == 403 and wrong.body["type"].endswith("/wrong-password")
    assert (await edge.call("GET", "/me", token=token)).status == 200
    gone = await edge.call("DELETE", "/me", {"password": STRONG_PASSWORD}, token=token)
    assert gone.status == 204
    assert (await edge.login(email)).status == 401


ADMIN_EMAIL = "operator@example.com"
ADMIN_PASSWORD = "quartz-meadow-81-lantern-sail"


async def test_the_admin_bootstrap_resets_a_squatters_name_and_roles(
    edge: AuthClient,
    settings_overrides: dict[str, Any],
    start_app: Any,
    tmp_path: Path,
) -> None:
    squat = await edge.register(ADMIN_EMAIL, ATTACKER_PASSWORD, "Mallory", role="contractor")
    assert squat.status == 201
    # A second replica starts with the bootstrap settings on the same store.
    settings = auth_settings_for(
        settings_overrides,
        tmp_path / "keys",
        admin_email=ADMIN_EMAIL,
        admin_password=ADMIN_PASSWORD,
        admin_display_name="Operator",
    )
    await start_app(create_app(settings, clock=edge.clock))

    login = await edge.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    assert login.status == 200, login.body
    me = (await edge.call("GET", "/me", token=login.body["access_token"])).body
    assert me["display_name"] == "Operator"
    assert me["roles"] == ["admin"]
    assert (await edge.login(ADMIN_EMAIL, ATTACKER_PASSWORD)).status == 401


async def test_existing_addresses_get_the_comparison_key(
    edge: AuthClient, settings_overrides: dict[str, Any], start_app: Any, tmp_path: Path
) -> None:
    """Accounts stored before addresses were NFKC-normalised and case-folded (no comparison
    key) are given one when a replica starts: they still sign in, their look-alikes are refused."""
    await edge.signed_up("legacy@example.com")
    users = edge.app[keys.MONGO_DB]["users"]
    await users.update_many({}, {"$unset": {"email_key": ""}})
    settings = auth_settings_for(settings_overrides, tmp_path / "keys")
    await start_app(create_app(settings, clock=edge.clock))

    assert (await edge.login("ＬＥＧＡＣＹ@example.com")).status == 200
    assert (await edge.register("ｌegacy@example.com", ATTACKER_PASSWORD)).status == 409
