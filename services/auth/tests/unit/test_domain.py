"""Codes, refresh tokens and users: the pure rules."""

from __future__ import annotations

from datetime import UTC, datetime

from auth_svc.domain import codes, sessions
from auth_svc.domain.passwords import STRENGTH_INPUT_LIMIT, strength_problem
from auth_svc.domain.users import (
    User,
    UserStatus,
    deleted_email,
    display_name_problem,
    email_key,
    new_user_id,
    normalise_email,
)


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


def test_sign_in_codes_have_80_bits_and_forgive_typing() -> None:
    generated = {codes.new_sign_in_code() for _ in range(200)}
    assert len(generated) == 200
    for code in generated:
        groups = code.split("-")
        assert [len(group) for group in groups] == [4, 4, 4, 4]
        assert set(code.replace("-", "")) <= set(codes.SIGN_IN_ALPHABET)
    assert len(codes.SIGN_IN_ALPHABET) ** codes.SIGN_IN_LENGTH == 2**80
    code = codes.new_sign_in_code()
    for typed in (code, code.lower(), code.replace("-", ""), " ".join(code.split("-"))):
        assert codes.normalise_sign_in_code(typed) == code
    for wrong in ("ABCD-EFGH-JKMN-PQR", "ABCD-EFGH-JKMN-PQR0", "ABCD-EFGH-JKMN-PQRS-T", "123456"):
        assert codes.normalise_sign_in_code(wrong) is None


def test_email_keys_make_look_alikes_one_address() -> None:
    assert email_key("uni@example.com") == email_key("ｕni@example.com")  # full-width
    assert email_key("UNI@Example.com ") == email_key("uni@example.com")
    assert email_key("straße@example.de") == email_key("STRASSE@example.de")  # case folding
    assert email_key("ﬁle@example.com") == email_key("file@example.com")  # ligature
    assert email_key("uni@example.com") != email_key("uni2@example.com")


def test_display_names_without_controls_or_invisible_formatting() -> None:
    for bad in ("Bob\u202egnp.exe", "\u2066Eve\u2069", "a\u200bb", "tab\there", "soft\u00adhy"):
        assert display_name_problem(bad) is not None, repr(bad)
    for good in ("Dana Example", "👩\u200d💻 Dana", "Mehr\u200cdad", "José Ñúñez", "李小龍"):
        assert display_name_problem(good) is None, repr(good)


def test_the_strength_check_judges_a_capped_prefix() -> None:
    """Only the first STRENGTH_INPUT_LIMIT characters are judged: a weak start is refused
    whatever follows (the cap can refuse, never weaken)."""
    weak_start = "password" * 4
    assert len(weak_start) == STRENGTH_INPUT_LIMIT
    assert strength_problem(weak_start + "x7#Lp2@vQ9!m", (), 3) is not None
    assert strength_problem("x7#Lp2@vQ9!m-violet-harbour" + "a" * 90, (), 3) is None
