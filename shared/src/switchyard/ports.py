"""Every service's port (DESIGN §1), defined once. Settings defaults (``port_setting``),
`make run`, the Kubernetes manifests and the container health check read it from here;
docker-compose.yml, Prometheus and the gateway's route file are checked against it
(``shared/tests/unit/test_deploy.py``). Imports nothing heavy: the health check runs it
every few seconds."""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType

SERVICE_PORTS: Mapping[str, int] = MappingProxyType(
    {
        "gateway": 8080,
        "auth": 8081,
        "chat": 8082,
        "payments": 8083,
        "notification": 8084,
        "file": 8085,
    }
)


def port_variable(service: str) -> str:
    """The environment variable that overrides ``service``'s port: ``AUTH_PORT``."""
    return f"{service.upper()}_PORT"


def service_port(service: str, environ: Mapping[str, str] = os.environ) -> int:
    """The port ``service`` listens on: ``<SERVICE>_PORT`` when set, else its default."""
    return int(environ.get(port_variable(service)) or SERVICE_PORTS[service])
