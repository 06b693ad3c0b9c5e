"""``python -m file_svc``: run the service until SIGTERM."""

from __future__ import annotations

from file_svc.app import create_app
from file_svc.settings import FileSettings
from switchyard.web import serve


def main() -> None:
    serve(FileSettings, create_app)


if __name__ == "__main__":
    main()
