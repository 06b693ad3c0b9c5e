"""``python -m auth_svc``: run the auth service until SIGTERM/SIGINT."""

from __future__ import annotations

from auth_svc.app import create_app
from auth_svc.settings import AuthSettings
from switchyard.logging import configure_logging
from switchyard.settings import load_settings
from switchyard.web import run


def main() -> None:
    settings = load_settings(AuthSettings)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    run(lambda: create_app(settings), settings)


if __name__ == "__main__":
    main()
