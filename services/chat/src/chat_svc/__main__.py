"""``python -m chat_svc``: run the service until SIGTERM."""

from __future__ import annotations

from chat_svc.app import create_app
from chat_svc.settings import ChatSettings
from switchyard.web import serve


def main() -> None:
    serve(ChatSettings, create_app)


if __name__ == "__main__":
    main()
