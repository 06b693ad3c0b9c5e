"""Codes, refresh tokens and users: the pure rules."""

from __future__ import annotations

from datetime import UTC, datetime

from auth_svc.domain import codes, sessions
from auth_svc.domain.users import User, UserStatus, deleted_email, new_user_id, normalise_email


def test_codes_are_six_digits_and_hashed_with_salt() -> None:
    generated = {codes.new_code() for _ in range(200)}
    assert all(len(code) == 6 and code.isdigit() for code in generated)
    assert len(generated) > 150  # random, not a counter
    salt = codes.new_salt()
    digest = codes.hash_code("123456", salt)
    assert "123456" not in digest
    assert codes.code_matches("123456", salt, digest)
    assert not codes.code_matches("123457", salt, digest)
    assert codes.hash_code("123456", codes.new_salt()) != digest
    assert codes.code_key("u1", "verify_email") == "u1:verify_email"


def test_refresh_tokens() -> None:
    family = sessions.new_family_id()
    token = sessions.new_refresh_token(family)
    assert sessions.family_of(token) == family
    assert len(token.split(".", 1)[1]) >= 43  # 32 bytes of randomness, base64url
    assert sessions.new_refresh_token(family) != token
    assert sessions.hash_refresh_token(token) != token
    for junk in ("", "abc", "x" * 32 + ".short", "z" * 32 + "." + "a" * 43, family):
        assert sessions.family_of(junk) is None


def test_users() -> None:
    assert normalise_email("  Dana.Example@EXAMPLE.com ") == "dana.example@example.com"
    first, second = new_user_id(), new_user_id()
    assert first != second and len(first) == 32
    assert deleted_email("u1") == "deleted:u1"
    now = datetime(2026, 1, 1, 12, 0, 0, 500000, tzinfo=UTC)
    user = User(
        "u1",
        "a@example.com",
        "A",
        ("customer",),
        UserStatus.ACTIVE,
        "h",
        now,
        now,
        sessions_revoked_at=now,
    )
    assert user.token_predates_revocation(now.timestamp() - 5)
    assert not user.token_predates_revocation(int(now.timestamp()))
    assert "password_hash" not in user.public()
