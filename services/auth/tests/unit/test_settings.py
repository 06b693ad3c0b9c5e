"""Settings fail fast, and the production defaults are OWASP's argon2id parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
from argon2 import extract_parameters
from pydantic import ValidationError

from auth_svc.adapters.passwords import Passwords
from auth_svc.settings import AuthSettings

PRODUCTION = {
    "environment": "production",
    "idempotency_secret": "k" * 12 + "-idempotency-hmac-key",
    "internal_api_token": "i" * 12 + "-internal-api-token-xyz",
}


def test_defaults_are_the_production_parameters(tmp_path: Path) -> None:
    settings = AuthSettings(keys_dir=tmp_path, **PRODUCTION)
    assert (settings.argon2_memory_kib, settings.argon2_time_cost, settings.argon2_parallelism) == (
        19 * 1024,
        2,
        1,
    )
    assert settings.port == 8081
    assert settings.access_token_ttl == 900
    assert settings.refresh_token_ttl == 30 * 86400
    assert (settings.otp_ttl, settings.otp_max_attempts, settings.otp_resend_cooldown) == (
        600,
        5,
        60,
    )
    assert (settings.lockout_threshold, settings.lockout_window, settings.lockout_duration) == (
        5,
        900,
        900,
    )
    assert settings.password_min_score == 3
    assert settings.password_changes_per_hour == 10
    assert not settings.may_generate_key  # production never invents a signing key
    hasher = Passwords(settings.argon2, workers=1)
    try:
        parameters = extract_parameters(hasher.hash_sync("any password at all"))
    finally:
        hasher.close()
    assert parameters.type.name == "ID"
    assert (parameters.memory_cost, parameters.time_cost, parameters.parallelism) == (19456, 2, 1)


def test_production_refuses_cheaper_hashing(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="OWASP"):
        AuthSettings(keys_dir=tmp_path, **PRODUCTION, argon2_memory_kib=1024)
    with pytest.raises(ValidationError, match="OWASP"):
        AuthSettings(keys_dir=tmp_path, **PRODUCTION, argon2_time_cost=1)
    # Tests may lower the cost.
    assert (
        AuthSettings(keys_dir=tmp_path, environment="test", argon2_time_cost=1).argon2.time_cost
        == 1
    )


def test_production_needs_the_internal_api_token(tmp_path: Path) -> None:
    """Other services read the revoked sessions with it; a short one is a placeholder."""
    without = {k: v for k, v in PRODUCTION.items() if k != "internal_api_token"}
    with pytest.raises(ValidationError, match="INTERNAL_API_TOKEN"):
        AuthSettings(keys_dir=tmp_path, **without)
    with pytest.raises(ValidationError, match="internal_api_token"):
        AuthSettings(keys_dir=tmp_path, **without, internal_api_token="short")


def test_production_needs_the_idempotency_secret(tmp_path: Path) -> None:
    """Registration accepts Idempotency-Key; its stored fingerprints are keyed with it."""
    with pytest.raises(ValidationError, match="IDEMPOTENCY_SECRET"):
        AuthSettings(keys_dir=tmp_path, environment="production")
    with pytest.raises(ValidationError, match="real secret"):
        AuthSettings(keys_dir=tmp_path, environment="production", idempotency_secret="short")
    assert AuthSettings(keys_dir=tmp_path, environment="development").idempotency_secret is None


def test_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUTH_KEYS_DIR", str(tmp_path))
    monkeypatch.setenv("AUTH_PORT", "9001")
    monkeypatch.setenv("AUTH_ISSUER", "https://api.example.com")
    monkeypatch.setenv("JWT_AUDIENCE", "example")
    monkeypatch.setenv("ACCESS_TOKEN_TTL", "600")
    settings = AuthSettings()
    assert settings.keys_dir == tmp_path and settings.port == 9001
    assert settings.jwks_uri == "https://api.example.com/.well-known/jwks.json"
    assert settings.jwt_audience == "example" and settings.access_token_ttl == 600


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # no key directory
        {"keys_dir": "k", "admin_email": "a@example.com"},  # admin password missing
        {"keys_dir": "k", "access_token_ttl": 10},
        {"keys_dir": "k", "port": 0},
        {"keys_dir": "k", "otp_max_attempts": 0},
        {"keys_dir": "k", "admin_display_name": "Admin\u202e"},  # a bidi override
    ],
)
def test_invalid_settings_fail_fast(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AuthSettings(**overrides)


def test_short_admin_password_is_a_placeholder_in_production(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        AuthSettings(
            keys_dir=tmp_path,
            environment="production",
            admin_email="root@example.com",
            admin_password="short-password",
        )


def test_password_changes_per_hour_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PASSWORD_CHANGES_PER_HOUR", "3")
    assert AuthSettings(keys_dir=tmp_path).password_changes_per_hour == 3
    monkeypatch.setenv("PASSWORD_CHANGES_PER_HOUR", "0")
    with pytest.raises(ValidationError):
        AuthSettings(keys_dir=tmp_path)
