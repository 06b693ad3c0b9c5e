"""Settings come from the documented environment variables and fail fast on nonsense."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from notification_svc.settings import NotificationSettings


def test_environment_variables_of_design_section_6(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    for name, value in {
        "NOTIFICATION_PORT": "9084",
        "SMTP_HOST": "mail.example.com",
        "SMTP_PORT": "587",
        "SMTP_USERNAME": "mailer",
        "SMTP_PASSWORD": "s3cret-s3cret-s3cret",
        "SMTP_SECURITY": "starttls",
        "SMTP_CA_FILE": str(ca),
        "MAIL_FROM": "Acme <hello@acme.example>",
    }.items():
        monkeypatch.setenv(name, value)
    settings = NotificationSettings()
    assert settings.port == 9084 and settings.service_name == "notification"
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_security) == (
        "mail.example.com",
        587,
        "starttls",
    )
    assert settings.smtp_username == "mailer"
    assert (
        settings.smtp_password is not None
        and settings.smtp_password.get_secret_value() == "s3cret-s3cret-s3cret"
    )
    assert "s3cret" not in repr(settings)
    assert settings.smtp_ca_path == ca
    assert settings.mail_from == "Acme <hello@acme.example>"


def test_defaults_point_at_the_local_mail_sink() -> None:
    settings = NotificationSettings()
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_security) == (
        "127.0.0.1",
        1025,
        "none",
    )
    assert settings.port == 8084


@pytest.mark.parametrize(
    "overrides",
    [
        {"smtp_security": "ssl"},
        {"mail_from": "not an address"},
        {"smtp_username": "only-a-user"},
        {"smtp_ca_file": "/nonexistent/ca.pem"},
        {"smtp_port": 0},
    ],
)
def test_invalid_settings_are_refused(overrides: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValidationError):
        NotificationSettings(**overrides)
