import subprocess
import sys

import pytest
from pydantic import SecretStr, ValidationError

from switchyard.settings import ServiceSettings, credential


class WithSecret(ServiceSettings):
    signing_secret: SecretStr = SecretStr("dev")
    smtp_password: SecretStr | None = credential("SMTP_PASSWORD")


def test_defaults_follow_the_design():
    settings = ServiceSettings()
    assert settings.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.bus_exchange == "switchyard.events"
    assert settings.bus_retry_delays == [1.0, 10.0, 60.0, 300.0]


def test_retry_delays_parse_from_the_environment(monkeypatch):
    monkeypatch.setenv("BUS_RETRY_DELAYS", "0.5, 2,30")
    assert ServiceSettings().bus_retry_delays == [0.5, 2.0, 30.0]


def test_placeholder_secrets_are_refused_outside_development():
    assert WithSecret(environment="development").signing_secret.get_secret_value() == "dev"
    with pytest.raises(ValidationError, match="real secret"):
        WithSecret(environment="production")
    assert WithSecret(environment="production", signing_secret=SecretStr("x" * 40))


def test_invalid_settings_stop_the_process_with_a_readable_message():
    code = (
        "from switchyard.settings import ServiceSettings, load_settings; "
        "load_settings(ServiceSettings)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"LOG_LEVEL": "LOUD", "BUS_PREFETCH": "-3", "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Invalid settings (2 problem(s))" in result.stderr
    assert "LOG_LEVEL" in result.stderr and "BUS_PREFETCH" in result.stderr
    assert "Traceback" not in result.stderr


def test_credentials_issued_elsewhere_need_no_length_but_no_placeholder():
    strong = SecretStr("x" * 40)
    assert WithSecret(
        environment="production",
        signing_secret=strong,
        smtp_password=SecretStr("abcd efgh ijkl mnop"),
    )
    with pytest.raises(ValidationError, match="smtp_password must be set to a real secret"):
        WithSecret(
            environment="production", signing_secret=strong, smtp_password=SecretStr("changeme")
        )
