"""Test support: fixtures for the real broker, the embedded store and an SMTP sink,
plus an in-memory bus for unit tests.

Enable with ``pytest_plugins = ["switchyard.testing.plugin"]``.
"""

from switchyard.testing.memory import InMemoryBus
from switchyard.testing.servers import AppServer, TcpProxy, delete_exchange, docker_available
from switchyard.testing.smtp import SmtpSink

__all__ = [
    "AppServer",
    "InMemoryBus",
    "SmtpSink",
    "TcpProxy",
    "delete_exchange",
    "docker_available",
]
