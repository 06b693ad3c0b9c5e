"""The benchmarks' service processes: ``switchyard.testing.processes`` (shared with the
chaos tests), and the one way the chat and payments benchmarks start a service and the
gateway in front of it."""

from __future__ import annotations

from pathlib import Path

from switchyard.testing.gateway import raised_limits_routes
from switchyard.testing.jwks import TEST_INTERNAL_TOKEN
from switchyard.testing.processes import ServiceProcess

__all__ = ["ServiceProcess", "gateway_process", "run_namespace", "service_process"]


def run_namespace(amqp_url: str, mongo_url: str, name: str, exchange: str) -> dict[str, str]:
    """The settings that keep one benchmark run's processes to themselves: the broker and
    store, the run's database, exchange and queue prefix, queues that expire after it."""
    return {
        "AMQP_URL": amqp_url,
        "MONGO_URL": mongo_url,
        "MONGO_DATABASE": name,
        "BUS_EXCHANGE": exchange,
        "BUS_QUEUE_PREFIX": f"{name}.",
        "BUS_QUEUE_EXPIRES_MS": "60000",
    }


def service_process(
    service: str,
    port: int,
    common: dict[str, str],
    namespace: dict[str, str],
    scratch: Path,
    **extra: str,
) -> ServiceProcess:
    """``python -m <service>_svc`` on ``port``, in the run's ``namespace`` (broker, store,
    exchange, queue prefix), with ``extra`` settings; its log in ``scratch``."""
    return ServiceProcess(
        ["-m", f"{service}_svc"],
        {
            **common,
            **namespace,
            # reads the revoked sessions from the JwksServer standing in for auth
            "INTERNAL_API_TOKEN": TEST_INTERNAL_TOKEN,
            f"{service.upper()}_PORT": str(port),
            **extra,
        },
        scratch / f"{service}.log",
    )


def gateway_process(
    upstream: str,
    upstream_port: int,
    port: int,
    common: dict[str, str],
    namespace: dict[str, str],
    scratch: Path,
) -> ServiceProcess:
    """The gateway on ``port`` in front of ``upstream``: the shipped route table with quotas
    no benchmark reaches (every request still checked), access log off, admin listener on
    any free port, following revocations on the run's exchange. Wait for its ``/readyz``:
    a worker takes tokens once it has read the revoked-session list."""
    return ServiceProcess(
        ["-m", "gateway_svc"],
        {
            **common,
            "AMQP_URL": namespace["AMQP_URL"],
            "BUS_EXCHANGE": namespace["BUS_EXCHANGE"],
            "BUS_QUEUE_PREFIX": namespace["BUS_QUEUE_PREFIX"],
            "BUS_QUEUE_EXPIRES_MS": namespace["BUS_QUEUE_EXPIRES_MS"],
            "INTERNAL_API_TOKEN": TEST_INTERNAL_TOKEN,
            "GATEWAY_PORT": str(port),
            "GATEWAY_ADMIN_PORT": "0",
            "GATEWAY_ROUTES_FILE": str(raised_limits_routes(scratch, 10**7)),
            f"GATEWAY_{upstream.upper()}_UPSTREAMS": f"http://127.0.0.1:{upstream_port}",
            "GATEWAY_ACCESS_LOG": "off",
        },
        scratch / "gateway.log",
    )
