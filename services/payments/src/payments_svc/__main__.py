"""``python -m payments_svc``: run the service until SIGTERM."""

from __future__ import annotations

from payments_svc.app import create_app
from payments_svc.settings import PaymentsSettings
from switchyard.web import serve


def main() -> None:
    serve(PaymentsSettings, create_app)


if __name__ == "__main__":
    main()
