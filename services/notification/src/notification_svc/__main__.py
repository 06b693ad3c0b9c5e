"""``python -m notification_svc``: run the service until SIGTERM."""

from __future__ import annotations

from notification_svc.app import create_app
from notification_svc.settings import NotificationSettings
from switchyard.web import serve


def main() -> None:
    serve(NotificationSettings, create_app)


if __name__ == "__main__":
    main()
