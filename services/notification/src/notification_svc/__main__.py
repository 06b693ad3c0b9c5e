"""``python -m notification_svc``: run the service until SIGTERM."""

from __future__ import annotations

from notification_svc.app import create_app
from notification_svc.settings import NotificationSettings
from switchyard.logging import configure_logging
from switchyard.settings import load_settings
from switchyard.web import run


def main() -> None:
    settings = load_settings(NotificationSettings)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    run(lambda: create_app(settings), settings)


if __name__ == "__main__":
    main()
