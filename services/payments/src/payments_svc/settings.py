"""Typed settings of the payments service (DESIGN §6)."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from switchyard.settings import ServiceSettings, credential, port_setting

_CURRENCY = re.compile(r"^[A-Z]{3}$")


class PaymentsSettings(ServiceSettings):
    service_name: str = "payments"
    port: int = port_setting("payments")
    # Every money-moving POST takes an Idempotency-Key. Without IDEMPOTENCY_SECRET each
    # process keys its fingerprints with a secret of its own, so a retry that reaches
    # another replica, or this one restarted, is refused as "a different request" (422).
    accepts_idempotency_keys: ClassVar[bool] = True

    payments_provider: Literal["test", "stripe"] = Field(
        "test", validation_alias="PAYMENTS_PROVIDER"
    )
    stripe_secret_key: SecretStr | None = credential("STRIPE_SECRET_KEY")
    stripe_webhook_secret: SecretStr | None = credential("STRIPE_WEBHOOK_SECRET")
    stripe_api_base: str = Field("https://api.stripe.com", validation_alias="STRIPE_API_BASE")
    # Seconds a signed webhook stays acceptable (Stripe's own default: 5 minutes).
    stripe_webhook_tolerance: int = Field(
        300, ge=1, le=3600, validation_alias="STRIPE_WEBHOOK_TOLERANCE"
    )
    payments_currencies: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["USD"], validation_alias="PAYMENTS_CURRENCIES"
    )
    platform_fee_bps: int = Field(500, ge=0, le=10_000, validation_alias="PLATFORM_FEE_BPS")
    service_fee_bps: int = Field(2000, ge=0, le=10_000, validation_alias="SERVICE_FEE_BPS")

    # The sweeper: how often it runs, and how long a transfer, a record's transition or a
    # stored webhook may wait before it takes over from the request that started it.
    ledger_sweep_interval: float = Field(1.0, gt=0, validation_alias="LEDGER_SWEEP_INTERVAL")
    ledger_stale_after: float = Field(10.0, gt=0, validation_alias="LEDGER_STALE_AFTER")
    # How often the sweeper runs the full ledger check that feeds the imbalance gauge.
    ledger_check_interval: float = Field(30.0, gt=0, validation_alias="LEDGER_CHECK_INTERVAL")

    @field_validator("payments_currencies", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().upper() for part in value.split(",") if part.strip()]
        return value

    @field_validator("payments_currencies")
    @classmethod
    def _iso(cls, value: list[str]) -> list[str]:
        if not value or any(not _CURRENCY.match(code) for code in value):
            raise ValueError("PAYMENTS_CURRENCIES is a comma-separated list of ISO 4217 codes")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _provider_fits_the_environment(self) -> PaymentsSettings:
        if self.payments_provider == "test" and self.environment == "production":
            raise ValueError(
                "PAYMENTS_PROVIDER=test credits deposits without real money; "
                "it is refused when SWITCHYARD_ENV=production"
            )
        if self.payments_provider == "stripe" and (
            self.stripe_secret_key is None or self.stripe_webhook_secret is None
        ):
            raise ValueError(
                "PAYMENTS_PROVIDER=stripe needs STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET"
            )
        return self
