"""Typed settings of the auth service (DESIGN §6), validated at start."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import EmailStr, Field, SecretStr, model_validator

from auth_svc.domain.passwords import OWASP_MINIMUM, Argon2Parameters
from auth_svc.domain.users import display_name_problem
from switchyard.settings import ServiceSettings, port_setting


class AuthSettings(ServiceSettings):
    service_name: str = "auth"
    accepts_idempotency_keys: ClassVar[bool] = True  # registration: IDEMPOTENCY_SECRET needed
    port: int = port_setting("auth")

    # Access tokens. The issuer is the public base URL clients reach auth under;
    # every service is configured with the same AUTH_ISSUER and JWT_AUDIENCE.
    # auth_issuer (AUTH_ISSUER) and jwt_audience (JWT_AUDIENCE) come from ServiceSettings.
    access_token_ttl: int = Field(900, ge=60, le=3600, validation_alias="ACCESS_TOKEN_TTL")
    refresh_token_ttl: int = Field(
        30 * 86400, ge=3600, le=365 * 86400, validation_alias="REFRESH_TOKEN_TTL"
    )

    # Signing keys live in a directory outside the repository (mode 0700, one
    # file per key, 0600), optionally encrypted with AUTH_KEY_ENCRYPTION_KEY.
    keys_dir: Path = Field(validation_alias="AUTH_KEYS_DIR")
    key_encryption_key: SecretStr | None = Field(None, validation_alias="AUTH_KEY_ENCRYPTION_KEY")
    # Create a first key when the directory has none (default: everywhere but production).
    generate_key: bool | None = Field(None, validation_alias="AUTH_GENERATE_KEY")
    key_reload_interval: float = Field(5.0, gt=0, validation_alias="AUTH_KEY_RELOAD_INTERVAL")

    # One-time codes.
    otp_ttl: int = Field(600, ge=60, le=3600, validation_alias="OTP_TTL")
    otp_max_attempts: int = Field(5, ge=1, le=20, validation_alias="OTP_MAX_ATTEMPTS")
    otp_resend_cooldown: int = Field(60, ge=0, le=3600, validation_alias="OTP_RESEND_COOLDOWN")
    # Codes mailed per account and purpose in an hour (the resend cooldown spaces them).
    otp_codes_per_hour: int = Field(5, ge=1, le=60, validation_alias="OTP_CODES_PER_HOUR")
    # Wrong guesses per account and purpose, across all its codes, in a window; then no code
    # of that purpose is accepted until the window ends and the owner is told.
    otp_guess_budget: int = Field(10, ge=1, le=100, validation_alias="OTP_GUESS_BUDGET")
    otp_guess_window: int = Field(3600, ge=60, validation_alias="OTP_GUESS_WINDOW")

    # Brute-force protection per account (also applied to unknown emails).
    lockout_threshold: int = Field(5, ge=1, le=100, validation_alias="LOCKOUT_THRESHOLD")
    lockout_window: int = Field(900, ge=1, validation_alias="LOCKOUT_WINDOW")
    lockout_duration: int = Field(900, ge=1, validation_alias="LOCKOUT_DURATION")

    # Password changes per account and hour (each ends every session and mails the owner).
    password_changes_per_hour: int = Field(
        10, ge=1, le=100, validation_alias="PASSWORD_CHANGES_PER_HOUR"
    )

    # argon2id cost; the defaults are OWASP's minimum and production refuses less.
    argon2_time_cost: int = Field(
        OWASP_MINIMUM.time_cost, ge=1, validation_alias="ARGON2_TIME_COST"
    )
    argon2_memory_kib: int = Field(
        OWASP_MINIMUM.memory_kib, ge=8, validation_alias="ARGON2_MEMORY_KIB"
    )
    argon2_parallelism: int = Field(
        OWASP_MINIMUM.parallelism, ge=1, le=16, validation_alias="ARGON2_PARALLELISM"
    )
    password_min_score: int = Field(3, ge=0, le=4, validation_alias="PASSWORD_MIN_SCORE")
    # The strength check's worker processes, and how many checks may wait for them.
    password_check_workers: int = Field(1, ge=1, le=16, validation_alias="PASSWORD_CHECK_WORKERS")
    password_check_queue: int = Field(16, ge=1, le=1024, validation_alias="PASSWORD_CHECK_QUEUE")

    # Code requests (forgot, resend, sign-in code) are carried out after the 202: at most
    # this many may wait; past it they are dropped and counted.
    background_limit: int = Field(256, ge=1, validation_alias="AUTH_BACKGROUND_LIMIT")

    # The first admin, created at start-up when no admin exists.
    admin_email: EmailStr | None = Field(None, validation_alias="ADMIN_EMAIL")
    admin_password: SecretStr | None = Field(None, validation_alias="ADMIN_PASSWORD")
    admin_display_name: str = Field("Administrator", validation_alias="ADMIN_DISPLAY_NAME")

    idempotency_ttl_hours: int = Field(24, ge=24, validation_alias="IDEMPOTENCY_TTL_HOURS")

    @property
    def argon2(self) -> Argon2Parameters:
        return Argon2Parameters(
            self.argon2_time_cost, self.argon2_memory_kib, self.argon2_parallelism
        )

    @property
    def may_generate_key(self) -> bool:
        if self.generate_key is not None:
            return self.generate_key
        return self.environment != "production"

    @property
    def jwks_uri(self) -> str:
        return self.auth_issuer.rstrip("/") + "/.well-known/jwks.json"

    @model_validator(mode="after")
    def _coherent(self) -> AuthSettings:
        if (self.admin_email is None) != (self.admin_password is None):
            raise ValueError("ADMIN_EMAIL and ADMIN_PASSWORD are set together or not at all")
        name_problem = display_name_problem(self.admin_display_name)
        if name_problem is not None:
            raise ValueError(f"ADMIN_DISPLAY_NAME {name_problem}")
        if self.environment == "production":
            weaker = (
                self.argon2_time_cost < OWASP_MINIMUM.time_cost
                or self.argon2_memory_kib < OWASP_MINIMUM.memory_kib
            )
            if weaker:
                raise ValueError("argon2 cost below OWASP's minimum (m=19 MiB, t=2) in production")
            if self.password_min_score < 3:
                raise ValueError("PASSWORD_MIN_SCORE below 3 is not allowed in production")
        if self.environment not in ("development", "test") and self.internal_api_token is None:
            # Other services read the revoked sessions with it (switchyard.revocation).
            raise ValueError("INTERNAL_API_TOKEN must be set outside development")
        return self
