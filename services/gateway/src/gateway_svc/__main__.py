"""``python -m gateway_svc``: the API gateway on GATEWAY_PORT (default 8080)."""

from __future__ import annotations

from gateway_svc.settings import GatewaySettings
from gateway_svc.workers import serve
from switchyard.logging import configure_logging
from switchyard.settings import load_settings


def main() -> None:
    settings = load_settings(GatewaySettings)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    serve(settings)


if __name__ == "__main__":
    main()
