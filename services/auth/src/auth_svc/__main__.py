"""``python -m auth_svc``: run the auth service until SIGTERM/SIGINT."""

from __future__ import annotations

from auth_svc.app import create_app
from auth_svc.settings import AuthSettings
from switchyard.web import serve


def main() -> None:
    serve(AuthSettings, create_app)


if __name__ == "__main__":
    main()
